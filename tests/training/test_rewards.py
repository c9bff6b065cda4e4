"""Stage-2 reward terms, view warping, policy sampling and the policy-gradient baseline on hand-built cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.errors import BadInputError
from training.policy_gradient import Baseline, check_setup, entropy_weight_at, leave_one_out, policy_loss
from training.policy_sampling import sample_policy, spatial_entropy
from training.rewards import (
    RewardConfig,
    consistency_rank,
    consistency_rank_centred,
    consistency_reward,
    distinctiveness_reward,
    track_reward,
)
from training.view_warp import warp_views

G = 8  # cell size of the hand-built cases
CFG = RewardConfig(rank_cell=G)


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


def reward(ref, tgt, logits, warped, in_view, visible=None, cfg=CFG):
    return track_reward(ref, tgt, logits, warped, in_view, in_view if visible is None else visible, cfg)


def test_rank_counts_lower_logits_of_the_cell():
    logits = torch.arange(16 * 24, dtype=torch.float).view(1, 1, 16, 24)  # increasing row-major
    pts = torch.tensor([[[0.0, 0.0], [7.0, 7.0], [3.0, 2.0], [8.0, 0.0]]])
    rank = consistency_rank(logits, pts, G)
    # cell (0, 0) holds rows 0..7 x columns 0..7: (3, 2) has 2 * 8 + 3 lower entries
    assert rank.tolist()[0] == pytest.approx([0, 63 / 64, 19 / 64, 0])


def test_rank_partial_border_cell():
    logits = torch.randn(1, 1, 10, 13, generator=torch.Generator().manual_seed(0))
    pts = torch.tensor([[[12.0, 9.0], [9.0, 8.0]]])  # both in the bottom-right partial cell (2 x 5 pixels)
    cell = logits[0, 0, 8:, 8:].flatten()
    expect = [(cell < logits[0, 0, 9, 12]).sum() / 10, (cell < logits[0, 0, 8, 9]).sum() / 10]
    assert consistency_rank(logits, pts, G)[0].tolist() == pytest.approx([float(e) for e in expect])


def test_centred_window_rank_scores_peaks_not_high_ground():
    """``rank_window``: the rank among the window centred on the warped pixel. On a smooth ramp a
    point high up a slope outranks most of its grid cell but is no peak in its window; a local
    maximum is one wherever it is; windows clipped by the border count only real pixels."""
    ramp = torch.arange(16 * 24, dtype=torch.float).view(1, 1, 16, 24)
    pts = torch.tensor([[[6.0, 6.0]]])  # high in grid cell (0, 0), the middle of its 5 x 5 window
    assert consistency_rank(ramp, pts, G)[0, 0] == pytest.approx(54 / 64)
    assert consistency_rank_centred(ramp, pts, 2)[0, 0] == pytest.approx(12 / 25)
    peaks = torch.zeros(1, 1, 16, 24)
    peaks[0, 0, 5, 9] = 3.0  # a local maximum
    peaks[0, 0, 0, 0] = 2.0  # a maximum in the corner: its window has 3 x 3 real pixels
    rank = consistency_rank_centred(peaks, torch.tensor([[[9.0, 5.0], [0.0, 0.0], [9.4, 5.6]]]), 2)
    assert rank[0].tolist() == pytest.approx([24 / 25, 8 / 9, 0.0])  # (9.4, 5.6) rounds to (9, 6): a neighbour
    g = torch.Generator().manual_seed(2)
    many = torch.rand(3, 100, 2, generator=g) * torch.tensor([24.0, 16.0]) - 0.5
    assert (consistency_rank_centred(torch.randn(3, 1, 16, 24, generator=g), many, 3) < 1).all()  # the bound of 1
    # the reward takes the window when it is set
    ref, tgt, logits, warped, covis = setup()
    cells = reward(ref, tgt, logits, warped, covis)["rank"]
    window = reward(ref, tgt, logits, warped, covis, cfg=RewardConfig(rank_cell=G, rank_window=2))["rank"]
    assert not torch.isclose(cells, window)


def test_consistency_threshold_and_scaling():
    r = torch.tensor([0.0, 0.1, 0.199, 0.2, 0.6, 63 / 64, 1.0])
    expect = [0, 0, 0, 0, 0.5, (63 / 64 - 0.2) / 0.8, 1.0]
    assert consistency_reward(r, 0.2).tolist() == pytest.approx(expect)


def test_reward_never_exceeds_one():
    """The logit is read at the pixel that picks the cell: a sub-pixel point next to a larger
    neighbour across the cell border cannot out-rank its whole cell (bilinear reading could)."""
    logits = torch.zeros(1, 1, 16, 16)
    logits[0, 0, :, 8] = 100.0  # column 8 starts the right-hand cells
    pts = torch.tensor([[[7.4, 3.0], [7.6, 3.0]]])  # 7.4 -> pixel 7 (left cell), 7.6 -> pixel 8 (right cell)
    rank = consistency_rank(logits, pts, G)
    assert rank[0, 0] == 0 and rank[0, 1] == pytest.approx(56 / 64)
    g = torch.Generator().manual_seed(1)
    many = torch.rand(4, 200, 2, generator=g) * torch.tensor([24.0, 16.0]) - 0.5
    assert (consistency_rank(torch.randn(4, 1, 16, 24, generator=g), many, G) < 1).all()
    # the best possible case: a unique peak at the warped pixel, identical unique descriptors
    ref, _, logits, warped, covis = setup()
    tgt = ref[:, None].expand(-1, 3, -1, -1).clone()
    for v in range(3):
        for k in range(3):
            x, y = warped[0, v, k].long()
            logits[0, v, 0, y, x] = 50.0 + k
    r = reward(ref, tgt, logits, warped, covis)
    top = 0.5 * ((63 / 64 - 0.2) / 0.8 + 1)  # rank (n-1)/n and a ratio of 0
    assert (r["point"] <= 1).all() and r["point"].max() == pytest.approx(top, abs=0.01)


def test_redetected_point_is_more_consistent():
    ref, tgt, logits, warped, covis = setup()
    for v in range(3):  # point 0: the logit peaks at its warped location in every view; point 1: a trough
        x, y = warped[0, v, 0].long()
        logits[0, v, 0, y, x] = 5.0
        x, y = warped[0, v, 1].long()
        logits[0, v, 0, y, x] = -5.0
    rank = consistency_rank(logits[0], warped[0], G)  # [V, N]
    assert torch.allclose(rank[:, 0], torch.full((3,), 63 / 64)) and (rank[:, 1] == 0).all()
    r = reward(ref, tgt, logits, warped, covis)
    assert r["point"][0, 0] > r["point"][0, 1] + 0.45  # 0.5 * (0.98 - 0) of the consistency term


def test_repeated_texture_is_less_distinctive():
    ref, tgt, logits, warped, covis = setup()
    tgt[:, :, 1] = tgt[:, :, 0]  # in every view, points 0 and 1 look the same (repeated texture)
    dist = distinctiveness_reward(ref.expand(3, -1, -1), tgt[0], covis[0])  # [V, N]
    assert (dist[:, 0] == 0).all()  # its true partner is no closer than the look-alike: ratio 1
    assert (dist[:, 2] > 0.5).all()
    r = reward(ref, tgt, logits, warped, covis)
    assert r["point"][0, 2] > r["point"][0, 0]
    # a look-alike that is not visible is no competitor
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
    assert (reward(ref, tgt, logits, warped, covis, cfg=RewardConfig(G, sim_thresh=1.01))["point"] == 0).all()


def test_occluded_points_score_zero_and_count():
    ref, tgt, logits, warped, in_view = setup()
    full = reward(ref, tgt, logits, warped, in_view)["point"][0, 2]
    visible = in_view.clone()
    visible[0, 0, 2] = False  # point 2: occluded in view 1, visible in views 2 and 3
    seen = reward(ref, tgt, logits, warped, in_view, visible)
    per_view = reward(ref, tgt, logits, warped, visible)  # the same point-view dropped instead
    part = per_view["point"][0, 2]
    assert seen["point"][0, 2] == pytest.approx(float(part) * 2 / 3)  # a zero in the mean over 3 views
    assert seen["point"][0, 2] < full and seen["occluded"] == pytest.approx(1 / 9)
    visible[0, :, 1] = False  # point 1 occluded everywhere: counted, reward 0, pulls the sequence mean down
    r = reward(ref, tgt, logits, warped, in_view, visible)
    assert r["counted"][0, 1] and r["point"][0, 1] == 0
    assert r["sequence"][0] == pytest.approx(float(r["point"][0].mean()))


def test_out_of_view_points_are_not_counted():
    ref, tgt, logits, warped, covis = setup()
    covis[0, :, 1] = False  # point 1 is in no other view
    covis[0, 0, 2] = False  # point 2 only in views 2 and 3
    r = reward(ref, tgt, logits, warped, covis)
    assert r["counted"].tolist() == [[True, False, True]]
    assert r["point"][0, 1] == 0
    assert r["sequence"][0] == pytest.approx(float(r["point"][0, [0, 2]].mean()))  # point 1 left out
    logits2 = logits.clone()  # view 1 cannot change point 2's reward
    x, y = warped[0, 0, 2].long()
    logits2[0, 0, 0, y, x] = 5.0
    assert reward(ref, tgt, logits2, warped, covis)["point"][0, 2] == pytest.approx(float(r["point"][0, 2]))
    r = reward(ref, tgt, logits, warped, torch.zeros_like(covis))
    assert r["sequence"][0] == 0 and torch.isfinite(r["consistency"])


def depth_item(target_depth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two views of a fronto-parallel plane at 2 m; view 1 is 0.1 m to the right (x shift of -5 px)."""
    K = torch.tensor([[100.0, 0, 8], [0, 100.0, 8], [0, 0, 1]])
    T1 = torch.eye(4)
    T1[0, 3] = -0.1  # world -> camera 1: the camera sits at x = +0.1
    return {
        "depth": torch.stack([torch.full((16, 16), 2.0), target_depth]),
        "K": torch.stack([K, K]),
        "T_cam_world": torch.stack([torch.eye(4), T1]),
    }


