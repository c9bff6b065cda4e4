"""Geometric verification of matched keypoints (numpy, pixel conventions of :mod:`models.conventions`)."""

from __future__ import annotations

import cv2
import numpy as np

MIN_FUNDAMENTAL_MATCHES = 8  # the 8-point minimal set of USAC's final fit


def verify_fundamental(
    pts0: np.ndarray,
    pts1: np.ndarray,
    threshold: float = 1.0,
    confidence: float = 0.999,
    max_iters: int = 2000,
) -> tuple[np.ndarray, bool]:
    """Inlier mask ``[K]`` of matched points ``[K, 2]`` under a MAGSAC++ fundamental matrix.

    Returns ``(mask, verified)``. With fewer than 8 matches no model can be fitted: every match
    is kept and ``verified`` is False. When MAGSAC finds no model, no match is kept.
    """
    k = len(pts0)
    if k < MIN_FUNDAMENTAL_MATCHES:
        return np.ones(k, dtype=bool), False
    p0 = np.ascontiguousarray(pts0, dtype=np.float64)
    p1 = np.ascontiguousarray(pts1, dtype=np.float64)
    try:
        f, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, threshold, confidence, max_iters)
    except cv2.error:
        # Degenerate geometry (no translation, planar scene): F is undefined, a homography is not.
        try:
            f, mask = cv2.findHomography(
                p0, p1, cv2.USAC_MAGSAC, 2 * threshold, maxIters=max_iters, confidence=confidence
            )
        except cv2.error:
            f, mask = None, None
    if f is None or mask is None:
        return np.zeros(k, dtype=bool), True
    return mask.ravel().astype(bool), True
