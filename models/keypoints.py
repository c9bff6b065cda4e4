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
    keep = nms_mask(scores, radius) & (scores > threshold)
    if border > 0:
        edge = torch.zeros_like(keep)
        edge[..., border : h - border, border : w - border] = True
        keep &= edge
    masked = torch.where(keep, scores, torch.full_like(scores, -1.0)).flatten(1)
    k = masked.shape[1] if num_keypoints is None else min(num_keypoints, masked.shape[1])
    top, idx = masked.topk(k, dim=1)
    xy = torch.stack([idx % w, idx // w], dim=-1).to(scores.dtype)
    valid = top > -1.0
    kpts = [xy[i][valid[i]] for i in range(b)]
    vals = [top[i][valid[i]] for i in range(b)]
    return kpts, vals


def refine_subpixel(scores: torch.Tensor, keypoints: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Shift integer keypoints ``[N, 2]`` of one map ``[1, H, W]`` by a soft-argmax in a window.

    Cheap quadratic-free refinement: the offset is the score-weighted mean position within the
    ``(2r+1)^2`` window, which is exact for symmetric peaks and bounded by ``radius``.
    """
    if keypoints.numel() == 0:
        return keypoints
    k = 2 * radius + 1
    patches = F.unfold(scores[None], k, padding=radius)[0]  # [k*k, H*W]
    h, w = scores.shape[-2:]
    flat = keypoints[:, 1].long() * w + keypoints[:, 0].long()
    p = patches[:, flat].T  # [N, k*k]
    p = p - p.min(dim=1, keepdim=True).values
    p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-8)
    r = torch.arange(-radius, radius + 1, device=scores.device, dtype=scores.dtype)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    off = torch.stack([(p * dx.reshape(1, -1)).sum(1), (p * dy.reshape(1, -1)).sum(1)], dim=-1)
    return keypoints + off
