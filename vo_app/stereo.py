"""Metric depth at keypoints from a rectified stereo pair (KITTI ``image_0``/``image_1``)."""

from __future__ import annotations

import cv2
import numpy as np


class StereoDepth:
    """Semi-global block matching; depth = fx * baseline / disparity, NaN where unknown."""

    def __init__(self, fx: float, baseline: float, max_disparity: int = 128) -> None:
        self.fx, self.baseline = fx, baseline
        self.sgbm = cv2.StereoSGBM_create(
            minDisparity=0,
            numDisparities=max_disparity,
            blockSize=5,
            P1=8 * 25,
            P2=32 * 25,
            uniquenessRatio=10,
            speckleWindowSize=100,
            speckleRange=2,
            mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
        )

    def at(self, left: np.ndarray, right: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
        """Depth in metres ``[N]`` at ``keypoints [N, 2]`` of the left image."""
        disp = self.sgbm.compute(left, right).astype(np.float32) / 16.0
        h, w = disp.shape
        ij = np.round(keypoints).astype(int)
        ok = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
        d = np.full(len(keypoints), np.nan)
        d[ok] = disp[ij[ok, 1], ij[ok, 0]]
        d[d <= 0.5] = np.nan
        return self.fx * self.baseline / d
