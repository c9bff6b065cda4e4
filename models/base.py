"""The one extractor interface every method (TraqPoint, ALIKE, ORB, SIFT) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from .conventions import Features
from .image_io import to_tensor


class Extractor(ABC):
    """Images in, one :class:`~models.conventions.Features` dict per image out.

    Subclasses implement :meth:`extract` on a batch tensor ``[B, C, H, W]`` in ``[0, 1]``.
    ``default_matcher`` names the matcher from :mod:`models.matchers` suited to the descriptor;
    ``track_refine`` how a tracker should place the continued tracks of this detector: ``"lk"``
    (Lucas-Kanade alignment to the previous frame, started at the detection: for detectors whose
    keypoints carry pixel-level noise) or ``"off"`` (the detection itself, for sub-pixel detectors
    such as SIFT, where frame-to-frame alignment only adds drift; ``benchmarks.tracking``).
    ``matcher_kwargs`` are the matcher's settings where a robust multi-view back-end follows
    (tracking, SfM); ``two_view_matcher_kwargs`` those for one two-view estimate on its own
    (relative pose, homography, ``models.match``), ``None`` meaning the same.
    """

    name: str = "extractor"
    descriptor_dim: int = 0
    default_matcher: str = "mnn"
    matcher_kwargs: dict = {}
    two_view_matcher_kwargs: dict | None = None
    track_refine: str = "lk"
    device: torch.device = torch.device("cpu")

    def __init__(self, num_keypoints: int = 2048) -> None:
        self.num_keypoints = num_keypoints

    @abstractmethod
    def extract(self, images: torch.Tensor, num_keypoints: int | None = None) -> list[Features]:
        """Detect and describe keypoints in ``images [B, C, H, W]`` (float in [0, 1])."""

    def extract_numpy(self, images: np.ndarray | list[np.ndarray], num_keypoints: int | None = None) -> list[Features]:
        """Convenience: numpy ``uint8`` image(s) of one size -> features on the CPU."""
        feats = self.extract(to_tensor(images, self.device), num_keypoints)
        return [{k: v.cpu() for k, v in f.items()} for f in feats]  # type: ignore[misc]

    def matcher_settings(self, two_view: bool = False) -> dict:
        """The default matcher's keyword arguments: for one two-view estimate, or for tracking and SfM."""
        if two_view and self.two_view_matcher_kwargs is not None:
            return dict(self.two_view_matcher_kwargs)
        return dict(self.matcher_kwargs)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, num_keypoints={self.num_keypoints})"
