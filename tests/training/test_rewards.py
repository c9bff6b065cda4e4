"""Stage-2 reward components and policy sampling on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from training.rewards import (
    consistency_reward,
    distinctiveness_reward,
    sample_policy,
    spatial_entropy,
    track_reward,
)

G = 8  # grid cell size


def setup(n_views: int = 3, n: int = 3, hw=(16, 24), seed: int = 0):
    """Unique reference descriptors, near-copies in every view, flat noisy logits, points on integer pixels."""
    g = torch.Generator().manual_seed(seed)
    ref = F.normalize(torch.randn(1, n, 32, generator=g), dim=-1)
    tgt = F.normalize(ref[:, None] + 0.1 * torch.randn(1, n_views, n, 32, generator=g), dim=-1)
    logits = 0.1 * torch.rand(1, n_views, 1, *hw, generator=g)
    warped = torch.stack(
        [torch.randint(0, hw[1], (1, n_views, n), generator=g), torch.randint(0, hw[0], (1, n_views, n), generator=g)],
        -1,
    ).float()
    return ref, tgt, logits, warped, torch.ones(1, n_views, n, dtype=torch.bool)


def reward(ref, tgt, logits, warped, covis, sim_thresh=0.5):
    return track_reward(ref, tgt, logits, warped, covis, G, sim_thresh, 0.85)


def test_redetected_point_is_more_consistent():
    ref, tgt, logits, warped, covis = setup()
    for v in range(3):  # point 0: the logit peaks at its warped location in every view; point 1: a trough
        x, y = warped[0, v, 0].long()
        logits[0, v, 0, y, x] = 5.0
        x, y = warped[0, v, 1].long()
        logits[0, v, 0, y, x] = -5.0
    cons = consistency_reward(logits[0], warped[0], G)  # [V, N]
    assert torch.allclose(cons[:, 0], torch.ones(3)) and torch.allclose(cons[:, 1], torch.zeros(3))
    r = reward(ref, tgt, logits, warped, covis)
    assert r["point"][0, 0] > r["point"][0, 1] + 0.4  # 0.5 * (1 - 0) of the consistency term


def test_repeated_texture_is_less_distinctive():
    ref, tgt, logits, warped, covis = setup()
    tgt[:, :, 1] = tgt[:, :, 0]  # in every view, points 0 and 1 look the same (repeated texture)
    dist = distinctiveness_reward(ref.expand(3, -1, -1), tgt[0], covis[0])  # [V, N]
    assert (dist[:, 0] == 0).all()  # its true partner is no closer than the look-alike: ratio 1
    assert (dist[:, 2] > 0.5).all()
    r = reward(ref, tgt, logits, warped, covis)
    assert r["point"][0, 2] > r["point"][0, 0]
    # a look-alike that is not covisible is no competitor
    covis[:, :, 1] = False
    assert (distinctiveness_reward(ref.expand(3, -1, -1), tgt[0], covis[0])[:, 0] > 0.5).all()


def test_similarity_gate_zeroes_reward():
    ref, tgt, logits, warped, covis = setup()
    for v in range(3):
        x, y = warped[0, v, 0].long()
        logits[0, v, 0, y, x] = 5.0  # perfectly re-detected ...
    tgt[:, :, 0] = -ref[:, None, 0]  # ... but the descriptors disagree (cosine -1)
    r = reward(ref, tgt, logits, warped, covis)
    assert r["point"][0, 0] == 0 and r["point"][0, 2] > 0
    assert r["similar"] == pytest.approx(2 / 3)
    assert (reward(ref, tgt, logits, warped, covis, sim_thresh=1.01)["point"] == 0).all()


def test_covisibility_and_means():
    ref, tgt, logits, warped, covis = setup()
    covis[0, :, 1] = False  # point 1 is seen in no other view
    covis[0, 0, 2] = False  # point 2 only in views 1 and 2
    r = reward(ref, tgt, logits, warped, covis)
    assert r["covisible"].tolist() == [[True, False, True]]
    assert r["point"][0, 1] == 0
    assert r["sequence"][0] == pytest.approx(float(r["point"][0, [0, 2]].mean()))  # point 1 left out
    # a point's reward is the mean over its covisible views only: view 0 cannot change point 2's
    logits2 = logits.clone()
    x, y = warped[0, 0, 2].long()
    logits2[0, 0, 0, y, x] = 5.0
    assert reward(ref, tgt, logits2, warped, covis)["point"][0, 2] == pytest.approx(float(r["point"][0, 2]))
    none = torch.zeros_like(covis)
    r = reward(ref, tgt, logits, warped, none)
    assert r["sequence"][0] == 0 and torch.isfinite(r["consistency"])


@pytest.mark.parametrize("strategy, expect", [("hybrid", 6 + 5), ("grid", 6), ("global", 5)])
def test_sample_policy(strategy, expect):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 20, 28, generator=g)  # cells cover the top-left 16 x 24 (2 x 3 cells)
    pts, logp = sample_policy(logits, G, 5, strategy, g)
    assert pts.shape == (2, expect, 2) and logp.shape == (2, expect)
    xi, yi = pts[..., 0].long(), pts[..., 1].long()
    assert ((xi >= 0) & (xi < 28) & (yi >= 0) & (yi < 20)).all()
    n_grid = 6 if strategy != "global" else 0
    if n_grid:  # one sample in each cell (row-major), log-prob under that cell's softmax
        cell = torch.arange(6)
        assert torch.equal(xi[:, :6] // G, (cell % 3).expand(2, -1)) and torch.equal(
            yi[:, :6] // G, (cell // 3).expand(2, -1)
        )
        for b in range(2):
            for k in range(6):
                cy, cx = k // 3 * G, k % 3 * G
                lsm = logits[b, 0, cy : cy + G, cx : cx + G].flatten().log_softmax(0).view(G, G)
                assert logp[b, k] == pytest.approx(float(lsm[yi[b, k] - cy, xi[b, k] - cx]), abs=1e-5)
    full = logits.flatten(1).log_softmax(-1).view(2, 20, 28)  # global samples: whole-image softmax
    for b in range(2):
        for k in range(n_grid, expect):
            assert logp[b, k] == pytest.approx(float(full[b, yi[b, k], xi[b, k]]), abs=1e-5)


def test_sample_policy_follows_peaks():
    logits = torch.zeros(1, 1, 16, 16)
    peaks = [(3, 2), (12, 5), (1, 9), (14, 15)]  # (x, y), one per cell
    for x, y in peaks:
        logits[0, 0, y, x] = 50.0
    pts, logp = sample_policy(logits, G, 0, "grid", torch.Generator().manual_seed(1))
    assert sorted(map(tuple, pts[0].long().tolist())) == sorted(peaks)
    assert torch.allclose(logp, torch.zeros_like(logp), atol=1e-6)


def test_spatial_entropy():
    flat = torch.zeros(2, 1, 16, 16)
    assert spatial_entropy(flat, 4).item() == pytest.approx(1.0, abs=1e-5)
    peaked = flat.clone()
    peaked[:, 0, 1::4, 2::4] = 8.0  # one peak in every 4 x 4 region
    h = spatial_entropy(peaked, 4).item()
    assert 0 <= h < 0.2
    half = flat.clone()
    half[:, 0, 1::4, 2::4] = 2.0
    assert h < spatial_entropy(half, 4).item() < 1.0
    assert math.isfinite(spatial_entropy(torch.full((1, 1, 16, 16), -1e4), 4).item())
