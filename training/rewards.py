"""Stage-2 policy sampling and the track-aware reward (DESIGN §3), all vectorised.

Shapes: ``B`` sequences, ``V`` other views, ``N`` sampled points; points are ``(x, y)`` pixels.
A point's reward in one covisible view is 0 unless the frozen descriptors at the two locations
have cosine similarity above ``sim_thresh``; otherwise it is the mean of

* consistency: the fraction of the target cell's logits that are below the logit at the warped
  point (1 = the policy would pick exactly this pixel again in the target view), and
* distinctiveness: ``clip((t - r) / t, 0, 1)`` with ``r`` Lowe's ratio between the distance to the
  true partner and to the nearest other sampled point in the target view, ``t = ratio_thresh``.

Its reward is the mean over its covisible views; the sequence reward is the mean over points
with at least one covisible view.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from models.sampling import pixels_to_grid

Strategy = Literal["hybrid", "grid", "global"]


def cells(x: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, 1, H, W]`` -> ``[B, (H/size)*(W/size), size*size]`` (row-major cells, row-major pixels)."""
    b, _, h, w = x.shape
    x = x[..., : h // size * size, : w // size * size]
    t = x.unfold(2, size, size).unfold(3, size, size)  # [B, 1, gh, gw, s, s]
    return t.reshape(b, -1, size * size)


def sample_policy(
    logits: torch.Tensor,
    grid: int,
    num_global: int,
    strategy: Strategy = "hybrid",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample keypoints from the policy; return ``points [B, N, 2]`` and their ``log_probs [B, N]``.

    Grid samples: one Categorical draw over each ``grid x grid`` cell's logits (log-prob under that
    cell's softmax). Global samples: ``num_global`` draws from the softmax over the whole image.
    """
    b, _, h, w = logits.shape
    pts, logps = [], []
    if strategy in ("grid", "hybrid"):
        c = cells(logits, grid)
        logp = c.log_softmax(-1)
        idx = torch.multinomial(logp.exp().reshape(-1, grid * grid), 1, generator=generator).view(b, -1)
        gw = w // grid
        cell = torch.arange(c.shape[1], device=logits.device)
        x = (cell % gw) * grid + idx % grid
        y = (cell // gw) * grid + idx // grid
        pts.append(torch.stack([x, y], -1))
        logps.append(logp.gather(2, idx[..., None])[..., 0])
    if strategy in ("global", "hybrid") and num_global > 0:
        logp = logits.flatten(1).log_softmax(-1)
        idx = torch.multinomial(logp.exp(), num_global, replacement=True, generator=generator)
        pts.append(torch.stack([idx % w, idx // w], -1))
        logps.append(logp.gather(1, idx))
    return torch.cat(pts, 1).float(), torch.cat(logps, 1)


def sample_at(dense: torch.Tensor, pts: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinear samples of ``dense [B, C, h, w]`` at image pixels ``pts [B, N, 2]`` -> ``[B, N, C]``."""
    grid = pixels_to_grid(pts, image_hw).to(dense.dtype)[:, None]
    return F.grid_sample(dense, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0].transpose(
        1, 2
    )


def consistency_reward(logits: torch.Tensor, pts: torch.Tensor, grid: int) -> torch.Tensor:
    """Rank in ``[0, 1]`` of the logit at ``pts [B, N, 2]`` among the logits of its grid cell."""
    b, _, h, w = logits.shape
    value = sample_at(logits, pts, (h, w))[..., 0]
    c = cells(logits, grid)
    gx = (pts[..., 0].round().clamp(0, w - 1) // grid).long().clamp(max=w // grid - 1)
    gy = (pts[..., 1].round().clamp(0, h - 1) // grid).long().clamp(max=h // grid - 1)
    cell = c.gather(1, (gy * (w // grid) + gx)[..., None].expand(-1, -1, grid * grid))
    return (cell < value[..., None]).float().sum(-1) / (grid * grid - 1)


def distinctiveness_reward(
    ref: torch.Tensor, tgt: torch.Tensor, valid: torch.Tensor, ratio_thresh: float = 0.85
) -> torch.Tensor:
    """Ratio-test reward for ``ref [B, N, D]`` vs its partner ``tgt [B, N, D]`` among valid ``tgt``."""
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
    covisible: torch.Tensor,
    grid: int,
    sim_thresh: float,
    ratio_thresh: float,
) -> dict[str, torch.Tensor]:
    """Per-point track-aware reward.

    Args:
        ref_desc: ``[B, N, D]`` frozen descriptors at the sampled points in the reference view.
        tgt_desc: ``[B, V, N, D]`` descriptors at the warped points in each other view.
        tgt_logits: ``[B, V, 1, H, W]`` policy logits of the other views (no gradient).
        warped: ``[B, V, N, 2]`` sampled points warped into each other view.
        covisible: ``[B, V, N]`` bool.
    Returns:
        ``point [B, N]`` rewards, ``covisible [B, N]`` (seen in >= 1 view), ``sequence [B]``, and
        the mean components ``consistency``, ``distinctiveness``, ``similar`` for logging.
    """
    b, v, n, _ = warped.shape
    sim = (ref_desc[:, None] * tgt_desc).sum(-1)  # [B, V, N]
    similar = covisible & (sim > sim_thresh)
    cons = consistency_reward(tgt_logits.flatten(0, 1), warped.flatten(0, 1), grid).view(b, v, n)
    dist = distinctiveness_reward(
        ref_desc[:, None].expand(-1, v, -1, -1).flatten(0, 1),
        tgt_desc.flatten(0, 1),
        covisible.flatten(0, 1),
        ratio_thresh,
    ).view(b, v, n)
    per_view = torch.where(similar, 0.5 * (cons + dist), torch.zeros_like(cons))
    count = covisible.sum(1)
    point = per_view.sum(1) / count.clamp_min(1)
    seen = count > 0
    sequence = (point * seen).sum(1) / seen.sum(1).clamp_min(1)
    m = covisible.float().sum().clamp_min(1)
    return {
        "point": point,
        "covisible": seen,
        "sequence": sequence,
        "consistency": (cons * covisible).sum() / m,
        "distinctiveness": (dist * covisible).sum() / m,
        "similar": similar.float().sum() / m,
    }


def spatial_entropy(logits: torch.Tensor, regions: int = 16) -> torch.Tensor:
    """Mean normalised entropy of the policy within each of ``regions x regions`` image regions."""
    b, _, h, w = logits.shape
    ch, cw = h // regions, w // regions
    p = logits[..., : ch * regions, : cw * regions].flatten(1).softmax(-1).view(b, 1, ch * regions, cw * regions)
    t = p.unfold(2, ch, ch).unfold(3, cw, cw).reshape(b, regions * regions, ch * cw)
    t = t / t.sum(-1, keepdim=True).clamp_min(1e-12)
    ent = -(t * t.clamp_min(1e-12).log()).sum(-1) / torch.log(torch.tensor(float(ch * cw)))
    return ent.mean()
