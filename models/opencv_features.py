"""OpenCV baselines (ORB, SIFT) behind the common :class:`~models.base.Extractor` interface."""

from __future__ import annotations

from abc import abstractmethod

import cv2
import numpy as np
import torch

from .base import Extractor
from .conventions import Features, empty_features
from .image_io import rgb_to_grey


def _unpack_binary(desc: np.ndarray) -> np.ndarray:
    """ORB bytes ``[N, 32]`` -> ``+-1/sqrt(256)`` floats, so dot product = 1 - 2 * hamming / 256."""
    bits = np.unpackbits(desc, axis=1).astype(np.float32)
    return ((bits * 2 - 1) / np.sqrt(bits.shape[1])).astype(np.float32)


class OpenCVExtractor(Extractor):
    """Runs an OpenCV detector/descriptor per image (OpenCV releases the GIL and uses its threads)."""

    binary = False

    def __init__(self, num_keypoints: int = 2048) -> None:
        super().__init__(num_keypoints)
        self._k = None
        self._cv = None

    def _detector(self, k: int):
        if self._cv is None or self._k != k:
            self._cv, self._k = self.create(k), k
        return self._cv

    @abstractmethod
    def create(self, k: int):
        """The OpenCV feature object for a budget of ``k`` keypoints."""

    def extract(self, images: torch.Tensor, num_keypoints: int | None = None) -> list[Features]:
        """Features for ``images [B, C, H, W]`` in ``[0, 1]``."""
        k = self.num_keypoints if num_keypoints is None else num_keypoints
        if images.shape[1] == 3:
            images = rgb_to_grey(images)
        arr = (images[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return [self.extract_grey(a, k) for a in arr]

    def extract_grey(self, grey: np.ndarray, k: int) -> Features:
        """Detect at most ``k`` keypoints on one ``uint8`` grey image."""
        if k <= 0:
            return empty_features(self.descriptor_dim)
        kps, desc = self._detector(k).detectAndCompute(grey, None)
        if desc is None or len(kps) == 0:
            return empty_features(self.descriptor_dim)
        resp = np.array([p.response for p in kps], dtype=np.float32)
        order = np.argsort(-resp, kind="stable")[:k]
        xy = np.array([p.pt for p in kps], dtype=np.float32)[order]
        desc = desc[order]
        d = _unpack_binary(desc) if self.binary else desc.astype(np.float32)
        d /= np.linalg.norm(d, axis=1, keepdims=True).clip(1e-8)
        return Features(
            keypoints=torch.from_numpy(xy),
            scores=torch.from_numpy(resp[order]),
            descriptors=torch.from_numpy(np.ascontiguousarray(d)),
        )


class ORB(OpenCVExtractor):
    """OpenCV ORB (FAST + rBRIEF, 8 pyramid levels); binary descriptors matched by MNN."""

    name = "orb"
    descriptor_dim = 256
    binary = True
    default_matcher = "mnn"

    def create(self, k: int):
        return cv2.ORB_create(nfeatures=k, fastThreshold=10)


class SIFT(OpenCVExtractor):
    """OpenCV SIFT with root-SIFT-free L2 descriptors, matched by mutual ratio test (0.8)."""

    name = "sift"
    descriptor_dim = 128
    default_matcher = "ratio"
    matcher_kwargs = {"ratio": 0.8}
    # scale-space sub-pixel keypoints (0.12 px median on the demo): LK refinement raised its drift
    # 0.13 -> 0.18 px and its demo:1200 ATE 0.23 -> 0.29-0.37 % (frontend/README.md)
    track_refine = "off"

    def create(self, k: int):
        return cv2.SIFT_create(nfeatures=k, contrastThreshold=0.02)
