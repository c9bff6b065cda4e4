"""Multi-view training data from SfM reconstructions: index, covisibility, samples, mixing, held-out sets.

Fast tests use a synthetic scene written in the cache layout of ``training.data.reconstruct``
(exact projections of known 3D points); the slow test reconstructs four real photographs with
pycolmap and checks the training items against the reconstruction.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from train_helpers import DATA, TINY, read_log

import training.stage1 as stage1
from models.errors import BadInputError
from training.data.homography import HomographyViews
from training.data.mix import MixedViews, step_source
from training.data.sfm import SfMConfig, SfMViews
from training.data.sfm_depth import DepthConfig, interpolate_depth
from training.data.sfm_heldout import refuse_evaluation_paths
from training.data.sfm_index import covisibility, load_index, save_index, select_pairs, select_sequences
from training.losses import grid_correspondences
from training.warping import in_bounds, warp_item

HW0 = (240, 320)  # (H, W) of the synthetic photographs
K0 = np.array([[260.0, 0, 160.0], [0, 260.0, 120.0], [0, 0, 1]])  # COLMAP convention


def rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def write_synth_scene(
    root: Path, name: str = "synth", n_images: int = 6, source: str = "/data/multiview/synth"
) -> Path:
    """A scene of ``n_images`` cameras around a smooth wall of 4000 points, exact observations."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(-3, 3, 4000), rng.uniform(-2, 2, 4000)
    xyz = np.stack([x, y, 5 + 0.3 * np.sin(x)], 1)
    Ts, obs = [], []
    for k in range(n_images):
        T = np.eye(4)
        T[:3, :3] = rot_y(-6 + 2.5 * k)
        T[:3, 3] = [0.6 - 0.25 * k, 0.05 * k, 0.1 * k]
        Xc = xyz @ T[:3, :3].T + T[:3, 3]
        p = Xc @ K0.T
        p = p[:, :2] / p[:, 2:]
        seen = (Xc[:, 2] > 0) & (p[:, 0] > 0) & (p[:, 0] < HW0[1]) & (p[:, 1] > 0) & (p[:, 1] < HW0[0])
        seen &= rng.random(len(xyz)) < 0.7  # each camera detects a random 70 %
        ids = np.nonzero(seen)[0]
        obs.append((np.full(len(ids), k), ids, p[ids]))
        Ts.append(T)
    scene = root / name
    (scene / "undistorted" / "images").mkdir(parents=True)
    names = [f"{k:02d}.png" for k in range(n_images)]
    for n in names:
        cv2.imwrite(str(scene / "undistorted" / "images" / n), rng.integers(0, 255, HW0, dtype=np.uint8))
    obs_image, obs_point, obs_xy = (np.concatenate(c) for c in zip(*obs))
    shared, _ = covisibility(obs_image, obs_point, n_images, len(xyz))
    save_index(
        scene / "scene.npz",
        {
            "scene": np.array(name),
            "source": np.array(source),
            "names": np.array(names),
            "hw": np.tile(HW0, (n_images, 1)).astype(np.int32),
            "K": np.tile(K0, (n_images, 1, 1)),
            "T_cam_world": np.stack(Ts),
            "xyz": xyz,
            "error": np.zeros(len(xyz), np.float32),
            "obs_image": obs_image.astype(np.int32),
            "obs_point": obs_point.astype(np.int32),
            "obs_xy": obs_xy.astype(np.float32),
            "shared": shared.astype(np.int32),
        },
    )
    return scene


@pytest.fixture(scope="module")
def synth_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sfm_cache")
    write_synth_scene(root)
    return root


