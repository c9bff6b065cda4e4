"""Tests of the ALIKE re-implementation (models/alike_net.py, models/alike.py).

They need the released weights in ``../shared/weights/alike`` (from Shiaoming/ALIKE) and the KITTI
frames in ``../shared/data``; every test that needs them skips with the reason when they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models
from models.alike import ALIKE, build_alike, describe_normalised, pad_zeros, soft_refine
from models.alike_net import ALIKE_CONFIGS, ALNet
from models.errors import BadInputError, MissingFileError
from models.matchers import match_pair

SHARED = Path(os.environ.get("TRAQPOINT_SHARED", Path(__file__).resolve().parents[3] / "shared"))
WEIGHTS = SHARED / "weights" / "alike"
KITTI = SHARED / "data" / "kitti06_frames"


def weight_file(variant: str) -> Path:
    path = WEIGHTS / f"alike-{variant}.pth"
    if not path.is_file():
        pytest.skip(f"ALIKE weights not available: {path} (from Shiaoming/ALIKE; set TRAQPOINT_SHARED)")
    return path


def kitti_frame(index: int) -> np.ndarray:
    path = KITTI / f"kitti06-{index}.png"
    if not path.is_file():
        pytest.skip(f"shared test data not available: {path} (set TRAQPOINT_SHARED to the shared folder)")
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def alike_t() -> ALIKE:
    return build_alike("t", weight_file("t"), num_keypoints=512)


@pytest.mark.parametrize("variant", ["t", "s", "n", "l"])
def test_released_weights_load_strictly(variant):
    state = torch.load(weight_file(variant), map_location="cpu")
    net = ALNet(ALIKE_CONFIGS[variant])
    assert net.load_state_dict(state, strict=True).missing_keys == []
    assert net.descriptor_dim == ALIKE_CONFIGS[variant].dim


@pytest.mark.parametrize("name, dim", [("alike-t", 64), ("alike-n", 128)])
def test_factory_builds_alike(name, dim):
    weight_file(name[-1])
    ext = models.build(name, weights=WEIGHTS / f"{name}.pth", num_keypoints=100)
    assert ext.name == name and ext.descriptor_dim == dim and ext.default_matcher == "mnn"
    assert ext.num_keypoints == 100


def test_sparse_path_equals_dense_network(alike_t):
    """Scores and sub-pixel descriptors equal ALIKE's dense maps + normalise + grid_sample (align_corners)."""
    img = torch.from_numpy(kitti_frame(12)[100:180, 300:420]).float()[None, None] / 255  # 80 x 120
    net = alike_t.net
    with torch.inference_mode():
        padded = pad_zeros(img, 32)
        dense = net(padded.expand(-1, 3, -1, -1))  # the reference path, RGB input
        levels = net.encode(padded)  # grey input: first conv folded
        assert torch.allclose(net.score_map(levels), dense["scores"], atol=1e-5)
        xy = torch.tensor([[10.0, 7.0], [50.25, 30.5], [100.9, 60.1]])
        desc = describe_normalised(net, levels, torch.zeros(3, dtype=torch.long), xy)
        dmap = F.normalize(dense["descriptors"][..., :80, :120], dim=1)
        grid = xy / xy.new_tensor([119, 79]) * 2 - 1
        ref = F.normalize(F.grid_sample(dmap, grid[None, None], align_corners=True)[0, :, 0].T, dim=-1)
    assert torch.allclose(desc, ref, atol=1e-5)


def test_soft_refinement_follows_the_peak():
    scores = torch.zeros(1, 1, 20, 30)
    scores[0, 0, 7, 10] = 1.0  # isolated peak: stays at its pixel centre
    scores[0, 0, 12, 20] = scores[0, 0, 12, 21] = 0.9  # two equal neighbours: halfway between
    xy = soft_refine(scores, torch.zeros(2, dtype=torch.long), torch.tensor([[10.0, 7.0], [20.0, 12.0]]))
    assert torch.allclose(xy[0], torch.tensor([10.0, 7.0]), atol=1e-3)
    assert torch.allclose(xy[1], torch.tensor([20.5, 12.0]), atol=1e-3)


