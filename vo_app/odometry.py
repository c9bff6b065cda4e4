"""Monocular visual odometry on top of the tracker: keyframes, essential matrix, scale.

For each frame the correspondences to the last keyframe are the keypoints that share a track
id with it (tracks are verified frame to frame, so this needs no extra matching). The relative
pose comes from the essential matrix (OpenCV USAC/MAGSAC++ + ``recoverPose``); its scale from
ground truth (``gt``, the paper's protocol), from KITTI stereo depth at the keyframe
(``stereo``), or from points triangulated between keyframes (``mono``: consistent, up to one
global scale). Poses are ``T_world_cam`` (:mod:`models.conventions`).

A frame becomes a keyframe when the median parallax to the keyframe or the fraction of the
keyframe's tracks still alive crosses a threshold. Too few correspondences (e.g. black frames)
is a tracking loss: the pose is extrapolated with the last motion, the frame becomes the new
keyframe, the event is logged and counted, and odometry continues.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

log = logging.getLogger(__name__)


@dataclass
class OdometryStep:
    """Result of one frame: ``pose`` T_world_cam, status ``init|ok|static|lost``, counts."""

    pose: np.ndarray
    status: str
    keyframe: bool
    correspondences: int = 0
    inliers: int = 0
    parallax_px: float = 0.0
    points3d: np.ndarray | None = None  # world points triangulated at a new keyframe (mono/stereo/gt)


@dataclass
class Keyframe:
    index: int
    pose: np.ndarray
    ids: np.ndarray  # sorted track ids
    keypoints: np.ndarray  # [N, 2] aligned with ids
    gt_pose: np.ndarray | None
    depth_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted ids with a depth
    depth: np.ndarray = field(default_factory=lambda: np.zeros(0))  # their depth in this keyframe (mono)
    stereo_depth: np.ndarray | None = None  # [N] metres from stereo, NaN unknown


def to_h(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 from a rotation and a translation."""
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.ravel(t)
    return T


