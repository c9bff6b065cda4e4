"""Two-view relative pose: estimation from matches, the pose error and the pose AUC.

Protocol (SuperGlue / LoFTR / glue-factory): keypoints are normalised by the intrinsics, the
essential matrix is found by ``cv2.findEssentialMat`` with ``cv2.RANSAC`` and a threshold given in
pixels (divided by the mean focal length), every returned hypothesis goes through
``cv2.recoverPose`` and the one with most cheirality inliers wins. The pose error of a pair is
``max(rotation angle error, translation direction angle error)`` in degrees, the translation
error taking ``min(e, 180 - e)`` because ``E`` fixes ``t`` only up to sign; a failed estimate
counts as an infinite error. ``T_0to1`` maps points from camera 0 to camera 1.

``RansacConfig.estimator = "poselib"`` uses PoseLib's LO-RANSAC instead (``estimate_relative_pose``
on pixel coordinates with pinhole cameras: 5-point minimal solver, local optimisation and a final
non-linear refinement on the inliers; the threshold is PoseLib's ``max_epipolar_error``, a Sampson
error in pixels), as glue-factory and LightGlue quote MegaDepth-1500. PoseLib's pose also maps
camera 0 to camera 1 (``x1 = R x0 + t``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

from models.errors import BadInputError

AUC_THRESHOLDS = (5.0, 10.0, 20.0)
Estimator = Literal["opencv", "poselib"]
ESTIMATORS = ("opencv", "poselib")
# Per-estimator defaults: OpenCV as SuperGlue/LoFTR (0.5 px, 1000 iterations); PoseLib its own
# defaults (1.0 px Sampson error, up to 100000 LO-RANSAC iterations after at least 1000).
DEFAULT_THRESHOLD_PX = {"opencv": 0.5, "poselib": 1.0}
DEFAULT_MAX_ITERS = {"opencv": 1000, "poselib": 100000}
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 only has trapz


@dataclass(frozen=True)
class RansacConfig:
    """Essential-matrix RANSAC settings (stated in every result file)."""

    threshold_px: float = 0.5  # inlier threshold in pixels (LoFTR / SuperGlue protocol)
    confidence: float = 0.99999  # RANSAC confidence
    max_iters: int = 1000  # OpenCV's default iteration cap
    estimator: Estimator = "opencv"  # "opencv" (findEssentialMat + recoverPose) or "poselib" (LO-RANSAC)

    def __post_init__(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise BadInputError(
                f"unknown essential-matrix estimator {self.estimator!r}; choose {', '.join(ESTIMATORS)}"
            )
        if not self.threshold_px > 0 or not 0 < self.confidence < 1 or self.max_iters <= 0:
            raise BadInputError(
                f"RANSAC settings out of range: threshold {self.threshold_px} px (> 0), confidence "
                f"{self.confidence} (0..1), iterations {self.max_iters} (> 0)"
            )

    @classmethod
    def for_estimator(
        cls,
        estimator: Estimator,
        threshold_px: float | None = None,
        confidence: float | None = None,
        max_iters: int | None = None,
    ) -> RansacConfig:
        """Settings of ``estimator`` with its defaults where an argument is ``None``."""
        return cls(
            DEFAULT_THRESHOLD_PX.get(estimator, 0.5) if threshold_px is None else threshold_px,
            cls.confidence if confidence is None else confidence,
            DEFAULT_MAX_ITERS.get(estimator, 1000) if max_iters is None else max_iters,
            estimator,
        )


@dataclass
class PoseEstimate:
    """A relative pose ``R [3, 3]``, unit ``t [3]`` and the inlier mask over the input matches."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray


