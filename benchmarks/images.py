"""Image loading and resizing for the benchmarks, with the matching change of intrinsics.

Pixel convention (:mod:`models.conventions`): the centre of the top-left pixel is ``(0, 0)``.
Resizing by ``(sx, sy)`` therefore maps ``x -> sx * (x + 0.5) - 0.5``; :func:`scale_matrix` is that
map as a 3x3 matrix, so intrinsics become ``S @ K`` and homographies ``S1 @ H @ inv(S0)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from models.errors import BadInputError
from models.image_io import read_image

ResizeMode = Literal["none", "long", "short", "exact"]


@dataclass(frozen=True)
class Resize:
    """How a benchmark resizes images before extraction.

    ``mode``: ``"none"``; ``"long"`` / ``"short"`` scale so that the long / short side equals ``size``
    (aspect ratio kept, may enlarge); ``"exact"`` resizes to ``width x height``.
    """

    mode: ResizeMode = "none"
    size: int = 0  # target side for "long" / "short"
    width: int = 0  # target size for "exact"
    height: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("none", "long", "short", "exact"):
            raise BadInputError(f"unknown resize mode {self.mode!r}")
        if self.mode in ("long", "short") and self.size <= 0:
            raise BadInputError(f"resize {self.mode} side needs a positive size, got {self.size}")
        if self.mode == "exact" and (self.width <= 0 or self.height <= 0):
            raise BadInputError(f"exact resize needs a positive width and height, got {self.width}x{self.height}")

    def target(self, width: int, height: int) -> tuple[int, int]:
        """Output ``(width, height)`` for an input of ``width x height``."""
        if self.mode == "exact":
            return self.width, self.height
        if self.mode == "none":
            return width, height
        side = max(width, height) if self.mode == "long" else min(width, height)
        scale = self.size / side
        return max(1, round(width * scale)), max(1, round(height * scale))

    def describe(self) -> str:
        """A short text for result files and cache keys, e.g. ``"long side 1200"``."""
        if self.mode == "exact":
            return f"exact {self.width}x{self.height}"
        return "none" if self.mode == "none" else f"{self.mode} side {self.size}"


@dataclass
class LoadedImage:
    """A grey image ready for extraction, and how it relates to the file on disk."""

    image: np.ndarray  # H x W uint8, after resizing
    original_size: tuple[int, int]  # (width, height) of the file
    scale: tuple[float, float]  # (sx, sy): resized = sx * (original + 0.5) - 0.5

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` after resizing."""
        return self.image.shape[1], self.image.shape[0]


def scale_matrix(sx: float, sy: float) -> np.ndarray:
    """3x3 map from original to resized pixel coordinates (pixel-centre convention)."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def to_original(points: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Map ``points [N, 2]`` from resized back to original pixel coordinates."""
    s = np.asarray(scale, dtype=np.float64)
    return (points.astype(np.float64) + 0.5) / s - 0.5


def load_image(path: str | Path, resize: Resize = Resize()) -> LoadedImage:
    """Read ``path`` as grey and resize it; raise one clear error for a missing or corrupt file."""
    img = read_image(path, grey=True)
    h, w = img.shape
    tw, th = resize.target(w, h)
    if (tw, th) != (w, h):
        interp = cv2.INTER_AREA if tw * th < w * h else cv2.INTER_LINEAR
        img = cv2.resize(img, (tw, th), interpolation=interp)
    return LoadedImage(image=img, original_size=(w, h), scale=(tw / w, th / h))
