"""Sampling of dense descriptor maps at keypoint locations."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F


def pixels_to_grid(keypoints: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Map pixel coordinates ``[..., 2]`` to ``grid_sample``'s ``[-1, 1]`` (align_corners=False).

    With the convention that pixel centres are integers, the image spans ``[-0.5, W - 0.5]``,
    which is exactly ``[-1, 1]`` for ``align_corners=False`` at any map stride.
    """
    h, w = image_hw
    size = keypoints.new_tensor([w, h])
    return (keypoints + 0.5) / size * 2 - 1


def sample_descriptors(
    dense: torch.Tensor,
    keypoints: torch.Tensor,
    image_hw: tuple[int, int],
    mode: Literal["bilinear", "bicubic"] = "bilinear",
) -> torch.Tensor:
    """Sample ``dense [B, D, h, w]`` at ``keypoints [B, N, 2]`` (image pixels) -> ``[B, N, D]``.

    The output is L2-normalised; ``N = 0`` gives ``[B, 0, D]``.
    """
    b, d = dense.shape[:2]
    if keypoints.shape[1] == 0:
        return dense.new_zeros(b, 0, d)
    grid = pixels_to_grid(keypoints, image_hw).to(dense.dtype)[:, None]  # [B, 1, N, 2]
    desc = F.grid_sample(dense, grid, mode=mode, padding_mode="border", align_corners=False)[:, :, 0]  # [B, D, N]
    # F.normalize's norm over D of this [B, D, N] layout is ~6x slower than the sum of squares
    # (0.12 against 0.02 ms for 1024 x 64, 2 threads); the same eps (1e-12 on the norm)
    return (desc * desc.square().sum(1, keepdim=True).clamp_min(1e-24).rsqrt()).transpose(1, 2)


def sample_map(dense: torch.Tensor, keypoints: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """Bilinearly sample a single-channel map ``[B, 1, h, w]`` at ``[B, N, 2]`` -> ``[B, N]``."""
    if keypoints.shape[1] == 0:
        return dense.new_zeros(dense.shape[0], 0)
    grid = pixels_to_grid(keypoints, image_hw).to(dense.dtype)[:, None]
    out = F.grid_sample(dense, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, 0, 0]
