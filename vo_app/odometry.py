"""Monocular visual odometry on a local map: two-view init, PnP tracking, keyframes, windowed BA.

State machine (``Odometry.state``; details in ``vo_app/README.md``):

- ``init``: no map. The first frame (or the frame after a loss) is the reference; each later
  frame tries a two-view initialisation against it (essential matrix, OpenCV USAC/MAGSAC++ +
  ``recoverPose``) once the tracks moved ``init_min_parallax`` px, rotation compensated. On
  success the inlier tracks are triangulated into the :class:`~vo_app.map.LocalMap`, both
  frames become keyframes, and the frames in between are localised against the new map. With
  ``scale="stereo"`` the first frame's stereo depth makes the map at once (metric).
- ``tracking``: each frame's pose is PnP (PoseLib or OpenCV RANSAC, :mod:`vo_app.map_pnp`)
  against the map points whose track ids it carries; PnP outliers leave the map. The
  :class:`~vo_app.keyframes.KeyframePolicy` decides keyframes; at a keyframe new points are
  triangulated (or read from stereo depth), the last ``window`` keyframes and their points are
  refined by :func:`~vo_app.bundle.bundle_adjust`, outliers and points that nothing sees any
  more are culled, and the frames since the previous keyframe are re-localised (PnP) against the
  refined map, which now also holds the points this keyframe added (otherwise the trajectory
  would jump at every keyframe by the bundle adjustment's correction).
- ``lost``: too few map points tracked, or PnP failed. Logged and counted; the pose is
  extrapolated with the last motion and the odometry re-initialises from this frame.

Scale: ``mono`` fixes the unit at the first initialisation (baseline 1) and the map carries it;
``stereo`` is metric from KITTI ``image_1``; ``gt`` (the paper's protocol) gives every reported
frame-to-frame step its ground-truth length (:func:`~vo_app.trajectory.scale_steps`), while the
map is rescaled at each keyframe so that its window's keyframe-to-keyframe path has the
ground-truth length. A re-initialisation (or a ``gt`` keyframe without ground truth) takes the
scale from the last known motion. Every fallback is counted in :attr:`Odometry.counters` and logged.

Poses are ``T_world_cam`` (:mod:`models.conventions`). Each frame is stored relative to its
reference keyframe, so :meth:`Odometry.trajectory` returns every frame's pose after the
keyframes' final refinement (as ORB-SLAM saves trajectories).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from .bundle import Observations, bundle_adjust
from .keyframes import Keyframe, KeyframePolicy, KeyframeWindow
from .map import LocalMap
from .map_geometry import (
    invert,
    orthonormalise,
    reprojection_error,
    rotation_compensated_parallax,
    to_h,
    triangulate,
    two_view,
)
from .map_pnp import PNP_METHODS, refine_pnp, solve_pnp
from .trajectory import scale_steps

log = logging.getLogger(__name__)

__all__ = ["Odometry", "OdometryStep", "to_h"]


@dataclass
class OdometryStep:
    """Result of one frame: ``pose`` T_world_cam (online estimate), status ``init|ok|lost``, counts."""

    pose: np.ndarray
    status: str
    keyframe: bool
    correspondences: int = 0  # 2D-3D correspondences (tracking) or 2D-2D to the reference (init)
    inliers: int = 0
    parallax_px: float = 0.0  # rotation-compensated median parallax to the last keyframe
    points3d: np.ndarray | None = None  # world points added at a new keyframe (viewer, PLY export)
    kf_reason: str = ""
    map_points: int = 0
    t_pnp_ms: float = 0.0
    t_ba_ms: float = 0.0
    t_reloc_ms: float = 0.0  # re-localising the frames since the previous keyframe (at a keyframe)


class Odometry:
    """Stateful monocular VO on a local map; call :meth:`step` once per tracked frame, in order.

    Args:
        K: 3x3 intrinsics of the (undistorted) images.
        scale: ``gt`` | ``stereo`` | ``mono``.
        image_size: ``(width, height)``; default from the principal point.
        **conf: overrides of :attr:`default_conf` (unknown keys are an error).
    """

    default_conf = {
        "min_correspondences": 20,  # map points tracked below this -> lost
        "min_inliers": 15,  # PnP / essential-matrix inliers needed to accept a pose
        "ransac_threshold": 0.5,  # px, essential-matrix RANSAC threshold of the initialisation
        "ransac_method": cv2.USAC_MAGSAC,  # OpenCV robust estimator for the essential matrix
        "pnp": "poselib",  # poselib | opencv (vo_app.map_pnp)
        "pnp_threshold": 2.5,  # px
        "init_min_parallax": 12.0,  # px rotation-compensated median parallax before a two-view init
        "init_min_points": 30,  # triangulated points a two-view init needs
        "init_max_frames": 40,  # frames one reference may wait for an initialisation
        "tri_max_error": 2.0,  # px reprojection error of a new point in both views
        "tri_min_angle": 0.5,  # deg triangulation angle of a new point
        # px, see vo_app.keyframes; None = kf_parallax_frac * (width + height), DSO's rule (Engel et al.
        # 2018: a keyframe once the rotation-compensated flow reaches 0.04 (w + h); 45 px at 640x480)
        "kf_parallax": None,
        "kf_parallax_frac": 0.04,
        "kf_min_tracked": 0.3,
        "kf_min_points": 60,
        "kf_max_interval": 10,
        "kf_min_interval": 1,
        "window": 7,  # keyframes in the bundle adjustment
        "ba_fixed": 2,  # oldest window keyframes held constant (gauge and monocular scale)
        "ba_loss": "cauchy",
        "ba_loss_scale": 1.0,  # px
        "ba_iterations": 20,
        "ba_max_error": 4.0,  # px; points reprojecting worse after BA leave the map
        "stereo_max_depth": 40.0,  # m; farther stereo depths are too uncertain for new points
        "stereo_min_points": 60,  # stereo depths a stereo initialisation needs
    }

    def __init__(self, K: np.ndarray, scale: str = "gt", image_size: tuple[int, int] | None = None, **conf) -> None:
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown Odometry options: {sorted(unknown)}")
        if scale not in ("gt", "stereo", "mono"):
            raise ValueError(f"scale must be gt, stereo or mono, got {scale!r}")
        self.conf = {**self.default_conf, **conf}
        if self.conf["pnp"] not in PNP_METHODS:
            raise ValueError(f"pnp must be one of {PNP_METHODS}, got {self.conf['pnp']!r}")
        self.K = np.asarray(K, np.float64)
        self.image_size = image_size or (int(round(2 * self.K[0, 2] + 1)), int(round(2 * self.K[1, 2] + 1)))
        self.scale_mode = scale
        c = self.conf
        kf_parallax = c["kf_parallax"] if c["kf_parallax"] is not None else c["kf_parallax_frac"] * sum(self.image_size)
        self.policy = KeyframePolicy(kf_parallax, c["kf_min_tracked"], c["kf_min_points"], c["kf_max_interval"],
                                     c["kf_min_interval"])  # fmt: skip
        self.map = LocalMap()
        self.window = KeyframeWindow(c["window"])
        self.state = "init"
        self.last_pose: np.ndarray | None = None
        self.velocity = np.eye(4)  # last frame-to-frame motion T_prev_cur
        self.failures = 0
        self.keyframes = 0
        self.counters: Counter[str] = Counter()  # every fallback and event, for results.json
        self.ba_ms: list[float] = []  # per bundle adjustment (bounded by the keyframes of the run)
        self._kf_poses: dict[int, np.ndarray] = {}  # keyframe frame index -> T_world_cam (latest estimate)
        self._records: list[tuple[int, np.ndarray]] = []  # per frame: (reference keyframe, T_kf_frame)
        self._ref: Keyframe | None = None  # initialisation reference
        self._buffer: list[tuple[int, np.ndarray, np.ndarray]] = []  # (record row, ids, keypoints) during init
        self._since_kf: list[tuple[int, np.ndarray, np.ndarray]] = []  # the same, frames since the last keyframe
        self._gt_prev: np.ndarray | None = None  # ground-truth position of the previous frame (gt)
        self._gt_steps: list[float] = []  # gt: ground-truth length of each frame-to-frame step, NaN unknown
        self._out_prev: tuple | None = None  # gt: previous (map-frame, output) position, length not applied yet

    # -- public --------------------------------------------------------------------------------
    def step(
        self,
        index: int,
        keypoints: np.ndarray,
        track_ids: np.ndarray,
        gt_pose: np.ndarray | None = None,
        stereo_depth=None,
    ) -> OdometryStep:
        """Estimate ``T_world_cam`` of frame ``index`` from its keypoints ``[N, 2]`` and track ids ``[N]``.

        ``gt_pose`` (None or NaN when unknown) scales ``scale="gt"`` and anchors the first pose;
        ``stereo_depth [N]`` (metres, NaN unknown) per keypoint for ``scale="stereo"``, or a
        callable returning it (only called when needed: initialisation and keyframes).
        """
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
        track_ids = np.asarray(track_ids, np.int64).reshape(-1)
        valid = np.flatnonzero(track_ids >= 0)
        order = valid[np.argsort(track_ids[valid], kind="stable")]
        ids, kp = track_ids[order], keypoints[order]
        if gt_pose is not None and not np.isfinite(gt_pose).all():
            gt_pose = None
        if gt_pose is None and self.scale_mode == "gt":
            self.counters["frames_without_gt"] += 1
            if self.counters["frames_without_gt"] == 1:
                log.warning("frame %d: no ground truth under --scale gt; the map's scale (last known motion) is kept",
                            index)  # fmt: skip
        depth = _Depth(stereo_depth, order)
        if self.state == "init":
            step = self._initialise(index, ids, kp, gt_pose, depth)
        else:
            step = self._track(index, ids, kp, gt_pose, depth)
        if self.last_pose is not None:
            self.velocity = orthonormalise(invert(self.last_pose) @ step.pose)
        self.last_pose = step.pose
        if self.scale_mode == "gt":
            self._gt_step_output(step, gt_pose)
        return step

    def trajectory(self) -> np.ndarray:
        """``[F, 4, 4]`` poses of every frame so far, from the keyframes' latest (refined) poses.

        Under ``scale="gt"`` every frame-to-frame step has its ground-truth length (see
        :meth:`_gt_step_output`).
        """
        if not self._records:
            return np.zeros((0, 4, 4))
        poses = np.stack([self._kf_poses[ref] @ rel for ref, rel in self._records])
        return scale_steps(poses, self._gt_steps[1:]) if self.scale_mode == "gt" else poses

    def _gt_step_output(self, step: OdometryStep, gt_pose: np.ndarray | None) -> None:
        """``gt`` (the paper's protocol): scale this frame's step from the last one to its ground-truth length.

        The map keeps the window-level scale (:meth:`_gt_rescale`); only the reported poses take
        the per-frame lengths, so ``step.pose`` (and the points shown with it) are shifted from the
        map frame by the accumulated difference. A step without ground truth at either end keeps
        the map's length.
        """
        gt_pos = None if gt_pose is None else gt_pose[:3, 3]
        known = gt_pos is not None and self._gt_prev is not None
        self._gt_steps.append(float(np.linalg.norm(gt_pos - self._gt_prev)) if known else np.nan)
        self._gt_prev = gt_pos
        map_pos = step.pose[:3, 3].copy()
        if self._out_prev is None:
            out_pos, carry = map_pos, 0.0
        else:  # the rule of scale_steps (used by trajectory()) on this one step
            map_prev, out_prev, carry = self._out_prev
            carry += self._gt_steps[-1]
            pair = np.stack([to_h(np.eye(3), map_prev), to_h(np.eye(3), map_pos)])
            out_pos = out_prev + scale_steps(pair, [carry])[1, :3, 3] - map_prev
            if np.linalg.norm(map_pos - map_prev) > 1e-12:
                carry = 0.0
        self._out_prev = (map_pos, out_pos, carry)
        shift = out_pos - map_pos
        step.pose = step.pose.copy()
        step.pose[:3, 3] = out_pos
        if step.points3d is not None:
            step.points3d = step.points3d + shift

    # -- initialisation ------------------------------------------------------------------------
    def _predicted(self, gt_pose: np.ndarray | None) -> np.ndarray:
        if self.last_pose is None:
            return orthonormalise(gt_pose) if gt_pose is not None else np.eye(4)
        return self.last_pose @ self.velocity

    def _set_reference(self, index, ids, kp, gt_pose, depth, reason: str) -> OdometryStep:
        pose = self._predicted(gt_pose)
        self._ref = Keyframe(index, pose, ids, kp, reason, gt_pose)
        self._buffer = []
        self._kf_poses[index] = pose
        self._records.append((index, np.eye(4)))
        if self.scale_mode == "stereo":
            made = self._stereo_init(self._ref, depth)
            if made is not None:
                return made
        return OdometryStep(pose, "init", False, len(ids))

    def _initialise(self, index, ids, kp, gt_pose, depth) -> OdometryStep:
        ref = self._ref
        if ref is None:
            return self._set_reference(index, ids, kp, gt_pose, depth, "init")
        common, ia, ib = np.intersect1d(ref.ids, ids, assume_unique=True, return_indices=True)
        if len(common) < self.conf["min_correspondences"] or index - ref.index > self.conf["init_max_frames"]:
            self.counters["init_reference_reset"] += 1
            log.info("frame %d: no initialisation against frame %d (%d common tracks); new reference",
                     index, ref.index, len(common))  # fmt: skip
            return self._set_reference(index, ids, kp, gt_pose, depth, "init")
        pose = self._predicted(gt_pose)
        p0, p1 = ref.keypoints[ia], kp[ib]
        raw = float(np.median(np.linalg.norm(p1 - p0, axis=1)))
        need = self._init_parallax(len(common))
        if raw >= need:
            made = self._two_view_init(index, ids, kp, gt_pose, common, p0, p1, need)
            if made is not None:
                return made
        self._records.append((ref.index, invert(ref.pose) @ pose))
        self._buffer.append((len(self._records) - 1, ids, kp))
        return OdometryStep(pose, "init", False, len(common), 0, raw)

    def _init_scale(self, ref: Keyframe, index: int, gt_pose) -> float:
        """Length of the initial baseline (see the module docstring on scale)."""
        if self.scale_mode == "gt" and ref.gt_pose is not None and gt_pose is not None:
            return max(float(np.linalg.norm(gt_pose[:3, 3] - ref.gt_pose[:3, 3])), 1e-6)
        if self.keyframes == 0:  # the very first map defines the unit
            if self.scale_mode == "gt":
                self.counters["scale_unit_baseline"] += 1
                log.warning("frame %d: no ground truth for the initial baseline; using 1", index)
            return 1.0
        motion = float(np.linalg.norm(self.velocity[:3, 3])) * (index - ref.index)
        self.counters["scale_from_motion"] += 1
        log.warning("frame %d: re-initialised map scaled from the last known motion (%.3g per baseline)", index, motion)
        return motion if motion > 1e-9 else 1.0

    def _init_parallax(self, tracks: int) -> float:
        """Parallax (px) an initialisation needs: half of ``init_min_parallax`` once few tracks are left
        (waiting longer would leave nothing to initialise from, e.g. slow forward motion)."""
        full = self.conf["init_min_parallax"]
        return full if tracks >= 3 * self.conf["init_min_points"] else full / 2

    def _two_view_init(self, index, ids, kp, gt_pose, common, p0, p1, need: float) -> OdometryStep | None:
        c, ref = self.conf, self._ref
        tv = two_view(self.K, p0, p1, c["ransac_threshold"], c["ransac_method"], c["tri_max_error"], c["tri_min_angle"])
        if tv is None or tv.inliers.sum() < c["min_inliers"] or tv.good.sum() < c["init_min_points"]:
            return None
        inl = tv.inliers
        parallax = rotation_compensated_parallax(self.K, tv.T_1_0[:3, :3], p0[inl], p1[inl])
        if parallax < need:
            return None
        s = self._init_scale(ref, index, gt_pose)
        T_1_0 = tv.T_1_0.copy()
        T_1_0[:3, 3] *= s
        pose = ref.pose @ invert(T_1_0)
        X = tv.X0[tv.good] * s @ ref.pose[:3, :3].T + ref.pose[:3, 3]
        self.map.add(common[tv.good], X, index)
        self.window.clear()
        self._add_to_window(ref)
        kf = Keyframe(index, pose, ids, kp, "init", gt_pose)
        self._add_to_window(kf)
        self._records.append((index, np.eye(4)))
        t_ba = self._adjust(num_fixed=1, keep_baseline=s)
        self._ref = None
        self.state = "tracking"
        self.counters["initialisations"] += 1
        self._relocalise(self._buffer, ref, refine=False)
        self._buffer = []
        kf.map_points = len(self.map.lookup(ids)[0])
        log.info("frame %d: map initialised against frame %d with %d points", index, ref.index, len(self.map))
        return OdometryStep(self._kf_poses[index], "init", True, len(common), int(inl.sum()), parallax,
                            self.map.xyz.copy(), "init", len(self.map), 0.0, t_ba)  # fmt: skip

    def _stereo_init(self, ref: Keyframe, depth: _Depth) -> OdometryStep | None:
        X, ok = self._stereo_points(ref.pose, ref.keypoints, depth())
        if ok.sum() < self.conf["stereo_min_points"]:
            self.counters["stereo_init_fallback"] += 1
            log.warning("frame %d: %d stereo depths, too few for a stereo map; trying a two-view initialisation",
                        ref.index, int(ok.sum()))  # fmt: skip
            return None
        self.window.clear()
        self.map.add(ref.ids[ok], X[ok], ref.index)
        self._add_to_window(ref)
        ref.map_points = int(ok.sum())
        self._ref = None
        self.state = "tracking"
        self.counters["initialisations"] += 1
        return OdometryStep(ref.pose, "init", True, len(ref.ids), int(ok.sum()), 0.0, X[ok], "init", len(self.map))

    def _stereo_points(self, pose, kp, depth) -> tuple[np.ndarray, np.ndarray]:
        """World points ``[N, 3]`` of keypoints ``[N, 2]`` with stereo depth ``[N]``, and the usable mask."""
        if depth is None:
            return np.zeros((len(kp), 3)), np.zeros(len(kp), bool)
        ok = np.isfinite(depth) & (depth > 0) & (depth < self.conf["stereo_max_depth"])
        rays = (np.column_stack([kp, np.ones(len(kp))]) @ np.linalg.inv(self.K).T) * np.where(ok, depth, 0)[:, None]
        return rays @ pose[:3, :3].T + pose[:3, 3], ok

    def _relocalise(self, frames: list[tuple[int, np.ndarray, np.ndarray]], ref: Keyframe, refine: bool) -> None:
        """Poses of non-keyframes ``(record row, ids, keypoints)`` by PnP against the just-refined map.

        Used for the frames before the initialisation (they only had an extrapolated pose: RANSAC)
        and, at each keyframe, for the frames since the previous keyframe ``ref``: tracked against
        the map as it was, they would keep its unrefined points (and miss the points this keyframe
        added), so the trajectory would jump at every keyframe by the bundle adjustment's
        correction. Their tracked poses are close, so ``refine`` starts from them (no RANSAC;
        half the time) and falls back to RANSAC when too few correspondences fit.
        """
        c = self.conf
        T_ref_world = invert(self._kf_poses[ref.index])
        for row, ids, kp in frames:
            qr, mr = self.map.lookup(ids)
            uv, X = kp[qr], self.map.xyz[mr]
            res = None
            if refine:
                kf_index, rel = self._records[row]
                res = refine_pnp(self.K, uv, X, self._kf_poses[kf_index] @ rel, c["pnp"], c["pnp_threshold"],
                                 c["min_inliers"])  # fmt: skip
            if res is None:
                res = solve_pnp(self.K, uv, X, c["pnp"], c["pnp_threshold"], c["min_inliers"])
            if res is not None:
                self._records[row] = (ref.index, T_ref_world @ res.pose)
            else:
                self.counters["frames_not_relocalised"] += 1

    # -- tracking ------------------------------------------------------------------------------
    def _track(self, index, ids, kp, gt_pose, depth) -> OdometryStep:
        c = self.conf
        qr, mr = self.map.lookup(ids)
        if len(qr) < c["min_correspondences"]:
            return self._lost(index, ids, kp, gt_pose, depth, len(qr), "too few map points tracked")
        t0 = time.perf_counter()
        res = solve_pnp(self.K, kp[qr], self.map.xyz[mr], c["pnp"], c["pnp_threshold"], c["min_inliers"])
        t_pnp = 1e3 * (time.perf_counter() - t0)
        if res is None:
            return self._lost(index, ids, kp, gt_pose, depth, len(qr), "PnP failed")
        pose = res.pose
        self.map.remove_ids(ids[qr[~res.inliers]])  # outliers: wrong point or a track that jumped
        n_inl = int(res.inliers.sum())
        kf = self.window.last
        _, ia, ib = np.intersect1d(kf.ids, ids, assume_unique=True, return_indices=True)
        R_cur_kf = (invert(pose) @ kf.pose)[:3, :3]
        parallax = rotation_compensated_parallax(self.K, R_cur_kf, kf.keypoints[ia], kp[ib])
        tracked = n_inl / max(kf.map_points, 1)
        reason = self.policy.reason(index - kf.index, parallax, tracked, n_inl)
        step = OdometryStep(pose, "ok", reason is not None, len(qr), n_inl, parallax, None, reason or "",
                            len(self.map), t_pnp)  # fmt: skip
        if reason is None:
            self._records.append((kf.index, invert(kf.pose) @ pose))
            self._since_kf.append((len(self._records) - 1, ids, kp))
            return step
        return self._keyframe(index, ids, kp, gt_pose, depth, step)

    def _keyframe(self, index, ids, kp, gt_pose, depth, step: OdometryStep) -> OdometryStep:
        prev = self.window.last
        kf = Keyframe(index, step.pose, ids, kp, step.kf_reason, gt_pose)
        self._add_to_window(kf)
        self._records.append((index, np.eye(4)))
        if self.scale_mode == "gt":
            self._gt_rescale(index)
        new_ids = self._new_points(kf, depth)
        step.t_ba_ms = self._adjust(num_fixed=self.conf["ba_fixed"])
        t0 = time.perf_counter()
        self._relocalise(self._since_kf, prev, refine=True)
        step.t_reloc_ms = 1e3 * (time.perf_counter() - t0)
        self._since_kf = []
        self.map.cull(ids, [k.ids for k in self.window])
        kf.map_points = len(self.map.lookup(ids)[0])
        step.pose = self._kf_poses[index]
        step.map_points = len(self.map)
        rows = self.map.lookup(new_ids)[1]
        step.points3d = self.map.xyz[rows].copy()
        self.counters["points_added"] += len(new_ids)
        return step

    def _new_points(self, kf: Keyframe, depth: _Depth) -> np.ndarray:
        """Add the new keyframe's tracks that are not map points yet; return the ids added."""
        c = self.conf
        cand = ~self.map.contains(kf.ids)
        added = []
        if self.scale_mode == "stereo" and cand.any():
            X, ok = self._stereo_points(kf.pose, kf.keypoints, depth())
            use = cand & ok
            self.map.add(kf.ids[use], X[use], kf.index)
            added.append(kf.ids[use])
            cand &= ~use
        for old in list(self.window)[:-1]:  # oldest first: the widest baseline
            if not cand.any():
                break
            common, ia, ib = np.intersect1d(old.ids, kf.ids[cand], assume_unique=True, return_indices=True)
            if len(common) == 0:
                continue
            rows = np.flatnonzero(cand)[ib]
            X, good = triangulate(self.K, old.pose, kf.pose, old.keypoints[ia], kf.keypoints[rows],
                                  c["tri_max_error"], c["tri_min_angle"])  # fmt: skip
            self.map.add(common[good], X[good], kf.index)
            added.append(common[good])
            cand[rows] = False
        return np.concatenate(added) if added else np.zeros(0, np.int64)

    def _add_to_window(self, kf: Keyframe) -> None:
        self.window.add(kf)
        self._kf_poses[kf.index] = kf.pose
        self.keyframes += 1

    def _adjust(self, num_fixed: int, keep_baseline: float | None = None) -> float:
        """Windowed bundle adjustment, then outlier removal; returns its time in ms."""
        c = self.conf
        frames = list(self.window)
        if len(frames) < 2:
            return 0.0
        obs = []
        for kf in frames:
            qr, mr = self.map.lookup(kf.ids)
            obs.append(Observations(mr, kf.keypoints[qr]))
        poses = np.stack([kf.pose for kf in frames])
        if num_fixed == 1 and keep_baseline is None:  # gauge: the first pose and the first baseline
            keep_baseline = float(np.linalg.norm(poses[1, :3, 3] - poses[0, :3, 3]))
        try:
            res = bundle_adjust(self.K, self.image_size, poses, obs, self.map.xyz, min(num_fixed, len(frames) - 1),
                                c["ba_loss"], c["ba_loss_scale"], c["ba_iterations"])  # fmt: skip
        except (ValueError, RuntimeError) as err:
            self.counters["ba_failures"] += 1
            log.warning("bundle adjustment failed (%s); keeping the unrefined window", err)
            return 0.0
        if not res.converged or not np.isfinite(res.poses).all() or not np.isfinite(res.points).all():
            self.counters["ba_failures"] += 1
            log.warning("bundle adjustment gave no usable solution; keeping the unrefined window")
            return 1e3 * res.seconds
        new_poses, points = res.poses, res.points
        if keep_baseline is not None:  # a similarity about the fixed first pose: same cost, scale kept
            c0 = new_poses[0, :3, 3]
            r = keep_baseline / max(float(np.linalg.norm(new_poses[1, :3, 3] - c0)), 1e-12)
            new_poses[:, :3, 3] = c0 + r * (new_poses[:, :3, 3] - c0)
            points = c0 + r * (points - c0)
        for kf, T in zip(frames, new_poses):
            kf.pose = T
            self._kf_poses[kf.index] = T
        self.map.xyz = points
        bad = np.zeros(len(self.map), bool)
        for kf, o in zip(frames, obs):
            err = reprojection_error(self.K, kf.pose, self.map.xyz[o.point_rows], o.uv)
            bad[o.point_rows[err > c["ba_max_error"]]] = True
        self.counters["points_culled_ba"] += int(bad.sum())
        self.map.keep(~bad)
        self.counters["bundle_adjustments"] += 1
        self.ba_ms.append(1e3 * res.seconds)
        return 1e3 * res.seconds

    def _gt_rescale(self, index: int) -> None:
        """``gt``: scale the window about its oldest keyframe so its path has the ground-truth length."""
        frames = list(self.window)
        est = gt = 0.0
        for a, b in zip(frames[:-1], frames[1:]):
            if a.gt_pose is None or b.gt_pose is None:
                continue
            est += float(np.linalg.norm(b.pose[:3, 3] - a.pose[:3, 3]))
            gt += float(np.linalg.norm(b.gt_pose[:3, 3] - a.gt_pose[:3, 3]))
        if est <= 1e-9 or gt <= 0:
            self.counters["gt_scale_missing"] += 1
            log.warning("keyframe %d: no ground-truth step in the window; scale kept from the last known motion", index)
            return
        r = gt / est
        c0 = frames[0].pose[:3, 3].copy()
        for kf in frames:
            kf.pose = kf.pose.copy()
            kf.pose[:3, 3] = c0 + r * (kf.pose[:3, 3] - c0)
            self._kf_poses[kf.index] = kf.pose
        self.map.transform(r, np.eye(3), c0 - r * c0)

    # -- loss ----------------------------------------------------------------------------------
    def _lost(self, index, ids, kp, gt_pose, depth, n: int, why: str) -> OdometryStep:
        self.failures += 1
        log.warning("frame %d: tracking lost (%s, %d correspondences); re-initialising (failure %d)",
                    index, why, n, self.failures)  # fmt: skip
        self.map = LocalMap()
        self.window.clear()
        self._since_kf = []  # their keyframe's map is gone: they keep their tracked poses
        self.state = "init"
        step = self._set_reference(index, ids, kp, gt_pose, depth, "lost")
        return OdometryStep(step.pose, "lost", True, n, step.inliers, 0.0, step.points3d, "lost", len(self.map))


class _Depth:
    """Stereo depth of the sorted valid keypoints, computed on first use (stereo matching is costly)."""

    def __init__(self, source, order: np.ndarray) -> None:
        self.source, self.order, self.value, self.done = source, order, None, False

    def __call__(self) -> np.ndarray | None:
        if not self.done:
            d = self.source() if callable(self.source) else self.source
            self.value = None if d is None else np.asarray(d, np.float64).reshape(-1)[self.order]
            self.done = True
        return self.value
