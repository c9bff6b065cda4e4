"""Multi-view geometry of the local map: projection, triangulation with checks, two-view initialisation.

Poses are ``T_world_cam`` 4x4 (camera-to-world, :mod:`models.conventions`); ``K`` 3x3 pinhole;
pixels ``[N, 2]``; world points ``[N, 3]``. Everything is vectorised over points.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def to_h(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 from a rotation and a translation."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.ravel(t)
    return T


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    R, t = T[:3, :3], T[:3, 3]
    return to_h(R.T, -R.T @ t)


def orthonormalise(T: np.ndarray) -> np.ndarray:
    """``T`` with its rotation projected onto SO(3) (composing poses must not amplify rounding)."""
    u, _, vt = np.linalg.svd(T[:3, :3])
    R = u @ vt
    if np.linalg.det(R) < 0:
        R = u @ np.diag([1.0, 1.0, -1.0]) @ vt
    return to_h(R, T[:3, 3])


def to_camera(T_world_cam: np.ndarray, X: np.ndarray) -> np.ndarray:
    """World points ``[N, 3]`` in the camera frame ``[N, 3]``."""
    T = invert(T_world_cam)
    return X @ T[:3, :3].T + T[:3, 3]


def project(K: np.ndarray, T_world_cam: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[N, 2]`` and depths ``[N]`` of world points ``X [N, 3]``."""
    Xc = to_camera(T_world_cam, X)
    z = Xc[:, 2]
    uv = (Xc @ K.T)[:, :2] / np.where(np.abs(z) > 1e-12, z, 1e-12)[:, None]
    return uv, z


def reprojection_error(K: np.ndarray, T_world_cam: np.ndarray, X: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Pixel distance ``[N]`` between the projections of ``X`` and ``uv`` (inf behind the camera)."""
    proj, z = project(K, T_world_cam, X)
    err = np.linalg.norm(proj - uv, axis=1)
    return np.where(z > 0, err, np.inf)


def rotation_compensated_parallax(K: np.ndarray, R_cur_ref: np.ndarray, p_ref: np.ndarray, p_cur: np.ndarray) -> float:
    """Median pixel motion ``p_ref -> p_cur`` left once the rotation ``R_cur_ref`` is undone (0 when empty).

    ``p_ref`` is warped by the infinite homography ``K R K^-1``: a pure rotation gives zero parallax.
    """
    if len(p_ref) == 0:
        return 0.0
    H = K @ R_cur_ref @ np.linalg.inv(K)
    ph = np.column_stack([p_ref, np.ones(len(p_ref))]) @ H.T
    warped = ph[:, :2] / ph[:, 2:3]
    return float(np.median(np.linalg.norm(p_cur - warped, axis=1)))


def triangulate(
    K: np.ndarray,
    T_a: np.ndarray,
    T_b: np.ndarray,
    pa: np.ndarray,
    pb: np.ndarray,
    max_error_px: float = 2.0,
    min_angle_deg: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[N, 3]`` from pixels ``pa``/``pb`` in views ``T_a``/``T_b`` and the mask of good ones.

    Good: in front of both cameras, reprojection error below ``max_error_px`` in both, and a
    triangulation angle of at least ``min_angle_deg`` (rays too parallel give unreliable depth).
    """
    if len(pa) == 0:
        return np.zeros((0, 3)), np.zeros(0, bool)
    Pa = K @ invert(T_a)[:3]
    Pb = K @ invert(T_b)[:3]
    Xh = cv2.triangulatePoints(Pa, Pb, np.ascontiguousarray(pa.T, np.float64), np.ascontiguousarray(pb.T, np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        X = (Xh[:3] / Xh[3:]).T
    finite = np.isfinite(X).all(1)
    X[~finite] = 0.0
    ea = reprojection_error(K, T_a, X, pa)
    eb = reprojection_error(K, T_b, X, pb)
    ra, rb = X - T_a[:3, 3], X - T_b[:3, 3]
    cos = (ra * rb).sum(1) / np.maximum(np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1), 1e-12)
    good = finite & (ea < max_error_px) & (eb < max_error_px) & (cos < np.cos(np.radians(min_angle_deg)))
    return X, good


@dataclass
class TwoView:
    """A two-view initialisation: ``T_1_0`` (unit translation), inlier mask, points in camera 0."""

    T_1_0: np.ndarray
    inliers: np.ndarray  # [N] bool over the input correspondences
    X0: np.ndarray  # [N, 3] points in camera 0 at unit baseline
    good: np.ndarray  # [N] bool: triangulated and passing the checks


def two_view(
    K: np.ndarray,
    p0: np.ndarray,
    p1: np.ndarray,
    threshold_px: float = 0.5,
    method: int = cv2.USAC_MAGSAC,
    max_error_px: float = 2.0,
    min_angle_deg: float = 1.0,
) -> TwoView | None:
    """Relative pose from the essential matrix (OpenCV USAC + ``recoverPose``) and triangulated points."""
    if len(p0) < 8:
        return None
    try:
        E, mask = cv2.findEssentialMat(p0, p1, K, method, 0.999, threshold_px)
    except cv2.error:  # degenerate configuration
        return None
    if E is None or mask is None or E.shape[0] < 3:
        return None
    _, R, t, mask_pose, _ = cv2.recoverPose(E[:3], p0, p1, K, distanceThresh=1e4, mask=mask.copy())
    inl = mask_pose.ravel() > 0
    T_1_0 = to_h(R, t)
    X, good = triangulate(K, np.eye(4), invert(T_1_0), p0, p1, max_error_px, min_angle_deg)
    return TwoView(T_1_0, inl, X, good & inl)
