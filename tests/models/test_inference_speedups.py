"""Inference rewrites (BatchNorm folding, channels-last, bf16 backbone) and multi-scale extraction."""

from __future__ import annotations

import pytest
import torch

import models
from models.fusion import fold_batchnorm, prepare_for_inference
from models.lite import LiteNet
from models.precision import native_bf16_cpu, resolve_precision
from models.traqpoint import TraqPoint, resize_scale
from tests.conftest import randomised


def test_folded_channels_last_network_matches_original():
    net = randomised(LiteNet)
    x = torch.rand(1, 1, 64, 96)
    with torch.inference_mode():
        ref = net(x)
        fast = prepare_for_inference(randomised(LiteNet))
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    for key in ("descriptors", "matchability", "logits"):
        torch.testing.assert_close(got[key], ref[key], atol=2e-4, rtol=1e-4)


def test_fold_counts_every_conv_bn_pair():
    net = LiteNet()
    pairs = sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert fold_batchnorm(net) == pairs > 0


def test_policy_head_stays_fp32_under_bf16_autocast():
    net = randomised(LiteNet)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(1, 1, 64, 96))
    assert out["logits"].dtype == torch.float32
    assert out["descriptors"].dtype == torch.bfloat16  # the backbone did run in bf16


def test_precision_resolution():
    assert resolve_precision("auto", "cpu") == ("bf16" if native_bf16_cpu() else "fp32")
    assert resolve_precision("auto", "cuda") == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int4", "cpu")


def test_bf16_keeps_the_fp32_keypoints_on_a_real_frame(kitti_pair):
    image = kitti_pair[0]
    ref = models.build("traqpoint-lite", precision="fp32").extract_numpy(image, 1024)[0]
    got = models.build("traqpoint-lite", precision="bf16").extract_numpy(image, 1024)[0]
    a = {tuple(p) for p in ref["keypoints"].round().long().tolist()}
    b = {tuple(p) for p in got["keypoints"].round().long().tolist()}
    assert len(a & b) / len(a) > 0.97  # measured 0.999 on KITTI 06 frame 12
    cos = (ref["descriptors"][:200] * got["descriptors"][:200]).sum(-1)
    assert cos.median() > 0.999


def test_pyramid_levels_map_back_to_full_image_pixels():
    torch.manual_seed(0)
    image = torch.rand(1, 1, 96, 128)
    ms = models.build("traqpoint-lite", weights="random", scales=(1.0, 0.5), precision="fp32")
    single = models.build("traqpoint-lite", weights="random", precision="fp32")
    single.net = ms.net
    (full,) = ms.extract(image, num_keypoints=None)
    (half,) = single.extract(resize_scale(image, 0.5), num_keypoints=None)
    mapped = (half["keypoints"] + 0.5) / 0.5 - 0.5
    # every half-scale keypoint appears, mapped into full-image pixels, among the merged ones
    found = torch.cdist(mapped, full["keypoints"]).min(dim=1).values
    assert len(half["keypoints"]) > 0 and found.max() < 0.05  # sub-pixel refinement: float noise only
    assert torch.all(full["scores"][:-1] >= full["scores"][1:])
    assert full["keypoints"][:, 0].max() < 128 and full["keypoints"][:, 1].max() < 96


def test_pyramid_respects_the_budget_and_rejects_bad_scales():
    image = torch.rand(2, 1, 64, 96)
    ms = models.build("traqpoint-lite-ms", weights="random", num_keypoints=50)
    feats = ms.extract(image)
    assert len(feats) == 2 and all(len(f["keypoints"]) == 50 for f in feats)
    assert ms.name == "traqpoint-lite-ms" and ms.scales == (1.0, 0.71, 0.5, 0.35)
    with pytest.raises(ValueError, match="scales"):
        TraqPoint(ms.net, scales=(1.0, 0.0))


def test_pyramid_matches_more_under_zoom_on_churchill(churchill):
    """On a real 2-3x zoom pair the pyramid must add inliers over one scale (the reason it exists)."""
    from training.evaluate import mnn_inliers

    images = [models.image_io.read_image(churchill / f"{i}.ppm") for i in (1, 3)]
    counts = {}
    for name in ("traqpoint-lite", "traqpoint-lite-ms"):
        ext = models.build(name, num_keypoints=2048)
        f0, f1 = (ext.extract_numpy(im)[0] for im in images)
        counts[name] = mnn_inliers(ext, f0, f1)
    assert counts["traqpoint-lite-ms"] > 1.1 * counts["traqpoint-lite"], counts


@pytest.mark.parametrize("kind", ["lite", "lite2"])
def test_relu_fused_into_its_convolution_is_exact(kind):
    """prepare_for_inference fuses Conv+ReLU into one oneDNN op; outputs equal the folded network's."""
    from models.fusion import OneDNNConv, _pointwise_available
    from models.lite2 import LiteNet2

    cls = LiteNet if kind == "lite" else LiteNet2
    ref = randomised(cls)
    fold_batchnorm(ref)
    fast = prepare_for_inference(randomised(cls))
    if not _pointwise_available():
        pytest.skip("this torch build has no oneDNN fused convolution")
    assert sum(isinstance(m, OneDNNConv) for m in fast.modules()) >= 10
    x = torch.rand(1, 1, 64, 96)
    with torch.inference_mode():
        want, got = ref(x), fast(x.contiguous(memory_format=torch.channels_last))
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-5, rtol=1e-5)
    with torch.enable_grad():  # training / autograd takes the plain conv + relu path
        y = torch.rand(1, 1, 64, 96, requires_grad=True)
        fast(y)["descriptors"].sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()


def test_packed_onednn_convolution_is_exact_and_repacks_after_a_weight_update():
    """OneDNNConv packs its weight once per input shape; outputs equal nn.Conv2d (+ ReLU), and an
    in-place update of the weight (e.g. load_state_dict) is picked up instead of a stale packing."""
    from models.fusion import OneDNNConv, _pointwise_available

    if not _pointwise_available():
        pytest.skip("this torch build has no oneDNN fused convolution")
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
    fast = OneDNNConv(conv, "none")
    relu = OneDNNConv(conv, "relu")
    for hw in ((32, 48), (40, 24)):  # two shapes: two packings
        x = torch.randn(1, 8, *hw).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            torch.testing.assert_close(fast(x), conv(x), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(relu(x), torch.relu(conv(x)), atol=1e-5, rtol=1e-5)
    assert len(fast._packed) == 2
    with torch.no_grad():
        conv.weight.mul_(-2.0)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), conv(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        OneDNNConv(conv, "gelu")


def test_every_convolution_of_the_inference_build_is_packed():
    from models.fusion import OneDNNConv, _pointwise_available
    from models.lite2 import LiteNet2

    if not _pointwise_available():
        pytest.skip("this torch build has no oneDNN fused convolution")
    net = prepare_for_inference(randomised(LiteNet2, refine_dim=8))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    wrapped = [m for m in net.modules() if isinstance(m, OneDNNConv)]
    assert len(wrapped) == len(convs) > 20  # every conv sits inside exactly one wrapper
    assert {m.activation for m in wrapped} == {"relu", "none"}