def reprojection_errors(item: dict, xyz: np.ndarray) -> np.ndarray:
    """Distance (px) of every valid track to the projection of its 3D point with the item's K, T."""
    errs = []
    for v in range(item["tracks"].shape[0]):
        ok = (item["track_valid"][v] & (item["track_point"] >= 0)).numpy()
        X = xyz[item["track_point"].numpy()[ok]]
        T, K = item["T_cam_world"][v].double().numpy(), item["K"][v].double().numpy()
        p = (X @ T[:3, :3].T + T[:3, 3]) @ K.T
        errs.append(np.linalg.norm(p[:, :2] / p[:, 2:] - item["tracks"][v].numpy()[ok], axis=1))
    return np.concatenate(errs)


def test_covisibility_counts_shared_points():
    # image 0 sees points 0-3, image 1 sees 2-4, image 2 sees 5
    img = np.array([0, 0, 0, 0, 1, 1, 1, 2])
    pts = np.array([0, 1, 2, 3, 2, 3, 4, 5])
    shared, covis = covisibility(img, pts, 3, 6)
    assert shared.tolist() == [[4, 2, 0], [2, 3, 0], [0, 0, 1]]
    assert covis[0, 1] == covis[1, 0] == pytest.approx(0.5)  # 2 shared / max(4, 3)
    assert covis[0, 2] == 0 and np.all(np.diag(covis) == 1)
    assert select_pairs(covis, shared, (0.1, 0.7), 1).tolist() == [[0, 1]]
    assert len(select_pairs(covis, shared, (0.6, 0.99), 1)) == 0
    assert len(select_pairs(covis, shared, (0.1, 0.7), 3)) == 0  # too few shared points


def test_sequences_keep_every_view_in_the_covisibility_range():
    rng = np.random.default_rng(3)
    covis = rng.uniform(0, 1, (12, 12))
    covis = (covis + covis.T) / 2
    shared = np.full((12, 12), 100)
    seqs = select_sequences(covis, shared, 5, (0.2, 0.8), 10, 3, np.random.default_rng(0))
    assert len(seqs) > 0 and seqs.shape[1] == 5
    for s in seqs:
        assert len(set(s.tolist())) == 5
        assert np.all((covis[s[0], s[1:]] >= 0.2) & (covis[s[0], s[1:]] <= 0.8))
    again = select_sequences(covis, shared, 5, (0.2, 0.8), 10, 3, np.random.default_rng(0))
    assert np.array_equal(seqs, again)


def test_depth_interpolation_exact_on_a_plane_and_not_across_a_step():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, [64, 48], (400, 2))
    inv = 0.2 + 0.001 * xy[:, 0] + 0.002 * xy[:, 1]  # a plane: inverse depth affine in pixels
    depth = interpolate_depth(xy, 1 / inv, (48, 64), DepthConfig(max_edge=1e9, max_ratio=1e9))
    ys, xs = np.mgrid[0:48, 0:64]
    truth = 1 / (0.2 + 0.001 * xs + 0.002 * ys)
    known = depth > 0
    assert known.mean() > 0.85
    assert np.abs(depth[known] - truth[known]).max() < 1e-4 * truth.max()
    step = np.where(xy[:, 0] < 32, 2.0, 6.0)  # a depth step at x = 32
    depth = interpolate_depth(xy, step, (48, 64), DepthConfig(max_edge=1e9, max_ratio=1.1))
    vals = depth[depth > 0]
    assert np.all(np.isclose(vals, 2.0) | np.isclose(vals, 6.0))  # nothing invented between the planes
    assert (depth[:, 31:33] == 0).mean() > 0.5


