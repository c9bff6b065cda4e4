"""traqpoint-lite v2 (``models.lite2``): shapes, exact inference rewrites, shipped weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import models
from models.fusion import prepare_for_inference
from models.lite2 import LiteNet2, repeat2, standardise
from models.traqpoint import TraqPoint
from models.weights_io import load_checkpoint
from tests.conftest import randomised, shared_path

LITE2_WEIGHTS = models.factory.LITE_WEIGHTS


@pytest.mark.parametrize("hw", [(64, 96), (96, 160)])
def test_shapes(hw):
    out = LiteNet2().eval()(torch.rand(2, 1, *hw))
    h, w = hw
    assert out["descriptors"].shape == (2, 64, h // 8, w // 8)
    assert out["matchability"].shape == (2, 1, h // 8, w // 8)
    assert out["logits"].shape == (2, 1, h, w)
    torch.testing.assert_close(out["descriptors"].norm(dim=1), torch.ones(2, h // 8, w // 8))


def test_full_resolution_logits_repeat_the_stride2_policy():
    net = LiteNet2().eval()
    x = torch.rand(1, 1, 64, 96)
    full = net(x)["logits"]
    net.full_res_logits = False
    half = net(x)["logits"]
    assert half.shape == (1, 1, 32, 48)
    assert torch.equal(repeat2(half), full)
    assert torch.equal(full, F.interpolate(half, scale_factor=2, mode="nearest"))


def test_extractor_maps_stride2_keypoints_to_image_pixels():
    """A bright blob centred on image pixel (41, 23) gives a keypoint there (stride-2 grid + soft-argmax)."""
    net = LiteNet2().eval()
    with torch.no_grad():  # a policy that scores the image itself: logit = brightness at stride 2
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
        net.pixel_embed[0].weight[0, 0, 1, 1] = 1.0
        net.pixel_embed[2].weight[0, 0, 1, 1] = 1.0
        net.pixel_embed[4].weight[0, 0, 1, 1] = 1.0
        net.pixel_embed[6].weight[0, 0] = 1.0
    ext = TraqPoint(net, num_keypoints=1, subpixel=True)
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    img = torch.exp(-((x - 41) ** 2 + (y - 23) ** 2) / 8.0)[None, None]
    kp = ext.extract(img)[0]["keypoints"]
    assert kp.shape == (1, 2)
    assert (kp[0] - torch.tensor([41.0, 23.0])).abs().max() < 1.0


def test_standardise_matches_instance_norm_on_a_smooth_image():
    y, x = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    img = (0.3 + 0.2 * torch.sin(x / 7) * torch.cos(y / 5))[None, None]
    torch.testing.assert_close(standardise(img), F.instance_norm(img, eps=1e-5), atol=0.05, rtol=0.05)


def test_folded_channels_last_matches_and_matchability_can_be_skipped():
    x = torch.rand(1, 1, 64, 96)
    with torch.inference_mode():
        ref = randomised(LiteNet2)(x)
        fast = prepare_for_inference(randomised(LiteNet2))
        got = fast(x.contiguous(memory_format=torch.channels_last))
        fast.with_matchability = False
        lean = fast(x)
    for key in ("descriptors", "matchability", "logits"):
        torch.testing.assert_close(got[key], ref[key], atol=2e-4, rtol=1e-4)
    assert "matchability" not in lean
    torch.testing.assert_close(lean["logits"], ref["logits"], atol=2e-4, rtol=1e-4)


def test_policy_is_fp32_under_bf16_autocast():
    net = randomised(LiteNet2)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.rand(1, 1, 64, 96))
    assert out["logits"].dtype == torch.float32


def test_conf_round_trips_through_a_state_dict():
    net = LiteNet2(dims=(8, 16, 24, 64, 128), fused_dim=48)
    state = net.state_dict()
    assert LiteNet2.fits_state(state)
    again = LiteNet2(**LiteNet2.conf_from_state(state))
    again.load_state_dict(state)


def test_policy_parameters_are_only_the_policy_heads():
    net = LiteNet2()
    policy = {id(p) for p in net.policy_parameters()}
    names = [n for n, p in net.named_parameters() if id(p) in policy]
    assert names and all(n.startswith("pixel_embed.") for n in names)


def test_shipped_weights_load_and_detect_on_a_real_frame():
    assert LiteNet2.fits_state(load_checkpoint(LITE2_WEIGHTS))
    from models.image_io import read_image

    img = read_image(shared_path("kitti_mini", "sequences", "06", "image_0", "000010.png"))
    ext = models.build("traqpoint-lite", num_keypoints=1024, precision="fp32")
    assert isinstance(ext.net, LiteNet2)
    assert ext._refine_head_active()  # the shipped weights carry the sub-pixel head (training.refine)
    feats = ext.extract(torch.from_numpy(img).float()[None, None] / 255)[0]
    kp = feats["keypoints"]
    assert len(kp) == 1024 and torch.isfinite(feats["descriptors"]).all()
    # spread over the frame, not clustered: keypoints occupy many cells of a 16x16 grid
    cells = ((kp[:, 1] / img.shape[0] * 16).long() * 16 + (kp[:, 0] / img.shape[1] * 16).long()).unique()
    assert len(cells) > 120


def test_refine_head_is_a_soft_argmax_inside_the_block_ring():
    """The head scores 4x4 pixels (the 2x2 block and its ring): centre at zero init, a peak's pixel
    when it is sharp, never further than 1.5 px from the block centre, differentiable."""
    net = LiteNet2(refine_dim=4).eval()
    assert LiteNet2.conf_from_state(net.state_dict())["refine_dim"] == 4
    assert LiteNet2.conf_from_state(LiteNet2().state_dict())["refine_dim"] == 0
    head = net.refine_head
    with torch.no_grad():
        head[-1].weight.zero_()
        head[-1].bias.zero_()
    img = torch.rand(1, 1, 64, 96)
    blocks = torch.tensor([[5.0, 7.0], [0.0, 0.0], [47.0, 31.0]])
    kp = net.refine_keypoints(img, blocks)
    torch.testing.assert_close(kp, blocks * 2 + 0.5)  # uniform: the block centre (stride-2 convention)
    with torch.no_grad():  # a head that passes the image through: the brightest pixel wins
        for m in head:
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        head[0].weight[:, 0, 1, 1] = 1.0
        head[2].weight[:, 0, 1, 1] = 1.0
        head[4].weight[:, 0, 1, 1] = 1.0
        head[6].weight[0, :] = 50.0
    img = torch.zeros(1, 1, 64, 96)
    img[0, 0, 15, 12] = 1.0  # pixel (x=12, y=15): in the ring of block (5, 7), left of it
    kp = net.refine_keypoints(img, blocks[:1])
    assert (kp[0] - torch.tensor([12.0, 15.0])).abs().max() < 1e-3
    head[-1].weight.requires_grad_(True)
    net.refine_keypoints(torch.rand(1, 1, 64, 96), blocks).sum().backward()
    assert head[-1].weight.grad is not None
    with pytest.raises(RuntimeError, match="no refinement head"):
        LiteNet2().refine_keypoints(img, blocks)


def test_mlp_refine_head_scores_the_same_window_as_the_conv_head():
    """The ``mlp`` head maps the whole 12x12 patch to the 6x6 window's logits: its state dict says
    so, a zeroed head gives the block centre, and a head that copies the window's pixels puts the
    keypoint on the brightest one (the same pixel the conv head's test finds)."""
    net = LiteNet2(refine_dim=36, refine_kind="mlp").eval()
    conf = LiteNet2.conf_from_state(net.state_dict())
    assert (conf["refine_kind"], conf["refine_dim"], conf["refine_ring"]) == ("mlp", 36, 2)
    assert LiteNet2.conf_from_state(LiteNet2(refine_dim=4).state_dict())["refine_kind"] == "conv"
    with pytest.raises(ValueError, match="refine_kind"):
        LiteNet2(refine_dim=4, refine_kind="transformer")
    hidden, out = net.refine_head[0], net.refine_head[2]
    assert (hidden.in_features, out.out_features) == (144, 36)
    blocks = torch.tensor([[5.0, 7.0], [0.0, 0.0], [47.0, 31.0]])
    with torch.no_grad():
        out.weight.zero_()
        out.bias.zero_()
    torch.testing.assert_close(net.refine_keypoints(torch.rand(1, 1, 64, 96), blocks), blocks * 2 + 0.5)
    with torch.no_grad():  # hidden unit (i, j) copies the window pixel (i, j) = patch pixel (3 + i, 3 + j)
        hidden.weight.zero_()
        hidden.bias.zero_()
        for i in range(6):
            for j in range(6):
                hidden.weight[i * 6 + j, (3 + i) * 12 + (3 + j)] = 1.0
        out.weight.copy_(50.0 * torch.eye(36))
    img = torch.zeros(1, 1, 64, 96)
    img[0, 0, 15, 12] = 1.0  # pixel (x=12, y=15): in the ring of block (5, 7), left of it
    kp = net.refine_keypoints(img, blocks[:1])
    assert (kp[0] - torch.tensor([12.0, 15.0])).abs().max() < 1e-3


def test_extractor_uses_the_refine_head_when_the_net_has_one():
    """Wiring: with a zeroed head the extractor's keypoints are the selected blocks' centres, i.e.
    those of the same network without a head and without sub-pixel refinement."""
    torch.manual_seed(0)
    net = LiteNet2(refine_dim=4).eval()
    with torch.no_grad():
        net.refine_head[-1].weight.zero_()
        net.refine_head[-1].bias.zero_()
    bare = LiteNet2().eval()
    bare.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("refine_")})
    with_head = TraqPoint(prepare_for_inference(net), num_keypoints=50)
    centres = TraqPoint(prepare_for_inference(bare), num_keypoints=50, subpixel=False)
    assert with_head._refine_head_active() and not centres._refine_head_active()
    img = torch.rand(1, 1, 64, 96)
    a, b = with_head.extract(img)[0], centres.extract(img)[0]
    assert len(a["keypoints"]) > 10
    torch.testing.assert_close(a["keypoints"], b["keypoints"])
    torch.testing.assert_close(a["descriptors"], b["descriptors"])


