"""Stage-2 keypoint sampling from the policy logits, the cell partition, and the per-region entropy.

Shapes: ``B`` images, ``N`` sampled points; points are ``(x, y)`` integer pixels (as floats).
Cells are ``size x size`` squares from the top-left corner; the last row/column of cells is
partial when ``size`` does not divide the image (its missing pixels are padding, never sampled
and never ranked), so every pixel belongs to exactly one cell at any resolution.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Strategy = Literal["hybrid", "grid", "global"]


def cell_grid(hw: tuple[int, int], size: int) -> tuple[int, int]:
    """Number of cell rows and columns covering an ``hw`` image (partial border cells included)."""
    return -(-hw[0] // size), -(-hw[1] // size)


def cells(x: torch.Tensor, size: int, pad: float) -> torch.Tensor:
    """``[B, 1, H, W]`` -> ``[B, gh * gw, size * size]`` (row-major cells, row-major pixels).

    Pixels of partial border cells outside the image hold ``pad``.
    """
    b, _, h, w = x.shape
    gh, gw = cell_grid((h, w), size)
    x = F.pad(x, (0, gw * size - w, 0, gh * size - h), value=pad)
    t = x.unfold(2, size, size).unfold(3, size, size)  # [B, 1, gh, gw, s, s]
    return t.reshape(b, gh * gw, size * size)


def cell_of(pix: torch.Tensor, w: int, size: int) -> torch.Tensor:
    """Row-major cell index ``[...]`` of integer pixels ``pix [..., 2]`` (long)."""
    gw = -(-w // size)
    return (pix[..., 1] // size) * gw + pix[..., 0] // size


def sample_policy(
    logits: torch.Tensor,
    grid: int,
    num_global: int,
    strategy: Strategy = "hybrid",
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample keypoints from ``logits [B, 1, H, W]``; return ``points [B, N, 2]`` and ``log_probs [B, N]``.

    Grid samples: one draw from the softmax over each ``grid x grid`` cell (``N_grid`` = number of
    cells, partial border cells included). Global samples: ``num_global`` draws (with replacement)
    from the softmax over the whole image. Every log-probability is that of the image-wide softmax
    (the policy ``pi`` of the paper), whichever way the point was drawn.
    """
    b, _, h, w = logits.shape
    logp_image = logits.flatten(1).log_softmax(-1)  # [B, H*W]
    idx = []
    if strategy in ("grid", "hybrid"):
        c = cells(logits.detach(), grid, float("-inf"))
        gh, gw = cell_grid((h, w), grid)
        local = torch.multinomial(c.flatten(0, 1).softmax(-1), 1, generator=generator).view(b, -1)
        cell = torch.arange(gh * gw, device=logits.device)
        x = (cell % gw) * grid + local % grid
        y = (cell // gw) * grid + local // grid
        idx.append(y * w + x)
    if strategy in ("global", "hybrid") and num_global > 0:
        idx.append(torch.multinomial(logp_image.detach().exp(), num_global, replacement=True, generator=generator))
    if not idx:
        raise ValueError(f"sampling strategy {strategy!r} with {num_global} global samples draws no points")
    flat = torch.cat(idx, 1)
    pts = torch.stack([flat % w, flat // w], -1).float()
    return pts, logp_image.gather(1, flat)


def spatial_entropy(logits: torch.Tensor, regions: int = 16) -> torch.Tensor:
    """Per-region entropy of the image-wide policy, normalised to [0, 1], mean over regions and batch.

    The image is split into ``regions x regions`` equal regions (a remainder of fewer than
    ``regions`` pixels at the right/bottom is left out); within each, the policy is renormalised
    and its entropy divided by ``log(pixels per region)``: 1 = uniform in every region, 0 = one
    pixel per region. Differentiable in ``logits [B, 1, H, W]``; returns a scalar.
    """
    b, _, h, w = logits.shape
    ch, cw = h // regions, w // regions
    if ch * cw < 2:
        raise ValueError(f"{regions} x {regions} entropy regions need an image of at least {regions * 2} px")
    x = logits[..., : ch * regions, : cw * regions]
    t = x.unfold(2, ch, ch).unfold(3, cw, cw).reshape(b, regions * regions, ch * cw)
    # renormalising the image-wide softmax within a region = the softmax of the region's logits
    logp = t.log_softmax(-1)
    ent = -(logp.exp() * logp).sum(-1) / torch.log(torch.tensor(float(ch * cw)))
    return ent.mean()