class Odometry:
    """Stateful monocular VO; call :meth:`step` once per tracked frame, in order.

    Args:
        K: 3x3 intrinsics of the (undistorted) images.
        scale: ``gt`` | ``stereo`` | ``mono``.
        **conf: overrides of :attr:`default_conf` (unknown keys are an error).
    """

    default_conf = {
        "min_correspondences": 20,  # fewer -> tracking lost, re-initialise
        "min_inliers": 15,  # essential-matrix inliers needed to accept a pose
        "ransac_threshold": 0.5,  # px, essential-matrix RANSAC threshold (0.5 beat 1.0 on kitti_mini 00/06)
        "ransac_method": cv2.USAC_MAGSAC,  # OpenCV robust estimator for the essential matrix
        "static_parallax": 0.5,  # px median parallax below which the camera is treated as static
        "kf_parallax": 12.0,  # px median parallax that triggers a new keyframe
        "kf_min_tracked": 0.5,  # fraction of keyframe tracks still alive below which a keyframe is taken
    }

    def __init__(self, K: np.ndarray, scale: str = "gt", **conf: object) -> None:
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown Odometry options: {sorted(unknown)}")
        if scale not in ("gt", "stereo", "mono"):
            raise ValueError(f"scale must be gt, stereo or mono, got {scale!r}")
        self.conf = {**self.default_conf, **conf}
        self.K = np.asarray(K, np.float64)
        self.scale_mode = scale
        self.kf: Keyframe | None = None
        self.last_pose: np.ndarray | None = None
        self.velocity = np.eye(4)  # last frame-to-frame motion T_prev_cur
        self.failures = 0
        self.keyframes = 0
        self.last_scale = 1.0

    # -- public --------------------------------------------------------------------------------
    def step(
        self,
        index: int,
        keypoints: np.ndarray,
        track_ids: np.ndarray,
        gt_pose: np.ndarray | None = None,
        stereo_depth: np.ndarray | None = None,
    ) -> OdometryStep:
        """Estimate ``T_world_cam`` of frame ``index`` from its keypoints and track ids.

        ``gt_pose`` is required for ``scale="gt"`` (and anchors the first pose when given);
        ``stereo_depth [N]`` (metres, NaN unknown) per keypoint for ``scale="stereo"``, or a
        callable returning it (only called when the frame becomes a keyframe).
        """
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
        track_ids = np.asarray(track_ids, np.int64).reshape(-1)
        if self.kf is None:
            pose = gt_pose.copy() if gt_pose is not None else np.eye(4)
            self._new_keyframe(index, pose, keypoints, track_ids, gt_pose, stereo_depth)
            return self._finish(pose, OdometryStep(pose, "init", True))
        common, ia, ib = np.intersect1d(self.kf.ids, track_ids, assume_unique=False, return_indices=True)
        p0, p1 = self.kf.keypoints[ia], keypoints[ib]
        if len(common) < self.conf["min_correspondences"]:
            return self._lost(index, keypoints, track_ids, gt_pose, stereo_depth, len(common), "too few tracks")
        parallax = float(np.median(np.linalg.norm(p1 - p0, axis=1)))
        if parallax < self.conf["static_parallax"]:
            return self._finish(
                self.kf.pose.copy(),
                OdometryStep(self.kf.pose.copy(), "static", False, len(common), len(common), parallax),
            )
        rel = self._relative_pose(p0, p1)
        if rel is None:
            return self._lost(
                index, keypoints, track_ids, gt_pose, stereo_depth, len(common), "essential matrix failed"
            )
        T_cur_kf, inl = rel
        s = self._scale(T_cur_kf, p0[inl], p1[inl], common[inl], ia[inl], gt_pose)
        if s is None:
            s = self.last_scale
        self.last_scale = s
        T_cur_kf[:3, 3] *= s
        pose = self.kf.pose @ np.linalg.inv(T_cur_kf)
        alive = len(common) / max(len(self.kf.ids), 1)
        is_kf = parallax > self.conf["kf_parallax"] or alive < self.conf["kf_min_tracked"]
        step = OdometryStep(pose, "ok", is_kf, len(common), int(inl.sum()), parallax)
        if is_kf:
            step.points3d = self._triangulate_world(T_cur_kf, p0[inl], p1[inl])
            depth_ids, depth = self._next_depth
            self._new_keyframe(index, pose, keypoints, track_ids, gt_pose, stereo_depth)
            self.kf.depth_ids, self.kf.depth = depth_ids, depth
        return self._finish(pose, step)

    # -- internals -----------------------------------------------------------------------------
    def _finish(self, pose: np.ndarray, step: OdometryStep) -> OdometryStep:
        if self.last_pose is not None:
            self.velocity = np.linalg.inv(self.last_pose) @ pose
        self.last_pose = pose
        return step

    def _new_keyframe(self, index, pose, keypoints, track_ids, gt_pose, stereo_depth) -> None:
        valid = track_ids >= 0
        order = np.argsort(track_ids[valid])
        if callable(stereo_depth):  # computed lazily: stereo matching only runs at keyframes
            stereo_depth = stereo_depth()
        sd = None if stereo_depth is None else np.asarray(stereo_depth, np.float64)[valid][order]
        self.kf = Keyframe(
            index,
            pose.copy(),
            track_ids[valid][order],
            keypoints[valid][order],
            None if gt_pose is None else gt_pose.copy(),
            stereo_depth=sd,
        )
        self._next_depth = (np.zeros(0, np.int64), np.zeros(0))
        self.keyframes += 1

    def _lost(self, index, keypoints, track_ids, gt_pose, stereo_depth, n: int, why: str) -> OdometryStep:
        self.failures += 1
        pose = self.last_pose @ self.velocity
        log.warning(
            "frame %d: tracking lost (%s, %d correspondences); re-initialising (failure %d)",
            index,
            why,
            n,
            self.failures,
        )
        self._new_keyframe(index, pose, keypoints, track_ids, gt_pose, stereo_depth)
        return self._finish(pose, OdometryStep(pose, "lost", True, n))

    def _relative_pose(self, p0: np.ndarray, p1: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``T_cur_kf`` with unit translation and the inlier mask, or None."""
        try:
            E, mask = cv2.findEssentialMat(
                p0, p1, self.K, self.conf["ransac_method"], 0.999, self.conf["ransac_threshold"]
            )
        except cv2.error:  # degenerate configuration
            return None
        if E is None or mask is None or int(mask.sum()) < self.conf["min_inliers"]:
            return None
        E = E[:3]
        # a large distance threshold keeps distant points (tiny parallax) in the cheirality vote
        _, R, t, mask_pose, _ = cv2.recoverPose(E, p0, p1, self.K, distanceThresh=1e4, mask=mask.copy())
        inl = mask_pose.ravel() > 0
        if inl.sum() < self.conf["min_inliers"]:
            return None
        return to_h(R, t), inl

    def _triangulate(self, T_cur_kf: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
        """Points ``[N, 3]`` in the keyframe camera, triangulated from the two views (NaN if behind)."""
        P0 = self.K @ np.eye(4)[:3]
        P1 = self.K @ T_cur_kf[:3]
        X = cv2.triangulatePoints(P0, P1, p0.T, p1.T)
        X = (X[:3] / X[3:]).T
        Xc = X @ T_cur_kf[:3, :3].T + T_cur_kf[:3, 3]
        bad = (X[:, 2] <= 0) | (Xc[:, 2] <= 0) | ~np.isfinite(X).all(1)
        X[bad] = np.nan
        return X

    def _scale(self, T_cur_kf, p0, p1, ids, kf_rows, gt_pose) -> float | None:
        """Metric (or consistent) length of the keyframe->current translation."""
        if self.scale_mode == "gt":
            if gt_pose is None or self.kf.gt_pose is None:
                raise ValueError("--scale gt needs ground-truth poses for every frame")
            return float(np.linalg.norm((np.linalg.inv(self.kf.gt_pose) @ gt_pose)[:3, 3]))
        X = self._triangulate(T_cur_kf, p0, p1)
        z = X[:, 2]
        if self.scale_mode == "stereo":
            ref = None if self.kf.stereo_depth is None else self.kf.stereo_depth[kf_rows]
        else:
            ref = np.full(len(ids), np.nan)
            _, ia, ib = np.intersect1d(ids, self.kf.depth_ids, return_indices=True)
            ref[ia] = self.kf.depth[ib]
        s = None
        if ref is not None:
            ok = np.isfinite(ref) & np.isfinite(z) & (z > 0) & (ref > 0)
            if ok.sum() >= 5:
                s = float(np.median(ref[ok] / z[ok]))
        # without a reference (e.g. the first mono pair) the last scale is kept: the caller falls back to it.
        # Depths of the inliers in the *current* camera at that scale, for the next keyframe pair:
        scale = s if s is not None else self.last_scale
        Xc = (X * scale) @ T_cur_kf[:3, :3].T + T_cur_kf[:3, 3] * scale
        ok = np.isfinite(Xc[:, 2])
        order = np.argsort(ids[ok])
        self._next_depth = (ids[ok][order], Xc[ok, 2][order])
        return s

    def _triangulate_world(self, T_cur_kf_scaled, p0, p1) -> np.ndarray:
        """World points of the inliers at a new keyframe (for the viewer and the PLY export)."""
        X = self._triangulate(T_cur_kf_scaled, p0, p1)
        X = X[np.isfinite(X).all(1)]
        return X @ self.kf.pose[:3, :3].T + self.kf.pose[:3, 3]
