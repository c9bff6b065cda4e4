"""Keypoint selection from a dense score/logit map: normalisation, NMS, threshold, top-k.

Everything is vectorised over the batch; no Python loop visits a keypoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def minmax_normalise(logits: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each image of ``[B, 1, H, W]`` to ``[0, 1]`` (the paper's inference normalisation)."""
    lo, span = minmax_range(logits, eps)
    return (logits - lo.view(-1, 1, 1, 1)) / span.view(-1, 1, 1, 1)


def minmax_range(scores: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image ``(min [B], max(max - min, eps) [B])``: enough to normalise only what is kept."""
    dims = tuple(range(1, scores.dim()))  # amin/amax over dims: ~10x faster than aminmax on the CPU
    lo, hi = scores.amin(dim=dims), scores.amax(dim=dims)
    return lo, (hi - lo).clamp_min(eps)


def window_max(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the ``(2r+1)^2`` window of every pixel of ``[..., H, W]`` (outside = -inf).

    Separable, and each pass is ``2r`` element-wise maxima of shifted views: an order of magnitude
    faster on the CPU than a stride-1 ``max_pool2d`` at KITTI size (1.4 vs 17 ms, measured).
    """
    h, w = scores.shape[-2:]
    n = 2 * radius + 1
    padded = F.pad(scores, (radius, radius), value=float("-inf"))
    rows = padded[..., :w]
    for i in range(1, n):
        rows = torch.maximum(rows, padded[..., i : i + w])
    padded = F.pad(rows, (0, 0, radius, radius), value=float("-inf"))
    out = padded[..., :h, :]
    for i in range(1, n):
        out = torch.maximum(out, padded[..., i : i + h, :])
    return out


def nms_mask(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Boolean ``[B, 1, H, W]``: pixels that are the maximum of their ``(2r+1)^2`` window.

    Ties on plateaus keep every tied pixel; the top-k step then breaks them.
    """
    if radius <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    return scores == window_max(scores, radius)


def select_keypoints(
    scores: torch.Tensor,
    num_keypoints: int | None,
    radius: int = 2,
    threshold: float | torch.Tensor = 0.0,
    border: int = 4,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pick keypoints from a score map ``[B, 1, H, W]``.

    ``threshold`` is a float or a per-image ``[B]`` tensor; a kept pixel must exceed it.
    Returns per image ``keypoints [N, 2]`` (x, y pixels) and ``scores [N]``, strongest first.
    ``num_keypoints=None`` keeps every NMS peak above ``threshold``.
    """
    if scores.dim() != 4 or scores.shape[1] != 1:
        raise ValueError(f"score map must be [B, 1, H, W], got {tuple(scores.shape)}")
    b, _, h, w = scores.shape
    thr = torch.as_tensor(threshold, dtype=scores.dtype, device=scores.device).reshape(-1, 1, 1, 1)
    keep = nms_mask(scores, radius) & (scores > thr)
    if border > 0:  # in-place slices on the fresh mask: cheaper than building a border mask
        keep[..., :border, :] = False
        keep[..., h - border :, :] = False
        keep[..., :, :border] = False
        keep[..., :, w - border :] = False
    flat, keep = scores.reshape(b, -1), keep.reshape(b, -1)
    kpts, vals = [], []
    for i in range(b):  # a loop over images: top-k among the NMS peaks only (~1 % of the pixels)
        idx = keep[i].nonzero()[:, 0]
        val = flat[i, idx]
        if num_keypoints is not None and num_keypoints < len(idx):
            val, order = val.topk(num_keypoints)
        else:
            val, order = val.sort(descending=True)
        idx = idx[order]
        kpts.append(torch.stack([idx % w, idx // w], dim=-1).to(scores.dtype))
        vals.append(val)
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