def test_pair_tracks_and_depth_agree_with_the_geometry(synth_cache):
    ds = SfMViews(synth_cache, 2, (96, 128), 8, seed=0)
    xyz = load_index(synth_cache / "synth" / "scene.npz")["xyz"]
    for i in range(4):
        item = ds[i]
        assert item["images"].shape == (2, 1, 96, 128) and item["depth"].shape == (2, 96, 128)
        both = item["track_valid"][0] & item["track_valid"][1]
        assert int(both.sum()) >= ds.cfg.min_tracks
        assert reprojection_errors(item, xyz).max() < 1e-3  # exact synthetic observations
        cells = torch.floor((item["tracks"][0][item["track_valid"][0]] + 0.5) / ds.cfg.cell)
        assert len(torch.unique(cells, dim=0)) == int(item["track_valid"][0].sum())  # one per cell
        pts_1, ok = warp_item(item, 0, 1, item["tracks"][0][both])  # depth interpolated from the points
        assert ok.float().mean() > 0.8
        assert (pts_1[ok] - item["tracks"][1][both][ok]).norm(dim=1).max() < 0.5
        a, b = grid_correspondences(item, (96, 128), 8, 1000)  # the stage-1 sparse path (2 px margin)
        inner = both & in_bounds(item["tracks"][0], (96, 128), 2.0) & in_bounds(item["tracks"][1], (96, 128), 2.0)
        assert len(a) == int(inner.sum()) > 0.8 * int(both.sum())
        assert torch.equal(a, item["tracks"][0][inner]) and torch.equal(b, item["tracks"][1][inner])
    again = SfMViews(synth_cache, 2, (96, 128), 8, seed=0)[3]
    assert all(torch.equal(again[k], item[k]) for k in item)  # item i is a function of (seed, i)


def test_five_view_sequences(synth_cache):
    cfg = SfMConfig(overlap=(0.1, 0.95))
    ds = SfMViews(synth_cache, 5, (96, 128), 4, seed=0, cfg=cfg)
    index = load_index(synth_cache / "synth" / "scene.npz")
    seqs = ds.scenes[0].samples
    assert seqs.shape[1] == 5 and np.all(index["covisibility"][seqs[:, :1], seqs[:, 1:]] >= 0.1)
    item = ds[0]
    assert item["tracks"].shape[:1] == (5,) and item["K"].shape == (5, 3, 3)
    assert item["track_valid"][1:].any(0).sum() >= cfg.min_tracks
    assert reprojection_errors(item, index["xyz"]).max() < 1e-3


def test_mixed_source_takes_each_step_from_one_source(synth_cache, photo_dir):
    from training.data.images import load_pool

    assert sum(step_source(t, 0.6) == 0 for t in range(100)) == 60
    assert [step_source(t, 0.5) for t in range(4)] == [1, 0, 1, 0]
    pool, _ = load_pool([photo_dir])
    args = type("A", (), {"batch_size": 2, "workers": 0})()
    for world in (1, 2):
        n = 8 * world  # 4 steps of 2 items per rank
        sfm = SfMViews(synth_cache, 2, (64, 96), n, seed=0)
        homography = HomographyViews(pool, 2, (64, 96), n, seed=0)
        mixed = MixedViews(sfm, homography, 0.5, group=2 * world)
        kinds = {}
        for rank in range(world):
            loader = stage1.make_loader(mixed, args, rank, world, start_step=1)  # a resumed run, too
            kinds[rank] = ["tracks" in b and "H" not in b for b in loader]
        assert kinds[0] == [True, False, True]  # steps 1, 2, 3 of ratio 0.5: sfm, homography, sfm
        assert all(k == kinds[0] for k in kinds.values())  # every rank takes one step from one source
    with pytest.raises(BadInputError, match="sfm_ratio"):
        MixedViews(sfm, homography, 1.5, 2)


