"""Keypoint selection from a dense score/logit map: normalisation, NMS, threshold, top-k.

Everything is vectorised over the batch; no Python loop visits a keypoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def minmax_normalise(logits: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each image of ``[B, 1, H, W]`` to ``[0, 1]`` (the paper's inference normalisation)."""
    flat = logits.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
    hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
    return (logits - lo) / (hi - lo).clamp_min(eps)


def nms_mask(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean ``[B, 1, H, W]``: pixels that are the maximum of their ``(2r+1)^2`` window.

    Ties on plateaus keep every tied pixel; the top-k step then breaks them.
    """
    if radius <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    k = 2 * radius + 1
    # separable max-pool (row then column): the same window maximum at about half the cost
    pooled = F.max_pool2d(scores, (1, k), stride=1, padding=(0, radius))
    pooled = F.max_pool2d(pooled, (k, 1), stride=1, padding=(radius, 0))
    return scores == pooled


def select_keypoints(
    scores: torch.Tensor,
    num_keypoints: int | None,
    radius: int = 2,
    threshold: float = 0.0,
    border: int = 4,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pick keypoints from a normalised score map ``[B, 1, H, W]``.

    Returns per image ``keypoints [N, 2]`` (x, y pixels) and ``scores [N]``, strongest first.
    ``num_keypoints=None`` keeps every NMS peak above ``threshold``.
    """
    if scores.dim() != 4 or scores.shape[1] != 1:
        raise ValueError(f"score map must be [B, 1, H, W], got {tuple(scores.shape)}")
    b, _, h, w = scores.shape
    if num_keypoints is not None and radius > 0 and 4 * num_keypoints + 64 < h * w:
        out = _select_from_candidates(scores, num_keypoints, radius, threshold, border)
        if out is not None:
            return out
    keep = nms_mask(scores, radius) & (scores > threshold)
    masked = scores.masked_fill(~keep, -1.0)
    if border > 0:  # in-place slices on the fresh tensor: cheaper than building a border mask
        masked[..., :border, :] = -1.0
        masked[..., h - border :, :] = -1.0
        masked[..., :, :border] = -1.0
        masked[..., :, w - border :] = -1.0
    masked = masked.flatten(1)
    k = masked.shape[1] if num_keypoints is None else min(num_keypoints, masked.shape[1])
    top, idx = masked.topk(k, dim=1)
    xy = torch.stack([idx % w, idx // w], dim=-1).to(scores.dtype)
    valid = top > -1.0
    kpts = [xy[i][valid[i]] for i in range(b)]
    vals = [top[i][valid[i]] for i in range(b)]
    return kpts, vals


def _select_from_candidates(
    scores: torch.Tensor, k: int, radius: int, threshold: float, border: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]] | None:
    """NMS on the ``4k + 64`` highest pixels only (a full-map max-pool costs ~20 ms at KITTI size).

    Exact: a window maximum outside the candidates is lower than every candidate, so whenever
    ``k`` candidates survive they are the ``k`` strongest window maxima of the whole map. Returns
    ``None`` when fewer survive (the caller then runs the full-map NMS).
    """
    b, _, h, w = scores.shape
    flat = scores.flatten(1)
    val, idx = flat.topk(4 * k + 64, dim=1)  # [B, M], sorted
    x, y = idx % w, idx // w
    r = torch.arange(-radius, radius + 1, device=scores.device)
    dy, dx = (t.reshape(-1) for t in torch.meshgrid(r, r, indexing="ij"))
    nx = (x[..., None] + dx).clamp(0, w - 1)
    ny = (y[..., None] + dy).clamp(0, h - 1)
    window = flat.gather(1, (ny * w + nx).flatten(1)).view(b, -1, len(dx))
    keep = (val >= window.amax(-1)) & (val > threshold)
    keep &= (x >= border) & (x < w - border) & (y >= border) & (y < h - border)
    if int(keep.sum(1).min()) < k:
        return None
    kpts, vals = [], []
    for i in range(b):  # a loop over images, not keypoints
        sel = torch.nonzero(keep[i])[:k, 0]
        kpts.append(torch.stack([x[i, sel], y[i, sel]], -1).to(scores.dtype))
        vals.append(val[i, sel])
    return kpts, vals


def refine_subpixel(scores: torch.Tensor, keypoints: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Shift integer keypoints ``[N, 2]`` of one map ``[1, H, W]`` by a soft-argmax in a window.

    Cheap refinement: the offset is the (min-subtracted) score-weighted mean position within the
    ``(2r+1)^2`` window, exact for symmetric peaks and bounded by ``radius``. Only the ``N``
    windows are gathered, never the whole map.
    """
    if keypoints.numel() == 0:
        return keypoints
    h, w = scores.shape[-2:]
    padded = F.pad(scores.reshape(1, 1, h, w), (radius, radius, radius, radius), mode="replicate")[0, 0]
    r = torch.arange(-radius, radius + 1, device=scores.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)
    xi = keypoints[:, 0].long().clamp(0, w - 1)[:, None] + radius + dx
    yi = keypoints[:, 1].long().clamp(0, h - 1)[:, None] + radius + dy
    p = padded[yi, xi]  # [N, k*k]
    p = p - p.min(dim=1, keepdim=True).values
    p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-8)
    off = torch.stack([(p * dx).sum(1), (p * dy).sum(1)], dim=-1).to(keypoints.dtype)
    return keypoints + off