@pytest.mark.parametrize("refine_dim,subpixel,context_dim", [(8, True, 0), (0, True, 0), (0, False, 0), (8, True, 6)])
def test_detect_first_gives_the_same_features_as_forward_first(monkeypatch, refine_dim, subpixel, context_dim):
    """The extractor selects and refines before the descriptor backbone runs (a cache-friendlier
    order; a policy with a context head reads the backbone's features first); the features must be
    bit-identical to running the whole forward first, also for a batch, an image that needs padding
    and the quadratic fit."""
    net = randomised(LiteNet2, refine_dim=refine_dim, refine_kind="mlp", context_dim=context_dim)
    ext = TraqPoint(prepare_for_inference(net), num_keypoints=60, subpixel=subpixel)
    assert ext._detects_first()
    img = torch.rand(2, 1, 70, 100)  # padded to 96 x 128 inside
    first = ext.extract(img)
    monkeypatch.setattr(TraqPoint, "detect_first", False)
    assert not ext._detects_first()
    whole = ext.extract(img)
    for a, b in zip(first, whole):
        assert len(a["keypoints"]) > 10
        for key in ("keypoints", "scores", "descriptors"):
            assert torch.equal(a[key], b[key]), key


def test_detect_first_needs_the_two_phase_network():
    """A network behind a compiled/exported backend has only ``forward``: the extractor runs it whole."""
    net = randomised(LiteNet2)
    ext = TraqPoint(prepare_for_inference(net), num_keypoints=20)

    class ForwardOnly(torch.nn.Module):
        stride, logit_stride, pad_multiple = 8, 2, 32

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    ext.net = ForwardOnly(net)
    assert not ext._detects_first()
    assert len(ext.extract(torch.rand(1, 1, 64, 96))[0]["keypoints"]) > 0
    assert not TraqPoint(prepare_for_inference(randomised(LiteNet2)), detector="matchability")._detects_first()