def test_depth_warp_in_view_occluded_visible():
    target = torch.full((16, 16), 2.0)
    target[:, :4] = 1.0  # an occluder in front of the left of view 1
    target[:, 4:6] = 0.0  # unknown depth: cannot refute visibility
    target[:, 6:8] = 2.3  # 15 % deeper: within a 0.2 tolerance, beyond 0.05
    item = depth_item(target)
    item["depth"][0, 0, 0] = 0  # unknown reference depth: cannot be warped
    # -> (1, 5) occluder, (4, 5) unknown, (6, 5) 2.3 m, (9, 5) plane; unknown source depth; x = -3
    pts = torch.tensor([[6.0, 5.0], [9.0, 5.0], [11.0, 5.0], [14.0, 5.0], [0.0, 0.0], [2.0, 5.0]])
    w = warp_views(item, pts, depth_tol=0.2)
    assert w.points.shape == (1, 6, 2)
    assert torch.allclose(w.points[0, :4], pts[:4] - torch.tensor([5.0, 0]))
    assert w.in_view[0].tolist() == [True, True, True, True, False, False]
    assert w.visible[0].tolist() == [False, True, True, True, False, False]
    strict = warp_views(item, pts, depth_tol=0.05)
    assert strict.in_view[0].tolist() == w.in_view[0].tolist()
    assert strict.visible[0].tolist() == [False, True, False, True, False, False]  # 2.3 m vs 2 m is occlusion now


