"""Camera pose from 2D-3D correspondences against the local map: PoseLib or OpenCV RANSAC PnP.

Both estimators run a minimal-solver RANSAC (PoseLib: P3P in LO-RANSAC with a final
Levenberg-Marquardt refinement on the inliers; OpenCV: ``solvePnPRansac`` with SQPnP, then
``solvePnPRefineLM`` on the inliers) and return ``T_world_cam`` and the inlier mask, or ``None``
with fewer than ``min_inliers``. Both are deterministic (fixed RANSAC seeds). :func:`refine_pnp`
refines a pose that is already close (a frame re-localised after a bundle adjustment) without RANSAC.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import poselib

from .map_geometry import invert, reprojection_error, to_h

PNP_METHODS = ("poselib", "opencv")


@dataclass
class PnPResult:
    pose: np.ndarray  # T_world_cam 4x4
    inliers: np.ndarray  # [N] bool


def poselib_camera(K: np.ndarray) -> dict:
    """PoseLib's camera dict of a pinhole ``K`` (size unused by the solvers)."""
    return {"model": "PINHOLE", "width": 0, "height": 0, "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}


def checked_result(
    K: np.ndarray, T_cam_world: np.ndarray, X: np.ndarray, uv: np.ndarray, threshold_px: float, min_inliers: int
) -> PnPResult | None:
    """The pose as T_world_cam with its inliers (reprojection < ``threshold_px``: one inlier definition
    for every estimator), or None when it is not finite or has fewer than ``min_inliers``."""
    T = invert(T_cam_world)
    if not np.isfinite(T).all():
        return None
    inliers = reprojection_error(K, T, X, uv) < threshold_px
    if inliers.sum() < min_inliers:
        return None
    return PnPResult(T, inliers)


def solve_pnp(
    K: np.ndarray,
    uv: np.ndarray,
    X: np.ndarray,
    method: str = "poselib",
    threshold_px: float = 2.5,
    min_inliers: int = 15,
    max_iterations: int = 1000,
) -> PnPResult | None:
    """Pose of the camera that sees world points ``X [N, 3]`` at pixels ``uv [N, 2]``."""
    if method not in PNP_METHODS:
        raise ValueError(f"pnp method must be one of {PNP_METHODS}, got {method!r}")
    if len(uv) < max(4, min_inliers):
        return None
    uv, X = np.ascontiguousarray(uv, np.float64), np.ascontiguousarray(X, np.float64)
    if method == "poselib":
        camera = poselib_camera(K)
        ransac = {"max_reproj_error": threshold_px, "max_iterations": max_iterations, "min_iterations": 50, "seed": 0}
        pose, info = poselib.estimate_absolute_pose(uv, X, camera, ransac, {})
        T_cam_world = to_h(pose.R, pose.t)
    else:
        ok, rvec, tvec, idx = cv2.solvePnPRansac(
            X, uv, K, None, iterationsCount=max_iterations, reprojectionError=threshold_px,
            confidence=0.9999, flags=cv2.SOLVEPNP_SQPNP,
        )  # fmt: skip
        if not ok or idx is None or len(idx) < min_inliers:
            return None
        idx = idx.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(X[idx], uv[idx], K, None, rvec, tvec)
        T_cam_world = to_h(cv2.Rodrigues(rvec)[0], tvec)
    return checked_result(K, T_cam_world, X, uv, threshold_px, min_inliers)


def refine_pnp(
    K: np.ndarray,
    uv: np.ndarray,
    X: np.ndarray,
    T_init: np.ndarray,
    method: str = "poselib",
    threshold_px: float = 2.5,
    min_inliers: int = 15,
) -> PnPResult | None:
    """Refine a known pose ``T_init`` (T_world_cam) on the correspondences that it reprojects within
    ``threshold_px``: no RANSAC (the pose is already close), Levenberg-Marquardt on those inliers."""
    if method not in PNP_METHODS:
        raise ValueError(f"pnp method must be one of {PNP_METHODS}, got {method!r}")
    inl = reprojection_error(K, T_init, X, uv) < threshold_px
    if inl.sum() < max(4, min_inliers):
        return None
    uv_i, X_i = np.ascontiguousarray(uv[inl], np.float64), np.ascontiguousarray(X[inl], np.float64)
    T_cw = invert(T_init)
    if method == "poselib":
        camera = poselib_camera(K)
        pose = poselib.CameraPose()
        pose.R, pose.t = T_cw[:3, :3], T_cw[:3, 3]
        pose, _ = poselib.refine_absolute_pose(uv_i, X_i, pose, camera, {})
        T_cam_world = to_h(pose.R, pose.t)
    else:
        rvec, tvec = cv2.Rodrigues(T_cw[:3, :3])[0], T_cw[:3, 3].reshape(3, 1).copy()
        rvec, tvec = cv2.solvePnPRefineLM(X_i, uv_i, K, None, rvec, tvec)
        T_cam_world = to_h(cv2.Rodrigues(rvec)[0], tvec)
    return checked_result(K, T_cam_world, X, uv, threshold_px, min_inliers)