@pytest.mark.parametrize("batch", [1, 4])
def test_shapes_dtypes_and_batch_consistency(alike_t, batch):
    frame = kitti_frame(12)
    crops = [frame[40 * i : 40 * i + 96, 150 * i : 150 * i + 128] for i in range(batch)]
    feats = alike_t.extract_numpy(crops)
    assert len(feats) == batch
    for crop, f in zip(crops, feats):
        n = len(f["keypoints"])
        assert 0 < n <= 512
        assert f["keypoints"].shape == (n, 2) and f["keypoints"].dtype == torch.float32
        assert f["scores"].shape == (n,) and f["scores"].dtype == torch.float32
        assert f["descriptors"].shape == (n, 64) and f["descriptors"].dtype == torch.float32
        assert torch.allclose(f["descriptors"].norm(dim=1), torch.ones(n), atol=1e-4)
        assert (f["scores"][:-1] >= f["scores"][1:]).all()  # strongest first
        x, y = f["keypoints"].T
        assert (x >= 0).all() and (x <= 127).all() and (y >= 0).all() and (y <= 95).all()
        single = alike_t.extract_numpy(crop)[0]  # batching changes nothing
        assert torch.allclose(single["keypoints"], f["keypoints"], atol=1e-4)
        assert torch.allclose(single["descriptors"], f["descriptors"], atol=1e-4)


def test_rgb_and_grey_input_agree(alike_t):
    grey = torch.from_numpy(kitti_frame(12)[:96, :160]).float()[None, None] / 255
    a, b = alike_t.extract(grey)[0], alike_t.extract(grey.expand(-1, 3, -1, -1))[0]
    assert torch.allclose(a["keypoints"], b["keypoints"], atol=1e-4)


def test_black_image_and_zero_keypoints(alike_t):
    f = alike_t.extract_numpy(np.zeros((64, 80), np.uint8))[0]
    assert len(f["keypoints"]) <= 5 and f["descriptors"].shape == (len(f["keypoints"]), 64)
    f = alike_t.extract(torch.rand(2, 1, 40, 50), num_keypoints=0)
    assert [len(x["keypoints"]) for x in f] == [0, 0] and f[0]["descriptors"].shape == (0, 64)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["t", "n"])
def test_kitti_pair_fundamental_inliers(variant):
    ext = build_alike(variant, weight_file(variant), num_keypoints=2048)
    f0, f1 = (ext.extract_numpy(kitti_frame(i))[0] for i in (12, 13))
    assert len(f0["keypoints"]) == len(f1["keypoints"]) == 2048
    matches, _ = match_pair(f0["descriptors"], f1["descriptors"], "mnn")
    p0 = f0["keypoints"][matches[:, 0]].numpy()
    p1 = f1["keypoints"][matches[:, 1]].numpy()
    _, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, 1.0, 0.999)
    inliers = int(mask.sum()) if mask is not None else 0
    assert inliers >= 300, f"alike-{variant}: {inliers} inliers of {len(matches)} matches"


def test_missing_weights_name_the_file_and_source(tmp_path):
    missing = tmp_path / "alike-t.pth"
    with pytest.raises(MissingFileError, match="alike-t.pth") as err:
        build_alike("t", missing)
    assert "Shiaoming/ALIKE" in str(err.value) and "shared/weights/alike" in str(err.value)


def test_wrong_weights_are_bad_input(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError):
        build_alike("t", junk)
    with pytest.raises(BadInputError, match="does not fit"):
        build_alike("t", weight_file("n"))  # another variant's weights
    with pytest.raises(BadInputError, match="unknown ALIKE variant"):
        build_alike("x", weight_file("t"))
