"""The ``Frame`` record that travels from the source through the front-end to the odometry.

A :mod:`vo_app.sources` source yields ``Frame`` records (index, timestamp, image, K, ground-truth
pose, file path, RGB copy); the :class:`~frontend.engine.ExtractionEngine` and the
:class:`~frontend.tracker.Tracker` return copies of the same record with the features and the
track ids filled in, so one record flows from the source to the odometry without re-packing.

Pixel, feature and pose conventions are those of :mod:`models.conventions`; this module only
adds the per-frame bookkeeping (index, timestamp, intrinsics, track ids, source data).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.conventions import Features

ImageLike = np.ndarray | torch.Tensor


@dataclass
class Frame:
    """One image and what the front-end learnt about it.

    Attributes:
        index: position in the sequence (0-based, strictly increasing within a run).
        image: the image as the source gave it: ``H x W`` (or ``H x W x 3``) ``uint8`` numpy, or a
            tensor ``[H, W]`` / ``[C, H, W]`` (``uint8``, or float in ``[0, 1]``).
        timestamp: seconds, ``None`` when the source has no clock.
        K: ``3 x 3`` float64 intrinsics, ``None`` when unknown.
        keypoints: ``[N, 2]`` float32 pixels, ``None`` before extraction.
        scores: ``[N]`` float32.
        descriptors: ``[N, D]`` float32, L2-normalised.
        track_ids: ``[N]`` int64, ``-1`` for a keypoint that belongs to no track; ``None`` before tracking.
        pose: ``T_world_cam`` 4x4 float64 ground truth, ``None`` when unknown.
        path: file the image came from, ``None`` when it came from no file (video, webcam, demo).
        colour: ``H x W x 3`` uint8 RGB copy of ``image``, ``None`` unless the source delivers colour.
    """

    index: int
    image: ImageLike
    timestamp: float | None = None
    K: np.ndarray | None = None
    keypoints: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    descriptors: torch.Tensor | None = None
    track_ids: torch.Tensor | None = None
    pose: np.ndarray | None = None
    path: Path | None = None
    colour: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.K is not None:
            self.K = np.asarray(self.K, dtype=np.float64)
            if self.K.shape != (3, 3):
                raise ValueError(f"K must be 3x3, got shape {self.K.shape}")

    @property
    def image_hw(self) -> tuple[int, int]:
        """``(H, W)`` of the image, whatever its layout."""
        if isinstance(self.image, np.ndarray):
            return int(self.image.shape[0]), int(self.image.shape[1])
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    @property
    def has_features(self) -> bool:
        return self.keypoints is not None and self.descriptors is not None

    @property
    def num_keypoints(self) -> int:
        return 0 if self.keypoints is None else int(self.keypoints.shape[0])

    @property
    def features(self) -> Features:
        """The :class:`~models.conventions.Features` view of this frame (raises before extraction)."""
        if not self.has_features:
            raise ValueError(f"frame {self.index} has no features yet; run it through an ExtractionEngine")
        return Features(keypoints=self.keypoints, scores=self.scores, descriptors=self.descriptors)

    def with_features(self, feats: Features) -> Frame:
        """A copy carrying ``feats`` (and no track ids yet)."""
        return dataclasses.replace(
            self,
            keypoints=feats["keypoints"],
            scores=feats["scores"],
            descriptors=feats["descriptors"],
            track_ids=None,
        )
