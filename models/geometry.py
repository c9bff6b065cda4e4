"""Geometric verification of matched keypoints (numpy, pixel conventions of :mod:`models.conventions`)."""

from __future__ import annotations

import cv2
import numpy as np

MIN_FUNDAMENTAL_MATCHES = 8  # the 8-point minimal set of USAC's final fit


VERIFY_METHODS = ("lo_ransac", "magsac")
LO_STEPS = 2  # least-squares refits of the local optimisation (the inlier set settles in 1-2)


def check_verify_method(method: str, option: str = "verification method") -> None:
    """Raise ``ValueError`` naming ``option`` unless ``method`` is one of :data:`VERIFY_METHODS`."""
    if method not in VERIFY_METHODS:
        raise ValueError(f"unknown {option} {method!r}; choose from {VERIFY_METHODS}")


def _inlier_mask(model: np.ndarray | None, mask: np.ndarray | None) -> np.ndarray | None:
    """OpenCV's ``(model, mask)`` pair -> a boolean mask, or None without a model."""
    return None if model is None or mask is None else mask.ravel().astype(bool)


def sampson_sq(f: np.ndarray, pts0: np.ndarray, pts1: np.ndarray) -> np.ndarray:
    """Squared Sampson distance ``[K]`` (px^2) of matches ``pts0 -> pts1 [K, 2]`` to ``f [3, 3]``."""
    x0 = np.c_[pts0, np.ones(len(pts0))]
    x1 = np.c_[pts1, np.ones(len(pts1))]
    fx0 = x0 @ f.T  # epipolar lines in image 1
    ftx1 = x1 @ f  # epipolar lines in image 0
    num = np.einsum("ij,ij->i", x1, fx0) ** 2
    den = fx0[:, 0] ** 2 + fx0[:, 1] ** 2 + ftx1[:, 0] ** 2 + ftx1[:, 1] ** 2
    return num / np.maximum(den, 1e-300)


def lo_ransac_fundamental(
    p0: np.ndarray, p1: np.ndarray, threshold: float, confidence: float, max_iters: int
) -> np.ndarray | None:
    """Inlier mask of an LO-RANSAC fundamental matrix (Chum et al. 2003), or None without a model.

    OpenCV's 7-point RANSAC finds the consensus set; then up to :data:`LO_STEPS` times a
    normalised 8-point least-squares fit on the inliers re-selects the matches within
    ``threshold`` px (Sampson distance), kept only while the set grows. Measured on kitti_mini 06
    and tum_fr2_desk with traqpoint-lite and ORB (``frontend/README.md``): the same inlier count
    as MAGSAC++ (+0.1 %) and 95-99 % the same matches, in a quarter of the time; plain RANSAC
    alone keeps ~9 % fewer, because its model comes from a minimal sample.
    """
    f, mask = cv2.findFundamentalMat(p0, p1, cv2.FM_RANSAC, threshold, confidence, max_iters)
    if f is None or mask is None or f.shape != (3, 3):
        return None
    inl = mask.ravel().astype(bool)
    for _ in range(LO_STEPS):
        if inl.sum() < MIN_FUNDAMENTAL_MATCHES:
            break
        refit, _ = cv2.findFundamentalMat(p0[inl], p1[inl], cv2.FM_8POINT)
        if refit is None or refit.shape != (3, 3):
            break
        grown = sampson_sq(refit, p0, p1) < threshold * threshold
        if grown.sum() <= inl.sum():
            break
        inl = grown
    return inl


def verify_fundamental(
    pts0: np.ndarray,
    pts1: np.ndarray,
    threshold: float = 1.0,
    confidence: float = 0.999,
    max_iters: int = 2000,
    method: str = "magsac",
) -> tuple[np.ndarray, bool]:
    """Inlier mask ``[K]`` of matched points ``[K, 2]`` under a robust fundamental matrix.

    ``method``: ``"magsac"`` (OpenCV's MAGSAC++, ``cv2.USAC_MAGSAC``; the default, for image
    pairs) or ``"lo_ransac"`` (:func:`lo_ransac_fundamental`, the frame-to-frame tracker's: as
    many inliers at high inlier ratios in a quarter of the time; on wide-baseline pairs with many
    outliers it kept fewer: churchill 633 against 644 in ``training.evaluate``). Returns
    ``(mask, verified)``. With fewer than 8 matches no model can be fitted: every match is kept
    and ``verified`` is False. When no model is found (also after the homography fallback for a
    degenerate scene), no match is kept.
    """
    check_verify_method(method)
    k = len(pts0)
    if k < MIN_FUNDAMENTAL_MATCHES:
        return np.ones(k, dtype=bool), False
    p0 = np.ascontiguousarray(pts0, dtype=np.float64)
    p1 = np.ascontiguousarray(pts1, dtype=np.float64)
    mask = None
    try:
        if method == "lo_ransac":
            mask = lo_ransac_fundamental(p0, p1, threshold, confidence, max_iters)
        else:
            mask = _inlier_mask(*cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, threshold, confidence, max_iters))
    except cv2.error:
        pass
    if mask is None:
        # Degenerate geometry (no translation, planar scene): F is undefined, a homography is not.
        try:
            mask = _inlier_mask(
                *cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, 2 * threshold, maxIters=max_iters, confidence=confidence)
            )
        except cv2.error:
            mask = None
    if mask is None:
        return np.zeros(k, dtype=bool), True
    return mask, True
