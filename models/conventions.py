"""Conventions shared by every layer of TraqPoint-VO (written once, followed everywhere).

Pixels
    Keypoints are ``(x, y)`` in pixels of the image they were detected in; the centre of the
    top-left pixel is ``(0, 0)``, so an image of width ``W`` spans ``x`` in ``[-0.5, W - 0.5]``.
    Dense maps at stride ``s`` have cell ``(i, j)`` centred on pixel
    ``(s * j + (s - 1) / 2, s * i + (s - 1) / 2)``.

Images
    Networks take ``float32`` tensors ``[B, C, H, W]`` in ``[0, 1]`` (``C`` = 1 grey or 3 RGB).
    The I/O helpers read ``H x W`` ``uint8`` grey (or ``H x W x 3`` RGB) numpy arrays.

Features
    One dict per image with the keys of :data:`FEATURE_KEYS`:
    ``keypoints [N, 2]`` float32 pixels, ``scores [N]`` float32 (higher is better),
    ``descriptors [N, D]`` float32, L2-normalised (binary descriptors such as ORB are stored as
    ``+-1 / sqrt(D)`` so that the dot product is an affine function of the Hamming distance).
    ``N`` may be 0; every consumer must accept that.

Matches
    ``matches [K, 2]`` int64 index pairs ``(i0, i1)`` into the two keypoint sets and
    ``match_scores [K]`` float32. Batched matchers use ``matches0 [B, N]`` with ``-1`` =
    unmatched, like LightGlue.

Poses
    ``T_world_cam`` 4x4 float64, camera-to-world, as in KITTI ground truth. A relative pose
    ``T_a_b`` maps points from frame ``b`` to frame ``a``. Camera frame: x right, y down,
    z forward (OpenCV).
"""

from __future__ import annotations

from typing import TypedDict

import torch

FEATURE_KEYS = ("keypoints", "scores", "descriptors")


class Features(TypedDict):
    """Features of one image; shapes as in the module docstring."""

    keypoints: torch.Tensor
    scores: torch.Tensor
    descriptors: torch.Tensor


def empty_features(dim: int, device: torch.device | str = "cpu") -> Features:
    """Return a valid feature dict with zero keypoints and descriptor size ``dim``."""
    return Features(
        keypoints=torch.zeros(0, 2, device=device),
        scores=torch.zeros(0, device=device),
        descriptors=torch.zeros(0, dim, device=device),
    )


def cell_centres(h: int, w: int, stride: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Pixel coordinates ``[h * w, 2]`` of the centres of an ``h x w`` grid at ``stride``."""
    off = (stride - 1) / 2.0
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32) * stride + off,
        torch.arange(w, device=device, dtype=torch.float32) * stride + off,
        indexing="ij",
    )
    return torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)


def rescale_pixels(points: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Pixel coordinates ``[..., 2]`` of an image resized by ``factor`` (a scalar or per-axis ``[2]``).

    Pixel centres are integers, so the image spans ``[-0.5, W - 0.5]`` and the map is
    ``x' + 0.5 = (x + 0.5) * factor`` (a stride-``s`` map to the image: ``factor = s``).
    """
    return (points + 0.5) * factor - 0.5
