"""Homography benchmark metrics (HPatches protocol of D2-Net / SuperPoint / glue-factory).

- Mean matching accuracy ``MMA@t``: per pair, the fraction of matches whose keypoint in image 0,
  mapped by the ground-truth homography, lands within ``t`` pixels of its match in image 1;
  averaged over pairs (a pair with no match scores 0).
- Homography accuracy ``HAcc@t``: ``cv2.findHomography`` with ``cv2.RANSAC`` on the matches; the
  corner error is the mean distance between the four image-0 corners mapped by the estimate and by
  the ground truth; the accuracy is the fraction of pairs with corner error <= ``t`` (failures = inf).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.errors import BadInputError

MMA_THRESHOLDS = tuple(range(1, 11))
HACC_THRESHOLDS = (1, 3, 5)


@dataclass(frozen=True)
class HomographyRansac:
    """``cv2.findHomography`` settings (stated in every result file)."""

    threshold_px: float = 3.0  # RANSAC reprojection threshold (SuperPoint / glue-factory)
    confidence: float = 0.999
    max_iters: int = 10000


def warp_points(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Apply ``H [3, 3]`` to ``points [N, 2]``; points mapped to infinity come back as ``inf``."""
    if len(points) == 0:
        return np.zeros((0, 2))
    hom = np.c_[points.astype(np.float64), np.ones(len(points))] @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = hom[:, :2] / hom[:, 2:]
    return np.where(np.isfinite(out), out, np.inf)


def match_errors(pts0: np.ndarray, pts1: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Reprojection error (pixels) of each match ``pts0[i] <-> pts1[i]`` under the true ``H``."""
    if pts0.shape != pts1.shape:
        raise BadInputError(f"matched points must have the same shape, got {pts0.shape} and {pts1.shape}")
    return np.linalg.norm(warp_points(pts0, H) - pts1, axis=1)


def local_zoom(H: np.ndarray, x: float, y: float) -> float:
    """Linear scale factor of ``H [3, 3]`` at pixel ``(x, y)`` of image 0: ``sqrt(|det J|)`` of its Jacobian
    (> 1: image k shows that region larger)."""
    p = H @ np.array([x, y, 1.0])
    w = p[2]
    jac = (H[:2, :2] * w - np.outer(p[:2], H[2, :2])) / (w * w)
    return float(np.sqrt(abs(np.linalg.det(jac))))


def zoom_range(H: np.ndarray, width: int, height: int) -> tuple[float, float]:
    """Smallest and largest :func:`local_zoom` of ``H`` over image 0's centre and four corners."""
    zooms = [local_zoom(H, x, y) for x, y in [(width / 2, height / 2), *image_corners(width, height)]]
    return min(zooms), max(zooms)


def repeatability(
    kpts0: np.ndarray, kpts1: np.ndarray, H: np.ndarray, size1: tuple[int, int], threshold: float
) -> float:
    """Fraction of ``kpts0 [N, 2]`` that ``H`` maps inside image 1 (``size1`` = width, height) with a
    keypoint of ``kpts1 [M, 2]`` within ``threshold`` px (one direction; NaN when none lands inside)."""
    from scipy.spatial import cKDTree

    w = warp_points(kpts0, H)
    inside = (w[:, 0] >= 0) & (w[:, 1] >= 0) & (w[:, 0] <= size1[0] - 1) & (w[:, 1] <= size1[1] - 1)
    if not inside.any():
        return float("nan")
    if len(kpts1) == 0:
        return 0.0
    dist, _ = cKDTree(kpts1).query(w[inside], k=1)
    return float((dist <= threshold).mean())


def matching_accuracy(errors: np.ndarray, thresholds: tuple[int, ...] = MMA_THRESHOLDS) -> np.ndarray:
    """Fraction of matches within each threshold (zeros when there is no match)."""
    if len(errors) == 0:
        return np.zeros(len(thresholds))
    return np.array([(errors <= t).mean() for t in thresholds])


def image_corners(width: int, height: int) -> np.ndarray:
    """The centres of the four corner pixels ``[4, 2]`` (pixel-centre convention of the project)."""
    return np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float64)


def estimate_homography(
    pts0: np.ndarray, pts1: np.ndarray, conf: HomographyRansac = HomographyRansac()
) -> tuple[np.ndarray | None, int]:
    """RANSAC homography from matches and its inlier count; ``(None, 0)`` with < 4 matches or on failure."""
    if len(pts0) < 4:
        return None, 0
    H, mask = cv2.findHomography(
        pts0.astype(np.float64),
        pts1.astype(np.float64),
        cv2.RANSAC,
        ransacReprojThreshold=conf.threshold_px,
        maxIters=conf.max_iters,
        confidence=conf.confidence,
    )
    if H is None or not np.isfinite(H).all():
        return None, 0
    return H, int(mask.sum())


def corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, width: int, height: int) -> float:
    """Mean corner distance (pixels) between ``H_est`` and ``H_gt`` over an image of ``width x height``."""
    if H_est is None:
        return float("inf")
    corners = image_corners(width, height)
    err = np.linalg.norm(warp_points(corners, H_est) - warp_points(corners, H_gt), axis=1)
    return float(err.mean()) if np.isfinite(err).all() else float("inf")


def accuracy(errors: np.ndarray | list[float], thresholds: tuple[int, ...] = HACC_THRESHOLDS) -> np.ndarray:
    """Fraction of pairs whose error is within each threshold (zeros for no pair)."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.size == 0:
        return np.zeros(len(thresholds))
    return np.array([(errors <= t).mean() for t in thresholds])
