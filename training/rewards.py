"""The stage-2 track-aware reward (DESIGN §3, the authors' ``calculate_advanced_rewardv2``), vectorised.

Shapes: ``B`` sequences, ``V`` other views, ``N`` sampled points; points are ``(x, y)`` pixels.
Per target view a sampled point is out of view (not counted), in view but occluded (counted,
scores 0) or visible (see :mod:`training.view_warp`). A visible point scores 0 unless the frozen
descriptors at the two locations have cosine similarity above ``sim_thresh``; otherwise the mean
of two terms, each in [0, 1] (the authors add them, in [0, 2]; the mean keeps the reward in [0, 1]):

* consistency: ``r`` = the rank of the logit at the warped pixel within its ``rank_cell`` square
  cell of the target view (fraction of the cell's pixels with a lower logit; the logit and the
  cell are read at the same rounded pixel, so ``r < 1``), scored ``(r - t) / (1 - t)`` when
  ``r >= t`` and 0 below, with ``t = rank_thresh`` (authors: 0.2, cells of 60 px); ``rank_window``
  ``w > 0`` (ours) ranks it in the ``(2w + 1)^2`` window centred on the pixel instead;
* distinctiveness: ``clip((t - q) / t, 0, 1)`` with ``q`` Lowe's ratio between the descriptor
  distance to the true partner and to the nearest other visible sampled point in the target view,
  ``t = ratio_thresh`` (authors: 0.85).

A point's reward is the mean over the views it is counted in; the sequence reward is the mean
over points counted in at least one view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.policy_sampling import cell_of, cells


@dataclass(frozen=True)
class RewardConfig:
    """Thresholds of the reward (defaults: the authors' values)."""

    rank_cell: int = 60  # px, cell of the consistency rank
    rank_thresh: float = 0.2  # ranks below score 0; above, (r - t) / (1 - t)
    sim_thresh: float = 0.5  # descriptor cosine gate
    ratio_thresh: float = 0.85  # Lowe's ratio rewarded below this
    # ours, 0 = the authors' grid cells: rank within the (2 w + 1)^2 px window centred on the warped
    # pixel instead, i.e. whether the point would survive an NMS of radius w there (a peak, not a
    # high value in a large cell, which a smooth map also earns)
    rank_window: int = 0


def pixel_of(pts: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Nearest integer pixel ``[..., 2]`` (long) of ``pts [..., 2]``, clamped into the image."""
    h, w = hw
    pix = pts.round().long()
    return torch.stack([pix[..., 0].clamp(0, w - 1), pix[..., 1].clamp(0, h - 1)], -1)


def consistency_rank(logits: torch.Tensor, pts: torch.Tensor, cell: int) -> torch.Tensor:
    """Rank ``[B, N]`` in ``[0, 1)`` of the logit at pixel ``round(pts [B, N, 2])`` in its cell of
    ``logits [B, 1, H, W]``: the fraction of the cell's pixels whose logit is strictly lower."""
    b, _, h, w = logits.shape
    pix = pixel_of(pts, (h, w))
    value = logits[:, 0].flatten(1).gather(1, pix[..., 1] * w + pix[..., 0])  # [B, N]
    c = cells(logits, cell, float("nan"))  # NaN padding: never lower, never counted
    members = c.gather(1, cell_of(pix, w, cell)[..., None].expand(-1, -1, c.shape[-1]))  # [B, N, s*s]
    lower = (members < value[..., None]).sum(-1)
    return lower / (~members.isnan()).sum(-1)


def consistency_rank_centred(logits: torch.Tensor, pts: torch.Tensor, radius: int) -> torch.Tensor:
    """Rank ``[B, N]`` in ``[0, 1)`` of the logit at pixel ``round(pts [B, N, 2])`` among the
    ``(2 radius + 1)^2`` pixels of ``logits [B, 1, H, W]`` centred on it (the fraction with a strictly
    lower logit; pixels outside the image are not counted)."""
    b, _, h, w = logits.shape
    pix = pixel_of(pts, (h, w))
    r = int(radius)
    padded = torch.nn.functional.pad(logits[:, 0], (r, r, r, r), value=float("nan")).flatten(1)  # [B, (H+2r)(W+2r)]
    wp = w + 2 * r
    d = torch.arange(-r, r + 1, device=logits.device)
    offsets = (d[:, None] * wp + d[None, :]).flatten()  # [(2r+1)^2], row-major window
    centre = (pix[..., 1] + r) * wp + (pix[..., 0] + r)  # [B, N] in the padded map
    members = padded.gather(1, (centre[..., None] + offsets).flatten(1)).view(b, -1, len(offsets))
    value = padded.gather(1, centre)
    lower = (members < value[..., None]).sum(-1)
    return lower / (~members.isnan()).sum(-1)


def consistency_reward(rank: torch.Tensor, rank_thresh: float = 0.2) -> torch.Tensor:
    """The authors' thresholded rescaling of a rank in [0, 1]: ``(r - t) / (1 - t)`` if ``r >= t``, else 0."""
    return torch.where(rank >= rank_thresh, (rank - rank_thresh) / (1 - rank_thresh), torch.zeros_like(rank)).clamp(
        0, 1
    )


def distinctiveness_reward(
    ref: torch.Tensor, tgt: torch.Tensor, valid: torch.Tensor, ratio_thresh: float = 0.85
) -> torch.Tensor:
    """Ratio-test reward ``[B, N]`` of ``ref [B, N, D]`` vs its partner ``tgt [B, N, D]``; the
    competitors are the other ``valid [B, N]`` target points (none: the ratio is 0, reward 1)."""
    d = torch.cdist(ref, tgt)
    true = d.diagonal(dim1=1, dim2=2)
    eye = torch.eye(d.shape[1], dtype=torch.bool, device=d.device)[None]
    d = d.masked_fill(eye | ~valid[:, None, :], float("inf"))
    ratio = true / d.min(-1).values.clamp_min(1e-8)
    return ((ratio_thresh - ratio) / ratio_thresh).clamp(0, 1)


def track_reward(
    ref_desc: torch.Tensor,
    tgt_desc: torch.Tensor,
    tgt_logits: torch.Tensor,
    warped: torch.Tensor,
    in_view: torch.Tensor,
    visible: torch.Tensor,
    cfg: RewardConfig,
) -> dict[str, torch.Tensor]:
    """Per-point track-aware reward.

    Args:
        ref_desc: ``[B, N, D]`` unit descriptors at the sampled points of the reference view.
        tgt_desc: ``[B, V, N, D]`` unit descriptors at the warped points in each other view.
        tgt_logits: ``[B, V, 1, H, W]`` policy logits of the other views (no gradient).
        warped: ``[B, V, N, 2]`` sampled points warped into each other view.
        in_view: ``[B, V, N]`` bool, the point counts in that view.
        visible: ``[B, V, N]`` bool, in view and not occluded.
    Returns:
        ``point [B, N]`` rewards in [0, 1], ``counted [B, N]`` (in view in >= 1 view),
        ``sequence [B]``, and scalar means for logging: ``consistency``, ``rank``,
        ``distinctiveness`` (over visible point-views), ``similar`` and ``occluded`` (fractions of
        counted point-views).
    """
    b, v, n, _ = warped.shape
    visible = visible & in_view
    similar = visible & ((ref_desc[:, None] * tgt_desc).sum(-1) > cfg.sim_thresh)  # [B, V, N]
    if cfg.rank_window > 0:
        rank = consistency_rank_centred(tgt_logits.flatten(0, 1), warped.flatten(0, 1), cfg.rank_window)
    else:
        rank = consistency_rank(tgt_logits.flatten(0, 1), warped.flatten(0, 1), cfg.rank_cell)
    rank = rank.view(b, v, n)
    cons = consistency_reward(rank, cfg.rank_thresh)
    dist = distinctiveness_reward(
        ref_desc[:, None].expand(-1, v, -1, -1).flatten(0, 1),
        tgt_desc.flatten(0, 1),
        visible.flatten(0, 1),
        cfg.ratio_thresh,
    ).view(b, v, n)
    per_view = torch.where(similar, 0.5 * (cons + dist), torch.zeros_like(cons))
    count = in_view.sum(1)
    point = (per_view * in_view).sum(1) / count.clamp_min(1)
    counted = count > 0
    sequence = (point * counted).sum(1) / counted.sum(1).clamp_min(1)
    m_in, m_vis = in_view.float().sum().clamp_min(1), visible.float().sum().clamp_min(1)
    return {
        "point": point,
        "counted": counted,
        "sequence": sequence,
        "consistency": (cons * visible).sum() / m_vis,
        "rank": (rank * visible).sum() / m_vis,
        "distinctiveness": (dist * visible).sum() / m_vis,
        "similar": similar.float().sum() / m_in,
        "occluded": (in_view & ~visible).float().sum() / m_in,
    }
