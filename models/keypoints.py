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


SUBPIXEL_METHODS = ("quadratic", "centroid")


def _windows(
    scores: torch.Tensor, keypoints: torch.Tensor, radius: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``(2r+1)^2`` windows ``[N, k*k]`` of map ``[1, H, W]`` around integer ``keypoints [N, 2]``.

    Also returns the window's x and y offsets ``[1, k*k]``. Only the ``N`` windows are gathered
    (replicate padding at the border, by clamped indices), never the whole map.
    """
    h, w = scores.shape[-2:]
    r = torch.arange(-radius, radius + 1, device=scores.device)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)
    xi = (keypoints[:, 0].long().clamp(0, w - 1)[:, None] + dx).clamp(0, w - 1)  # clamping = replicate padding
    yi = (keypoints[:, 1].long().clamp(0, h - 1)[:, None] + dy).clamp(0, h - 1)
    return scores.reshape(h, w)[yi, xi], dx, dy


def _quadratic_offset(p: torch.Tensor) -> torch.Tensor:
    """Sub-pixel peak ``[N, 2]`` (x, y) of 3x3 windows ``p [N, 9]`` by a 2-D quadratic fit.

    The Newton step ``-H^-1 g`` of the window's finite-difference gradient and Hessian (SIFT's
    refinement, Lowe 2004 section 4), exact for a peak whose log-score is quadratic (a Gaussian blob in
    probability) and invariant to any positive affine rescaling of the scores, so raw logits, min-max
    scores and log-probabilities all give the same point. Where the Hessian is not negative-definite
    or the step leaves the centre pixel, each axis gets its own 1-D parabola vertex instead; every
    offset is clamped to half a pixel, so a keypoint never leaves its NMS cell.
    """
    p = p.double().reshape(-1, 3, 3)  # [N, y, x]
    c = p[:, 1, 1]
    gx = (p[:, 1, 2] - p[:, 1, 0]) / 2
    gy = (p[:, 2, 1] - p[:, 0, 1]) / 2
    hxx = p[:, 1, 2] - 2 * c + p[:, 1, 0]
    hyy = p[:, 2, 1] - 2 * c + p[:, 0, 1]
    hxy = (p[:, 2, 2] - p[:, 2, 0] - p[:, 0, 2] + p[:, 0, 0]) / 4
    det = hxx * hyy - hxy * hxy
    safe = torch.where(det.abs() > 1e-12, det, torch.ones_like(det))
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(hxx * gy - hxy * gx) / safe
    newton = (det > 1e-12) & (hxx < 0) & (ox.abs() <= 0.5) & (oy.abs() <= 0.5)
    # 1-D vertices where the axis curves down (the clamp only keeps the unused branch finite)
    ax = torch.where(hxx < -1e-12, -gx / hxx.clamp(max=-1e-12), torch.zeros_like(hxx))
    ay = torch.where(hyy < -1e-12, -gy / hyy.clamp(max=-1e-12), torch.zeros_like(hyy))
    off = torch.stack([torch.where(newton, ox, ax), torch.where(newton, oy, ay)], dim=-1)
    return off.clamp(-0.5, 0.5)


def refine_subpixel(
    scores: torch.Tensor, keypoints: torch.Tensor, radius: int = 1, method: str = "quadratic"
) -> torch.Tensor:
    """Shift integer keypoints ``[N, 2]`` of one map ``[1, H, W]`` to the sub-pixel peak.

    ``method``:
      - ``"quadratic"`` (default): 2-D quadratic fit of the 3x3 neighbourhood (see
        :func:`_quadratic_offset`); ``radius`` is ignored. Scale-invariant, so a sharp logit peak
        still moves by its true sub-pixel amount.
      - ``"centroid"``: the (min-subtracted) score-weighted mean position in the ``(2r+1)^2`` window.
        Exact only for symmetric peaks; on sharp peaks of unnormalised logits it barely moves, which
        left half of the keypoints on the integer lattice (``benchmarks.tracking``).
    """
    if method not in SUBPIXEL_METHODS:
        raise ValueError(f"sub-pixel method must be one of {SUBPIXEL_METHODS}, got {method!r}")
    if keypoints.numel() == 0:
        return keypoints
    if method == "quadratic":
        p, _, _ = _windows(scores, keypoints, 1)
        return keypoints + _quadratic_offset(p).to(keypoints.dtype)
    p, dx, dy = _windows(scores, keypoints, radius)
    p = p - p.min(dim=1, keepdim=True).values
    p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-8)
    off = torch.stack([(p * dx).sum(1), (p * dy).sum(1)], dim=-1).to(keypoints.dtype)
    return keypoints + off