def normalise(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels ``[N, 2]`` -> normalised image coordinates with intrinsics ``K [3, 3]``."""
    return (points - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def estimate_relative_pose(
    pts0: np.ndarray, pts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, conf: RansacConfig = RansacConfig()
) -> PoseEstimate | None:
    """Relative pose from matched pixels ``pts0 [N, 2]`` <-> ``pts1 [N, 2]``; ``None`` when it fails."""
    if pts0.shape != pts1.shape or pts0.ndim != 2 or pts0.shape[1] != 2:
        raise BadInputError(f"matched points must both be [N, 2], got {pts0.shape} and {pts1.shape}")
    if len(pts0) < 5:
        return None
    if conf.estimator == "poselib":
        return _poselib_relative_pose(pts0, pts1, K0, K1, conf)
    n0, n1 = normalise(pts0.astype(np.float64), K0), normalise(pts1.astype(np.float64), K1)
    threshold = conf.threshold_px / np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
    E, mask = cv2.findEssentialMat(
        n0, n1, np.eye(3), method=cv2.RANSAC, prob=conf.confidence, threshold=threshold, maxIters=conf.max_iters
    )
    if E is None or mask is None:
        return None
    best: PoseEstimate | None = None
    best_count = 0
    for E_i in np.split(E, len(E) // 3):  # OpenCV stacks several solutions vertically
        count, R, t, cheirality = cv2.recoverPose(E_i, n0, n1, np.eye(3), 1e9, mask=mask.copy())
        if count > best_count:
            best_count = count
            best = PoseEstimate(R=R, t=t[:, 0], inliers=mask.ravel() > 0)
    return best


def _pinhole(K: np.ndarray) -> dict:
    """PoseLib camera dict of intrinsics ``K [3, 3]`` (the size is unused by relative pose)."""
    return {
        "model": "PINHOLE",
        "width": int(2 * K[0, 2] + 1),
        "height": int(2 * K[1, 2] + 1),
        "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
    }


def _poselib_relative_pose(
    pts0: np.ndarray, pts1: np.ndarray, K0: np.ndarray, K1: np.ndarray, conf: RansacConfig
) -> PoseEstimate | None:
    """PoseLib LO-RANSAC relative pose (seeded, so reruns agree); ``None`` without a model."""
    import poselib  # imported here: only this estimator needs it

    ransac = {
        "max_epipolar_error": conf.threshold_px,
        "success_prob": conf.confidence,
        "max_iterations": conf.max_iters,
        "min_iterations": min(1000, conf.max_iters),
        "seed": 0,
    }
    pose, info = poselib.estimate_relative_pose(
        np.ascontiguousarray(pts0, dtype=np.float64),
        np.ascontiguousarray(pts1, dtype=np.float64),
        _pinhole(K0),
        _pinhole(K1),
        ransac,
        {},
    )
    inliers = np.asarray(info.get("inliers", []), dtype=bool)
    if info.get("num_inliers", 0) < 5 or len(inliers) != len(pts0):
        return None
    t = np.asarray(pose.t, dtype=np.float64)
    return PoseEstimate(R=np.asarray(pose.R, dtype=np.float64), t=t / max(np.linalg.norm(t), 1e-12), inliers=inliers)


def angle_between_vectors(v0: np.ndarray, v1: np.ndarray) -> float:
    """Angle in degrees between two 3-vectors (0 when either is zero)."""
    n = np.linalg.norm(v0) * np.linalg.norm(v1)
    if n == 0:
        return 0.0
    return float(np.degrees(np.arccos(np.clip(np.dot(v0, v1) / n, -1.0, 1.0))))


def rotation_error_deg(R0: np.ndarray, R1: np.ndarray) -> float:
    """Angle in degrees of the rotation ``R0^T R1``."""
    cos = (np.trace(R0.T @ R1) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def pose_error_deg(T_0to1: np.ndarray, R: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    """``(rotation error, translation direction error)`` in degrees against the ground truth ``T_0to1``."""
    t_err = angle_between_vectors(t, T_0to1[:3, 3])
    return rotation_error_deg(R, T_0to1[:3, :3]), min(t_err, 180.0 - t_err)


def pair_pose_error(
    pts0: np.ndarray,
    pts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T_0to1: np.ndarray,
    conf: RansacConfig = RansacConfig(),
) -> tuple[float, int]:
    """Pose error ``max(R_err, t_err)`` in degrees (``inf`` on failure) and the number of RANSAC inliers."""
    est = estimate_relative_pose(pts0, pts1, K0, K1, conf)
    if est is None:
        return float("inf"), 0
    return max(pose_error_deg(T_0to1, est.R, est.t)), int(est.inliers.sum())


def pose_auc(errors: np.ndarray | list[float], thresholds: tuple[float, ...] = AUC_THRESHOLDS) -> list[float]:
    """Area under the cumulative error curve up to each threshold, normalised to [0, 1].

    The curve is piecewise linear through ``(0, 0)`` and ``(e_i, i / N)`` for the sorted errors, as in
    SuperGlue / LoFTR / glue-factory; infinite errors (failures) count in ``N`` but never add area.

    Example:
        >>> pose_auc([1.0, 3.0, float("inf"), float("inf")], (5.0,))
        [0.375]
    """
    errors = np.sort(np.asarray(errors, dtype=np.float64).ravel())
    if errors.size == 0:
        return [0.0 for _ in thresholds]
    if np.isnan(errors).any():
        raise BadInputError("pose errors contain NaN (use inf for failures)")
    recall = np.arange(1, errors.size + 1) / errors.size
    errors, recall = np.r_[0.0, errors], np.r_[0.0, recall]
    aucs = []
    for thr in thresholds:
        last = int(np.searchsorted(errors, thr))
        r = np.r_[recall[:last], recall[last - 1]]
        e = np.r_[errors[:last], thr]
        aucs.append(float(_trapezoid(r, x=e) / thr))
    return aucs