def test_both_stages_train_on_the_sfm_recipes(synth_cache, photo_dir, tmp_path, capsys):
    import training.stage2 as stage2

    tiny = ["--max-steps", "2", "--log_every", "1", *TINY, "--training_res", "96", "128"]
    data = ["--sfm_cache", str(synth_cache), "--data", str(photo_dir)]
    rc = stage1.main(["--config", "stage1_sfm.yaml", *data, "--sfm_ratio", "0.5", "--out", str(tmp_path / "s1"), *tiny])
    assert rc == 0, capsys.readouterr().err
    weights = tmp_path / "s1" / "stage1.pt"
    argv = ["--config", "stage2_sfm.yaml", *data, "--sfm_ratio", "1.0", "--sfm_overlap", "0.1", "0.95"]
    rc = stage2.main([*argv, "--weights", str(weights), "--out", str(tmp_path / "s2"), *tiny])
    assert rc == 0, capsys.readouterr().err
    rows = read_log(tmp_path / "s2" / "log_stage2.csv")
    assert len(rows) == 2 and all(r["covisible"] > 0.3 for r in rows)  # sequences warped by the SfM depth
    rc = stage1.main(["--data_kind", "sfm", "--data", str(photo_dir), "--out", str(tmp_path / "s3"), *tiny])
    assert rc == 1 and "--sfm_cache is required" in capsys.readouterr().err


def test_evaluation_sets_are_refused(tmp_path, photo_dir, capsys):
    for path in (DATA / "strecha", DATA / "sfm" / "sacre_coeur" / "images", DATA / "homography" / "churchill"):
        with pytest.raises(BadInputError, match="evaluation set"):
            refuse_evaluation_paths([path])
    refuse_evaluation_paths([DATA / "sfm" / "lund" / "images", DATA / "multiview", DATA / "homography" / "graf"])
    parent = tmp_path / "photos"
    shutil.copytree(photo_dir, parent / "kitti_mini" / "seq")  # a folder that holds an evaluation set
    rc = stage1.main(["--data", str(parent), "--out", str(tmp_path / "run"), "--max-steps", "1", *TINY])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.count("\n") == 0 and "evaluation set 'kitti_mini'" in err
    cache = tmp_path / "cache"
    write_synth_scene(cache, source=str(DATA / "strecha" / "fountain-P11"))  # a reconstruction of an evaluation set
    with pytest.raises(BadInputError, match="evaluation set 'strecha'"):
        SfMViews(cache, 2, (64, 96), 4)


@pytest.mark.slow
def test_real_reconstruction_agrees_with_its_training_items(tmp_path, capsys):
    """pycolmap on four real photographs: cached by one command, tracks within 2 px of the reconstruction."""
    from training.data import reconstruct

    src = DATA / "multiview" / "cyprus" / "images"
    if not src.is_dir():
        pytest.skip(f"shared multi-view photographs not found: {src}")
    data = tmp_path / "data"
    images = data / "multiview" / "cyprus" / "images"
    images.mkdir(parents=True)
    for name in sorted(p.name for p in src.iterdir())[:4]:
        shutil.copy(src / name, images / name)
    argv = ["--out", str(tmp_path / "cache"), "--data", str(data), "--max_image_size", "640", "--max_features", "1500"]
    assert reconstruct.main(argv) == 0
    stats = json.loads((tmp_path / "cache" / "cyprus" / "stats.json").read_text())
    assert stats["registered"] >= 3 and stats["points3D"] > 100 and stats["reprojection_px"] < 1.5
    assert reconstruct.main(argv) == 0
    assert "cached" in capsys.readouterr().out  # the second run reuses the cache
    index = load_index(tmp_path / "cache" / "cyprus" / "scene.npz")
    T = index["T_cam_world"][index["obs_image"]]
    Xc = np.einsum("mij,mj->mi", T[:, :3, :3], index["xyz"][index["obs_point"]]) + T[:, :3, 3]
    p = np.einsum("mij,mj->mi", index["K"][index["obs_image"]], Xc)
    err = np.linalg.norm(p[:, :2] / p[:, 2:] - index["obs_xy"], axis=1)
    assert err.max() < 2.0  # observations of the undistorted model
    ds = SfMViews(tmp_path / "cache", 2, (240, 320), 4, cfg=SfMConfig(overlap=(0.05, 1.0), min_tracks=8))
    for i in range(2):
        item = ds[i]
        assert reprojection_errors(item, index["xyz"]).max() < 2.0
