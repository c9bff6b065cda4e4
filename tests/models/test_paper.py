"""Tests of the ``paper`` TraqPoint network (models/paper.py) and its checkpoint compatibility.

The key table in ``tests/fixtures/traqpoint_paper_keys.json`` is *not* generated from our model:
:func:`reference_key_table` spells it out from the authors' code, read with the search tool:

- xiaomi-research/traqpoint ``traqpoint/traqpoint.py``: the checkpoint is the flat ``state_dict``
  of ``TraqPoint`` (``detector``, ``descriptor``; ``interpolator``/``softdetect`` hold no tensors),
  saved by ``training/train_key.py`` with ``torch.save(model.state_dict())`` and loaded with
  ``strict=True`` by ``benchmarks/visual_odometry/demo_vo_evaluator.py``;
- ``traqpoint/models/detector.py``: ``build_detector`` (block dims 8/16/32/64, hidden 64, torchvision
  ``conv3x3``/``conv1x1`` without bias, BatchNorm2d with affine, 1x1 ``downsample`` with bias);
- ``traqpoint/models/descriptor.py`` + ``backbone_dinov3_conv.py``: ``Joiner`` = Sequential(backbone
  with ``.dino``, parameter-free sine position encoding) -> ``backbone.0.dino.*``; ``input_proj``
  (1x1 conv + GroupNorm(32, 256) per level); ``matchibility_head`` (two BasicLayers with
  BatchNorm2d(affine=False), 1x1 conv, sigmoid);
- ``configs/default.yaml``: d_model 256, 8 heads, 4 levels, 8 points, 4 encoder layers, ffn 1024;
  the deformable encoder as in xtcpete/rdd ``RDD/models/deformable_transformer.py`` (the
  TraqPoint copy is not public) with ``ops/modules/ms_deform_attn.py``;
- facebookresearch/dinov3 ``dinov3/models/convnext.py`` and ``hub/backbones.py``
  (``dinov3_convnext_base``: depths 3/3/27/3, dims 128/256/512/1024, final ``norm`` also
  registered as ``norms.3``).

Regenerate the fixture from the repository root with ``python -m tests.models.test_paper``.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models.deform_attn import ms_deform_attn_sample
from models.errors import BadInputError, MissingFileError
from models.factory import build
from models.paper import CHECKPOINT, PaperNet, build_paper_extractor, load_reference_checkpoint

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "traqpoint_paper_keys.json"
SHARED_DATA = Path(os.environ.get("TRAQPOINT_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data"


def reference_key_table() -> dict[str, list[int]]:
    """Tensor name -> shape of the authors' ``traqpoint_best.pth``, from their code (see module doc)."""
    t: dict[str, list[int]] = {}

    def conv(name: str, cout: int, cin: int, k: int, bias: bool = True, groups: int = 1) -> None:
        t[f"{name}.weight"] = [cout, cin // groups, k, k]
        if bias:
            t[f"{name}.bias"] = [cout]

    def batchnorm(name: str, c: int, affine: bool = True) -> None:
        if affine:
            t[f"{name}.weight"], t[f"{name}.bias"] = [c], [c]
        t[f"{name}.running_mean"], t[f"{name}.running_var"], t[f"{name}.num_batches_tracked"] = [c], [c], []

    def affine(name: str, c: int) -> None:  # LayerNorm / GroupNorm
        t[f"{name}.weight"], t[f"{name}.bias"] = [c], [c]

    def linear(name: str, cout: int, cin: int) -> None:
        t[f"{name}.weight"], t[f"{name}.bias"] = [cout, cin], [cout]

    dims, hidden = [8, 16, 32, 64], 64
    cin = 3
    for i, d in enumerate(dims, start=1):
        b = f"detector.block{i}"
        conv(f"{b}.conv1", d, cin, 3, bias=False)
        batchnorm(f"{b}.bn1", d)
        conv(f"{b}.conv2", d, d, 3, bias=False)
        batchnorm(f"{b}.bn2", d)
        if i > 1:
            conv(f"{b}.downsample", d, cin, 1)
        cin = d
    for i, d in enumerate(dims, start=1):
        conv(f"detector.conv{i}", hidden // 4, d, 1, bias=False)
    conv("detector.policy_head", 1, hidden, 1, bias=False)

    dino = "descriptor.backbone.0.dino"
    depths, widths = [3, 3, 27, 3], [128, 256, 512, 1024]
    conv(f"{dino}.downsample_layers.0.0", widths[0], 3, 4)
    affine(f"{dino}.downsample_layers.0.1", widths[0])
    for i in range(1, 4):
        affine(f"{dino}.downsample_layers.{i}.0", widths[i - 1])
        conv(f"{dino}.downsample_layers.{i}.1", widths[i], widths[i - 1], 2)
    for s, (n, w) in enumerate(zip(depths, widths)):
        for j in range(n):
            blk = f"{dino}.stages.{s}.{j}"
            t[f"{blk}.gamma"] = [w]
            conv(f"{blk}.dwconv", w, w, 7, groups=w)
            affine(f"{blk}.norm", w)
            linear(f"{blk}.pwconv1", 4 * w, w)
            linear(f"{blk}.pwconv2", w, 4 * w)
    affine(f"{dino}.norm", widths[-1])
    affine(f"{dino}.norms.3", widths[-1])

    d_model, heads, levels, points, layers, ffn = 256, 8, 4, 8, 4, 1024
    for lvl, w in enumerate(widths):
        conv(f"descriptor.input_proj.{lvl}.0", d_model, w, 1)
        affine(f"descriptor.input_proj.{lvl}.1", d_model)
    t["descriptor.transformer.level_embed"] = [levels, d_model]
    for n in range(layers):
        layer = f"descriptor.transformer.encoder.layers.{n}"
        linear(f"{layer}.self_attn.sampling_offsets", heads * levels * points * 2, d_model)
        linear(f"{layer}.self_attn.attention_weights", heads * levels * points, d_model)
        linear(f"{layer}.self_attn.value_proj", d_model, d_model)
        linear(f"{layer}.self_attn.output_proj", d_model, d_model)
        affine(f"{layer}.norm1", d_model)
        linear(f"{layer}.linear1", ffn, d_model)
        linear(f"{layer}.linear2", d_model, ffn)
        affine(f"{layer}.norm2", d_model)
    conv("descriptor.matchibility_head.0.layer.0", 128, d_model, 1, bias=False)
    batchnorm("descriptor.matchibility_head.0.layer.1", 128, affine=False)
    conv("descriptor.matchibility_head.1.layer.0", 64, 128, 1, bias=False)
    batchnorm("descriptor.matchibility_head.1.layer.1", 64, affine=False)
    conv("descriptor.matchibility_head.2", 1, 64, 1)
    return t


def key_table(state: dict[str, torch.Tensor]) -> dict[str, list[int]]:
    """Name -> shape of a state dict."""
    return {k: list(v.shape) for k, v in state.items()}


@pytest.fixture(scope="module")
def net() -> PaperNet:
    torch.manual_seed(0)
    return PaperNet().eval()


def test_forward_256(net: PaperNet) -> None:
    image = torch.rand(1, 1, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        out = net(image)
    assert out["descriptors"].shape == (1, 256, 64, 64)
    assert out["matchability"].shape == (1, 1, 64, 64)
    assert out["logits"].shape == (1, 1, 256, 256)
    assert all(v.isfinite().all() for v in out.values())
    assert torch.allclose(out["descriptors"].norm(dim=1), torch.ones(1, 64, 64), atol=1e-5)
    assert ((out["matchability"] > 0) & (out["matchability"] < 1)).all()


def test_grey_equals_repeated_rgb(net: PaperNet) -> None:
    grey = torch.rand(2, 1, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a, b = net(grey), net(grey.repeat(1, 3, 1, 1))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_rejects_bad_shapes(net: PaperNet) -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.rand(1, 1, 60, 64))
    with pytest.raises(ValueError, match=r"\[B, 1\|3, H, W\]"):
        net(torch.rand(1, 2, 64, 64))


def test_fixture_is_the_reference_table() -> None:
    fixture = json.loads(FIXTURE.read_text())
    assert fixture["keys"] == reference_key_table()
    assert fixture["num_tensors"] == len(fixture["keys"])


def test_state_dict_matches_reference_keys(net: PaperNet) -> None:
    expected = json.loads(FIXTURE.read_text())["keys"]
    ours = key_table(net.state_dict())
    assert sorted(set(expected) - set(ours)) == [], "missing in PaperNet"
    assert sorted(set(ours) - set(expected)) == [], "not in the reference checkpoint"
    assert ours == expected


def test_policy_parameters_are_the_detector(net: PaperNet) -> None:
    names = {n for n, p in net.named_parameters() if any(p is q for q in net.policy_parameters())}
    assert names and all(n.startswith("detector.") for n in names)
    assert not any(p.requires_grad for p in net.descriptor.backbone.parameters())  # frozen as in the reference


def test_training_step_gradients(net: PaperNet) -> None:
    g = torch.Generator().manual_seed(5)
    train = copy.deepcopy(net).train()  # a copy: train mode updates BatchNorm statistics
    out = train(torch.rand(2, 3, 64, 64, generator=g))
    target = torch.randn(out["descriptors"].shape, generator=g)  # unit descriptors: use a projection
    (out["descriptors"] * target).sum().add(out["matchability"].sum() + out["logits"].mean()).backward()
    grads = {n: p.grad for n, p in train.named_parameters()}
    assert all(g is None for n, g in grads.items() if ".backbone." in n)  # frozen, as in the reference
    attn = "descriptor.transformer.encoder.layers.0.self_attn"
    # (level_embed only reaches the offsets/weights, whose matrices start at zero: no gradient at step 0)
    for name in (
        "detector.policy_head.weight",
        "descriptor.input_proj.0.0.weight",
        f"{attn}.sampling_offsets.weight",
        f"{attn}.attention_weights.weight",
        f"{attn}.value_proj.weight",
    ):
        assert grads[name] is not None and grads[name].isfinite().all() and grads[name].abs().sum() > 0, name


def test_reference_checkpoint_round_trip(net: PaperNet, tmp_path: Path) -> None:
    # Written the way the authors' DDP training would (``module.`` prefix), in their key layout.
    path = tmp_path / "traqpoint_best.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    extractor = build("traqpoint", weights=path, device="cpu", num_keypoints=64)  # through the factory
    image = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        want, got = net(image), extractor.net(image)
    for k in want:
        assert torch.equal(want[k], got[k]), k
    feats = extractor.extract(image)
    assert feats[0]["descriptors"].shape[1] == 256 and extractor.name == "traqpoint"
    assert feats[0]["keypoints"].shape[0] == feats[0]["descriptors"].shape[0] > 0


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(MissingFileError, match="traqpoint_best.pth") as err:
        build_paper_extractor(tmp_path / "traqpoint_best.pth")
    assert "huggingface.co" in str(err.value) and "\n" not in str(err.value)


def test_default_location_is_third_party() -> None:
    if CHECKPOINT.exists():
        pytest.skip(f"{CHECKPOINT} is present")
    with pytest.raises(MissingFileError, match=r"third_party.traqpoint_best\.pth"):
        build_paper_extractor()


def load_grey_half(path: Path) -> torch.Tensor:
    """A grey image at half resolution as ``[1, 1, H, W]`` float in [0, 1]."""
    import cv2

    im = cv2.resize(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return torch.from_numpy(im).float()[None, None] / 255


@pytest.mark.slow
@pytest.mark.skipif(not CHECKPOINT.exists(), reason=f"authors' weights not downloaded to {CHECKPOINT}")
def test_released_weights_match_a_homography_pair() -> None:
    """With the authors' weights: mutual matches of churchill 1 -> 3 agree with the true homography.

    Measured at half resolution, 1024 keypoints, 3 px: SIFT gives 269 correct matches (63 %),
    this network with *random* weights about 20 (12-17 %); the trained network must do at least
    half as well as SIFT, so a wrongly loaded checkpoint fails. (Not run by the author of this test:
    the weights were not available; the thresholds may need a look on the first run with them.)
    """
    folder = SHARED_DATA / "homography" / "churchill"
    if not folder.is_dir():
        pytest.skip(f"shared test data not available: {folder}")
    extractor = build_paper_extractor(num_keypoints=1024)
    f1, f3 = (extractor.extract(load_grey_half(folder / f"{i}.ppm"))[0] for i in (1, 3))
    nn13, nn31 = (
        (f1["descriptors"] @ f3["descriptors"].T).max(1).indices,
        (f3["descriptors"] @ f1["descriptors"].T).max(1).indices,
    )
    mutual = torch.nonzero(nn31[nn13] == torch.arange(len(nn13))).squeeze(1)
    half = torch.diag(torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64))
    homography = half @ torch.from_numpy(np.loadtxt(folder / "H_1_3")) @ torch.linalg.inv(half)
    p1 = torch.cat([f1["keypoints"][mutual].double(), torch.ones(len(mutual), 1, dtype=torch.float64)], 1)
    warped = p1 @ homography.T
    err = (warped[:, :2] / warped[:, 2:] - f3["keypoints"][nn13[mutual]].double()).norm(dim=1)
    correct = int((err < 3).sum())
    assert correct >= 135 and correct >= 0.3 * len(mutual), f"{correct} correct of {len(mutual)} mutual matches"


def test_missing_backbone_weights(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)  # the RANDOM-weights warning is expected here
    name = "dinov3_convnext_base_pretrain_lvd1689m-801f2ba9.pth"
    with pytest.raises(MissingFileError, match=name):
        build_paper_extractor("random", backbone_weights=tmp_path / name)


def test_wrong_files(tmp_path: Path) -> None:
    small = tmp_path / "small.pth"
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, small)
    with pytest.raises(BadInputError):
        build_paper_extractor(small)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(BadInputError):
        build_paper_extractor(garbage)
    backbone = tmp_path / "dinov3.pth"
    torch.save({"stages.0.0.gamma": torch.zeros(128)}, backbone)
    with pytest.raises(BadInputError, match="backbone_weights"):
        load_reference_checkpoint(backbone)
    misshaped = tmp_path / "misshaped.pth"
    torch.save({"descriptor.transformer.level_embed": torch.zeros(5, 256)}, misshaped)
    with pytest.raises(BadInputError, match="level_embed"):
        build_paper_extractor(misshaped)


def naive_deform_sample(value, shapes, locations, weights) -> torch.Tensor:
    """Loop-by-loop bilinear sampling with zero padding (slow, obvious), ``[B, Q, heads * Dh]``."""
    b, _, heads, dh = value.shape
    _, q, _, levels, points, _ = locations.shape
    out = torch.zeros(b, q, heads, dh)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for bi in range(b):
        for qi in range(q):
            for hd in range(heads):
                for lv, (h, w) in enumerate(shapes):
                    grid = value[bi, starts[lv] : starts[lv + 1], hd].view(h, w, dh)
                    for p in range(points):
                        x = locations[bi, qi, hd, lv, p, 0].item() * w - 0.5
                        y = locations[bi, qi, hd, lv, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        acc = torch.zeros(dh)
                        for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                            if 0 <= yy < h and 0 <= xx < w:
                                acc += (1 - abs(x - xx)) * (1 - abs(y - yy)) * grid[yy, xx]
                        out[bi, qi, hd] += weights[bi, qi, hd, lv, p] * acc
    return out.view(b, q, heads * dh)


def test_deform_sampling_matches_naive() -> None:
    g = torch.Generator().manual_seed(4)
    shapes = [(4, 5), (2, 3)]
    value = torch.randn(2, 26, 2, 3, generator=g)
    locations = torch.rand(2, 3, 2, 2, 2, 2, generator=g) * 1.4 - 0.2  # some points fall outside
    weights = torch.rand(2, 3, 2, 2, 2, generator=g)
    got = ms_deform_attn_sample(value, shapes, locations, weights)
    assert torch.allclose(got, naive_deform_sample(value, shapes, locations, weights), atol=1e-5)


if __name__ == "__main__":
    table = reference_key_table()
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    doc = (
        "Tensor name -> shape of the authors' traqpoint_best.pth, spelled out from their code by "
        "reference_key_table() in tests/models/test_paper.py (see its docstring for the files read)."
    )
    rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items())  # one tensor per line
    FIXTURE.write_text(
        f'{{\n "_about": {json.dumps(doc)},\n "num_tensors": {len(table)},\n "keys": {{\n{rows}\n }}\n}}\n'
    )
    print(f"wrote {FIXTURE} ({len(table)} tensors)")