def test_context_head_adds_an_upsampled_region_logit():
    """``context_dim``: the policy is the local logit plus the context head's stride-8 map, bilinearly
    upsampled to the stride-2 grid; it is a policy parameter, survives a state dict and needs the
    shared features."""
    net = randomised(LiteNet2, context_dim=6)
    assert net.policy_reads_features and not LiteNet2().policy_reads_features
    x = standardise(torch.rand(1, 1, 64, 96))
    shared = net.shared_features(x)
    with torch.no_grad():
        logits = net.policy_logits(x, shared)
        coarse = net.policy_context(shared)
        expected = net.pixel_embed(x) + F.interpolate(coarse, size=(32, 48), mode="bilinear", align_corners=False)
    assert logits.shape == (1, 1, 32, 48) and coarse.shape == (1, 1, 8, 12)
    torch.testing.assert_close(logits, expected)
    assert float(coarse.std()) > 0  # the context term is not silently zero
    with pytest.raises(ValueError, match="context head"):
        net.policy_logits(x)
    names = {n for n, p in net.named_parameters() if any(p is q for q in net.policy_parameters())}
    assert names == {n for n, _ in net.named_parameters() if n.startswith(("pixel_embed.", "policy_context."))}
    assert LiteNet2.conf_from_state(net.state_dict())["context_dim"] == 6
    assert LiteNet2.conf_from_state(LiteNet2().state_dict())["context_dim"] == 0