def test_homography_warp_uses_valid_masks():
    H = torch.stack([torch.eye(3), torch.tensor([[1.0, 0, 3], [0, 1, 0], [0, 0, 1]])])
    valid = torch.ones(2, 1, 8, 8, dtype=torch.bool)
    valid[1, 0, :, 7] = False  # view 1 has no content in its last column
    w = warp_views({"H": H, "valid": valid}, torch.tensor([[1.0, 1.0], [4.0, 2.0], [6.0, 2.0]]), 0.2)
    assert w.points[0].tolist() == [[4.0, 1.0], [7.0, 2.0], [9.0, 2.0]]
    assert w.in_view[0].tolist() == [True, False, False] and torch.equal(w.visible, w.in_view)


@pytest.mark.parametrize("strategy, expect", [("hybrid", 12 + 5), ("grid", 12), ("global", 5)])
def test_sample_policy_log_probs_are_image_wide(strategy, expect):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 1, 20, 28, generator=g)  # 3 x 4 cells, the last row and column partial
    pts, logp = sample_policy(logits, G, 5, strategy, g)
    assert pts.shape == (2, expect, 2) and logp.shape == (2, expect)
    xi, yi = pts[..., 0].long(), pts[..., 1].long()
    assert ((xi >= 0) & (xi < 28) & (yi >= 0) & (yi < 20)).all()
    if strategy != "global":  # one sample in each cell (row-major), partial border cells included
        cell = torch.arange(12)
        assert torch.equal(xi[:, :12] // G, (cell % 4).expand(2, -1))
        assert torch.equal(yi[:, :12] // G, (cell // 4).expand(2, -1))
    full = logits.flatten(1).log_softmax(-1).view(2, 20, 28)  # every point: the whole-image softmax
    assert torch.allclose(logp, full[torch.arange(2)[:, None], yi, xi])


def test_sample_policy_follows_peaks_and_carries_gradient():
    logits = torch.zeros(1, 1, 16, 16, requires_grad=True)
    peaks = [(3, 2), (12, 5), (1, 9), (14, 15)]  # (x, y), one per cell
    with torch.no_grad():
        for x, y in peaks:
            logits[0, 0, y, x] = 50.0
    pts, logp = sample_policy(logits, G, 0, "grid", torch.Generator().manual_seed(1))
    assert sorted(map(tuple, pts[0].long().tolist())) == sorted(peaks)
    assert torch.allclose(logp, torch.full_like(logp, -math.log(4)), atol=1e-5)  # 4 equal peaks in the image
    logp.sum().backward()
    assert logits.grad.abs().sum() > 0


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
    scaled = flat.clone()
    scaled[:, :, :8] = 30.0  # the image-wide softmax puts ~all mass in the top half; per region it is still flat
    assert spatial_entropy(scaled, 4).item() == pytest.approx(1.0, abs=1e-5)


def rewards_of(point: list[list[float]], counted: list[list[bool]]) -> dict[str, torch.Tensor]:
    p, c = torch.tensor(point), torch.tensor(counted)
    return {"point": p, "counted": c, "sequence": (p * c).sum(1) / c.sum(1).clamp_min(1)}


def test_leave_one_out():
    v = torch.tensor([1.0, 2.0, 3.0, 10.0])
    m = torch.tensor([True, True, True, False])
    assert leave_one_out(v, m).tolist() == pytest.approx([2.5, 2.0, 1.5, 2.0])
    assert leave_one_out(v[:1], m[:1]).tolist() == [0.0]


@pytest.mark.parametrize("kind", ["batch", "ema"])
def test_point_advantages_at_batch_size_one(kind):
    r = rewards_of([[0.5, 0.1, 0.4, 0.9]], [[True, True, True, False]])
    base = Baseline("point", kind)
    for _ in range(2):  # first step and, for ema, a step with history
        adv, b = base.advantages(r)
        assert adv.shape == (1, 4) and (adv[0, :3] != 0).all() and adv[0, 3] == 0
        base.update(r)
    adv, b = Baseline("point", "batch").advantages(r)
    assert adv[0, :3].tolist() == pytest.approx([0.25, -0.35, 0.1])  # each minus the mean of the others


def test_sequence_advantages_at_batch_size_one():
    r = rewards_of([[0.5, 0.1, 0.3]], [[True, True, False]])
    with pytest.raises(BadInputError, match="batch_size >= 2"):
        check_setup("sequence", "batch", 1)
    check_setup("sequence", "ema", 1)
    base = Baseline("sequence", "ema")
    adv, _ = base.advantages(r)  # no history and no other sequence: baseline 0, advantage = R
    assert adv[0].tolist() == pytest.approx([0.3, 0.3, 0.0])
    base.update(r)
    base.update(rewards_of([[0.1, 0.1, 0.1]], [[True, True, True]]))
    adv, b = base.advantages(r)
    assert adv[0, 0] == pytest.approx(0.3 - (0.9 * 0.3 + 0.1 * 0.1)) and adv[0, 0] == adv[0, 1] != 0
    two = rewards_of([[0.5, 0.1], [0.2, 0.2]], [[True, True], [True, True]])
    adv, _ = Baseline("sequence", "batch").advantages(two)  # leave-one-out over the other sequence
    assert adv[:, 0].tolist() == pytest.approx([0.1, -0.1])


def test_entropy_schedule_and_loss():
    assert entropy_weight_at(0, 100, [0.015, 0.005]) == pytest.approx(0.015)
    assert entropy_weight_at(50, 100, [0.015, 0.005]) == pytest.approx(0.010)
    assert entropy_weight_at(200, 100, [0.015, 0.005]) == pytest.approx(0.005)
    assert entropy_weight_at(7, 100, 0.01) == 0.01
    with pytest.raises(BadInputError, match="START END"):
        entropy_weight_at(0, 100, [0.1, 0.2, 0.3])
    assert entropy_weight_at(7, 100, [0.01]) == 0.01  # the command line gives a one-element list
    logp = torch.tensor([[-1.0, -2.0, -3.0]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 0.0]])
    loss = policy_loss(logp, adv, torch.tensor([[True, True, False]]), torch.tensor(0.5), 0.1)
    assert loss.item() == pytest.approx(-(-1.0 + 2.0) / 2 - 0.05)
    loss.backward()
    assert logp.grad.tolist() == [[-0.5, 0.5, 0.0]]  # raises the log-prob of the better-than-baseline point
