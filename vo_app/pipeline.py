"""The VO pipeline: source -> extraction engine -> tracker -> odometry -> outputs.

:class:`VOPipeline` is what the command line, the viewer and the KITTI benchmark all run; it
yields one :class:`StepResult` per frame (for live display) and writes the outputs at the end:
``trajectory_kitti.txt``, ``trajectory_tum.txt``, ``stats.csv``, ``results.json`` and optionally
``map.ply`` (trajectory + triangulated points, through Open3D).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from frontend.engine import ExtractionEngine
from frontend.frame import Frame
from frontend.tracker import Tracker
from models.base import Extractor
from models.errors import BadInputError

from .odometry import Odometry, OdometryStep
from .run_log import PointStore, StatsLog
from .stereo import StereoDepth
from .trajectory import fill_gaps, write_kitti, write_tum

log = logging.getLogger(__name__)


@dataclass
class StepResult:
    """Everything known after one frame (what the viewer draws)."""

    frame: Frame
    odometry: OdometryStep
    gt_pose: np.ndarray | None
    stats: dict
    fps: float


@dataclass
class RunSummary:
    """Poses and statistics of a finished (or interrupted) run."""

    indices: list[int] = field(default_factory=list)
    timestamps: list[float] = field(default_factory=list)
    poses: list[np.ndarray] = field(default_factory=list)
    gt: list[np.ndarray | None] = field(default_factory=list)
    rows: StatsLog = field(default_factory=StatsLog)  # per-frame stats, streamed to a temporary file
    points: PointStore = field(default_factory=PointStore)  # map points for map.ply, bounded
    seconds: float = 0.0


class VOPipeline:
    """Run monocular VO over a source.

    Args:
        source: a :mod:`vo_app.sources` source (iterable of :class:`~frontend.frame.Frame`).
        extractor: any :class:`models.Extractor`.
        scale: ``gt`` | ``stereo`` | ``mono``.
        num_keypoints: per-frame budget.
        tracker_conf / odometry_conf: overrides of :class:`Tracker` / :class:`Odometry` defaults.
        max_frames: stop after this many frames.
        backend: network backend of TraqPoint extractors (:mod:`frontend.backends`; ``auto`` = eager).
    """

    def __init__(
        self,
        source,
        extractor: Extractor,
        scale: str = "mono",
        num_keypoints: int = 1024,
        tracker_conf: dict | None = None,
        odometry_conf: dict | None = None,
        max_frames: int | None = None,
        backend: str = "auto",
    ) -> None:
        if scale == "gt" and getattr(source, "gt_poses", None) is None:
            raise BadInputError(f"--scale gt needs ground-truth poses, and {source.name} has none")
        if scale == "stereo" and not getattr(source, "has_stereo", False):
            raise BadInputError(f"--scale stereo needs a stereo source (KITTI image_1); {source.name} has none")
        self.source, self.extractor, self.scale = source, extractor, scale
        self.engine = ExtractionEngine(extractor, batch_size=1, num_keypoints=num_keypoints, backend=backend)
        # the engine's extractor is the one that runs (a compiled network also compiles the matcher)
        self.tracker = Tracker(self.engine.extractor, **{"history": 12, **(tracker_conf or {})})
        size = getattr(source, "image_size", None)  # (width, height)
        warm = self.engine.warm_up((int(size[1]), int(size[0]))) if size is not None else None
        if warm:  # a compiled network / CUDA specialised at the real size: not on the first live frame
            self.tracker.warm_up(warm[0]["descriptors"])
        self.odometry: Odometry | None = None
        self.odometry_conf = odometry_conf or {}
        self.max_frames = max_frames
        self.summary = RunSummary()
        self.stereo = StereoDepth(source.K[0, 0], source.stereo_baseline) if scale == "stereo" else None

    def _frames(self) -> Iterator[Frame]:
        """The source's frames, as they are, up to ``max_frames``."""
        for n, frame in enumerate(self.source):
            if self.max_frames is not None and n >= self.max_frames:
                return
            yield frame

    def run(self) -> Iterator[StepResult]:
        """Process the source frame by frame, yielding a :class:`StepResult` each time."""
        t_prev = time.perf_counter()
        for frame in self.engine.run(self._frames()):
            res = self.tracker.track(frame)
            f = res.frame
            if self.odometry is None:
                size = getattr(self.source, "image_size", None)
                self.odometry = Odometry(f.K, self.scale, image_size=size, **self.odometry_conf)
            gt = f.pose
            kp = f.keypoints.numpy()
            stereo = None
            if self.stereo is not None:
                stereo = lambda f=f, kp=kp: self.stereo.at(f.image, self.source.right_image(f.index), kp)  # noqa: E731
            step = self.odometry.step(f.index, kp, f.track_ids.numpy(), gt, stereo)
            now = time.perf_counter()
            busy = now - t_prev
            fps = 1.0 / max(busy, 1e-9)
            row = {
                **res.stats.as_dict(),
                "status": step.status,
                "keyframe": step.keyframe,
                "correspondences": step.correspondences,
                "pose_inliers": step.inliers,
                "parallax_px": round(step.parallax_px, 3),
                "kf_reason": step.kf_reason or "-",
                "map_points": step.map_points,
                "t_pnp_ms": round(step.t_pnp_ms, 3),
                "t_ba_ms": round(step.t_ba_ms, 3),
                "t_reloc_ms": round(step.t_reloc_ms, 3),
                "fps": round(fps, 2),
            }
            s = self.summary
            s.indices.append(f.index)
            s.timestamps.append(float(f.timestamp if f.timestamp is not None else f.index))
            s.poses.append(step.pose)
            s.gt.append(gt)
            s.rows.append(row)
            if step.points3d is not None and len(step.points3d):
                s.points.append(step.points3d)
            s.seconds += busy
            yield StepResult(f, step, gt, row, fps)
            t_prev = time.perf_counter()  # time spent by the consumer (viewer, pauses) is not ours

    def run_all(self) -> RunSummary:
        """Run to the end without displaying anything."""
        for _ in self.run():
            pass
        return self.summary

    # -- outputs -------------------------------------------------------------------------------
    def final_poses(self) -> np.ndarray:
        """``[F, 4, 4]`` poses of the frames run so far, after the keyframes' last refinement.

        Each frame is re-expressed from its reference keyframe's final pose (as ORB-SLAM saves its
        trajectory); :attr:`RunSummary.poses` keeps the online estimates the viewer showed.
        """
        s = self.summary
        if self.odometry is not None:
            poses = self.odometry.trajectory()
            if len(poses) == len(s.poses):
                return poses
        return np.stack(s.poses) if s.poses else np.zeros((0, 4, 4))

    def metrics(self) -> dict:
        """Trajectory metrics against ground truth (when known) and front-end statistics."""
        from .trajectory import ape, kitti_metrics, path_length

        s = self.summary
        rows = s.rows
        out = {
            "frames": len(rows),
            "skipped_frames": int(getattr(self.source, "skipped", 0)),
            "tracking_failures": self.odometry.failures if self.odometry else 0,
            "keyframes": self.odometry.keyframes if self.odometry else 0,
            "aktl": self.tracker.aktl,
            "inlier_ratio": float(np.mean([r["inliers"] / r["matches"] for r in rows if r["matches"]]))
            if any(r["matches"] for r in rows)
            else None,
            "fps": len(rows) / s.seconds if s.seconds > 0 else None,
            "scale": self.scale,
            "frames_without_keypoints": sum(r["keypoints"] == 0 for r in rows),
            # every odometry fallback and event (re-initialisations, scale fallbacks, BA failures, culling)
            "odometry_events": dict(sorted(self.odometry.counters.items())) if self.odometry else {},
            "keyframe_reasons": dict(Counter(r["kf_reason"] for r in rows if r["keyframe"])),
            "pnp_ms_median": float(np.median([r["t_pnp_ms"] for r in rows if r["t_pnp_ms"] > 0]))
            if any(r["t_pnp_ms"] > 0 for r in rows)
            else None,
            "ba_ms_median": float(np.median(self.odometry.ba_ms)) if self.odometry and self.odometry.ba_ms else None,
            # frames of a source with ground truth whose own pose is unknown (NaN row, no association)
            "frames_without_gt": sum(g is None for g in s.gt) if getattr(self.source, "gt_poses", None) is not None
            else None,
        }
        have_gt = [g is not None for g in s.gt]
        if sum(have_gt) >= 3:
            gt = np.stack([g for g in s.gt if g is not None])
            final = self.final_poses()
            est = final[np.asarray(have_gt)]
            online = np.stack([p for p, ok in zip(s.poses, have_gt) if ok])
            align = "sim3" if self.scale == "mono" else "se3"
            out.update(kitti_metrics(gt, est, align))
            out["alignment"] = align
            out["ate_online_pct_path"] = ape(gt, online, align)["rmse"] / max(path_length(gt), 1e-9) * 100
            if self.scale != "mono":  # anchored at the first ground-truth pose, no alignment
                out["ate_unaligned_pct_path"] = ape(gt, est, "none")["rmse"] / max(path_length(gt), 1e-9) * 100
        return out

    def write_outputs(self, out_dir: str | Path, export_ply: bool = False, extra: dict | None = None) -> dict:
        """Write trajectories, per-frame stats and ``results.json`` (plus the ``extra`` top-level keys,
        e.g. how the run ended); return the metrics."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        s = self.summary
        poses = self.final_poses()
        # skipped frames keep their row: a pose interpolated between their neighbours
        indices, filled, _ = fill_gaps(np.asarray(s.indices), poses)
        stamps = np.interp(indices, s.indices, s.timestamps) if len(indices) else np.zeros(0)
        if len(filled):
            write_kitti(out / "trajectory_kitti.txt", filled)
            write_tum(out / "trajectory_tum.txt", stamps, filled)
        else:
            for name in ("trajectory_kitti.txt", "trajectory_tum.txt"):
                (out / name).write_text("")
        if s.rows:
            s.rows.write_csv(out / "stats.csv")
        metrics = self.metrics()
        result = {"source": str(self.source.name), "method": self.extractor.name, **(extra or {}), "metrics": metrics}
        (out / "results.json").write_text(json.dumps(result, indent=1))
        if export_ply:
            from .export import export_ply as _export

            _export(out / "map.ply", poses, s.points.array())
        return metrics
