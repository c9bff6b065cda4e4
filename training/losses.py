"""Stage-1 losses: dual-softmax descriptor loss and matchability supervision.

Correspondences come from a dense ground-truth warp: cells of view A (stride-8 centres) that
land inside view B. The descriptor loss is the cross-entropy of the dual-softmax matching
distribution at the true correspondence, in both directions (rows and columns). Matchability is
trained to predict whether a cell's descriptor is matched correctly (mutual arg-max hits the true
partner), a per-cell reliability like XFeat's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.conventions import cell_centres
from models.sampling import sample_descriptors, sample_map
from training.warping import in_bounds, warp_item


def dual_softmax_loss(
    d0: torch.Tensor, d1: torch.Tensor, temperature: float = 20.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss for corresponding rows of ``d0 [N, D]`` and ``d1 [N, D]``; also returns correctness ``[N]``."""
    sim = d0 @ d1.T * temperature
    target = torch.arange(len(d0), device=d0.device)
    loss = 0.5 * (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target))
    with torch.no_grad():
        correct = (sim.argmax(1) == target) & (sim.argmax(0) == target)
    return loss, correct


def pair_loss(
    out_a: dict[str, torch.Tensor],
    out_b: dict[str, torch.Tensor],
    pts_a: torch.Tensor,
    pts_b: torch.Tensor,
    image_hw: tuple[int, int],
    temperature: float = 20.0,
) -> dict[str, torch.Tensor]:
    """Losses of one pair given corresponding pixel positions ``pts_a``, ``pts_b`` ``[N, 2]``.

    ``out_*`` hold one image's ``descriptors [1, D, h, w]`` and ``matchability [1, 1, h, w]``.
    """
    da = sample_descriptors(out_a["descriptors"], pts_a[None], image_hw)[0]
    db = sample_descriptors(out_b["descriptors"], pts_b[None], image_hw)[0]
    desc_loss, correct = dual_softmax_loss(da, db, temperature)
    ma = sample_map(out_a["matchability"], pts_a[None], image_hw)[0]
    mb = sample_map(out_b["matchability"], pts_b[None], image_hw)[0]
    target = correct.float()
    match_loss = 0.5 * (
        F.binary_cross_entropy(ma.clamp(1e-6, 1 - 1e-6), target)
        + F.binary_cross_entropy(mb.clamp(1e-6, 1 - 1e-6), target)
    )
    return {"descriptor": desc_loss, "matchability": match_loss, "accuracy": target.mean()}


def grid_correspondences(
    item: dict[str, torch.Tensor],
    image_hw: tuple[int, int],
    stride: int,
    max_points: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres of view 0 of a two-view ``item`` that are covisible in view 1, subsampled.

    Items with sparse ground truth (SfM: ``tracks [2, M, 2]``, ``track_valid [2, M]``) give their
    correspondences instead (already one per cell). Returns pixel positions ``pts_0``, ``pts_1`` ``[N, 2]``.
    """
    h, w = image_hw
    if "tracks" in item:
        pts_a, pts_b = item["tracks"][0], item["tracks"][1]
        ok = item["track_valid"][0] & item["track_valid"][1]
        ok &= in_bounds(pts_a, image_hw, 2.0) & in_bounds(pts_b, image_hw, 2.0)
    else:
        pts_a = cell_centres(h // stride, w // stride, stride)
        pts_b, ok = warp_item(item, 0, 1, pts_a, margin=2.0)
    idx = torch.nonzero(ok)[:, 0]
    if len(idx) > max_points:
        idx = idx[torch.randperm(len(idx), generator=generator)[:max_points]]
    return pts_a[idx], pts_b[idx]
