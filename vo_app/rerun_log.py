"""``traqpoint-vo --rerun``: the run logged to a Rerun recording (``.rrd``), as pySLAM users view runs.

    pip install "traqpoint-vo[rerun]"
    traqpoint-vo --sequence demo --headless --rerun --out out/demo   # -> out/demo/recording.rrd
    rerun out/demo/recording.rrd

Timeline ``frame`` (the source's frame index). Entities:

* ``world/camera`` the estimated pose ``T_world_cam`` (Transform3D), ``world/camera/image`` the
  frame with its pinhole ``K``, ``world/camera/image/tracks`` track positions coloured by age
  (blue young -> red old, as the viewer) and ``.../trails`` their last segments;
* ``world/trajectory`` (and ``world/ground_truth`` when known) every ``trajectory_every`` frames
  and at the end; ``world/points/kf<k>`` the map points triangulated at each new keyframe;
* ``stats/<name>`` tracks, inliers and FPS as scalars.

World = the first camera's frame (x right, y down, z forward). :class:`RerunPipeline` wraps a
:class:`vo_app.pipeline.VOPipeline` so that the headless run and the viewer log the same way,
unchanged. ``rerun-sdk`` (~170 MB) is optional: without it ``--rerun`` is one clear error.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.errors import TraqPointError

log = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "traqpoint-vo[rerun]" (or pip install rerun-sdk)'


def import_rerun():
    """The ``rerun`` module, or one :class:`TraqPointError` saying how to install it."""
    try:
        import rerun
    except ImportError:
        raise TraqPointError(f"--rerun needs the Rerun SDK: {INSTALL_HINT}") from None
    return rerun


def age_rgb(length: np.ndarray, max_age: int = 10) -> np.ndarray:
    """``[T, 3]`` uint8 RGB colours of tracks of ``length [T]`` frames (the viewer's turbo ramp)."""
    from frontend.draw import age_colours

    palette = age_colours()[:, ::-1]  # BGR -> RGB
    level = np.minimum(np.maximum(length, 1) - 1, max_age) * (len(palette) - 1) // max(max_age, 1)
    return palette[level.astype(np.int64)]


def trail_segments(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segments ``[S, 2, 2]`` between consecutive observed positions of ``history [T, L, 2]`` and
    the track row ``[S]`` of each (NaN = not observed)."""
    if history.shape[1] < 2:
        return np.zeros((0, 2, 2), np.float32), np.zeros(0, np.int64)
    valid = ~np.isnan(history[..., 0])
    ok = valid[:, :-1] & valid[:, 1:]
    segs = np.stack([history[:, :-1][ok], history[:, 1:][ok]], axis=1)
    rows = np.broadcast_to(np.arange(len(history))[:, None], ok.shape)[ok]
    return segs, rows


class RerunLog:
    """Writes one run to ``path`` (``.rrd``); :meth:`add` once per :class:`StepResult`, then :meth:`close`."""

    def __init__(self, path: str | Path, trajectory_every: int = 10, application_id: str = "traqpoint-vo") -> None:
        rr = import_rerun()
        self.rr, self.path, self.every = rr, Path(path), max(1, trajectory_every)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rec = rr.RecordingStream(application_id)
        self.rec.save(str(self.path))
        self.rec.log("world", rr.ViewCoordinates.RDF, static=True)
        self.est: list[np.ndarray] = []
        self.gt: list[np.ndarray] = []
        self.keyframes = 0
        self.frames = 0

    def add(self, pipeline, step) -> None:
        """Log the frame, its tracks, the pose, new map points and the stats of ``step``."""
        rr, rec = self.rr, self.rec
        frame, odo = step.frame, step.odometry
        rec.set_time("frame", sequence=int(frame.index))
        image = np.asarray(frame.image)
        h, w = image.shape[:2]
        pose = np.asarray(odo.pose, dtype=np.float64)
        rec.log("world/camera", rr.Transform3D(translation=pose[:3, 3], mat3x3=pose[:3, :3]))
        rec.log("world/camera/image", rr.Pinhole(image_from_camera=np.asarray(frame.K, np.float64), resolution=[w, h]))
        rec.log("world/camera/image", rr.Image(image))
        tracks = pipeline.tracker.tracks
        if tracks is not None and len(tracks):
            colours = age_rgb(tracks.length)
            rec.log("world/camera/image/tracks", rr.Points2D(tracks.keypoints, colors=colours, radii=2.0))
            segs, rows = trail_segments(tracks.history)
            rec.log("world/camera/image/trails", rr.LineStrips2D(segs, colors=colours[rows]))
        else:
            rec.log("world/camera/image/tracks", rr.Clear(recursive=False))
        self.est.append(pose[:3, 3].copy())
        if step.gt_pose is not None:
            self.gt.append(np.asarray(step.gt_pose, np.float64)[:3, 3].copy())
        if odo.points3d is not None and len(odo.points3d):
            rec.log(f"world/points/kf{self.keyframes}", rr.Points3D(odo.points3d, colors=[140, 180, 255], radii=0.02))
            self.keyframes += 1
        for name in ("active", "inliers", "matches"):
            if name in step.stats:
                rec.log(f"stats/{name}", rr.Scalars(float(step.stats[name])))
        rec.log("stats/fps", rr.Scalars(float(step.fps)))
        self.frames += 1
        if self.frames % self.every == 0:
            self.log_trajectories()

    def log_trajectories(self) -> None:
        """The estimated (orange) and ground-truth (green) camera paths so far."""
        if self.est:
            self.rec.log("world/trajectory", self.rr.LineStrips3D([np.stack(self.est)], colors=[255, 150, 40]))
        if self.gt:
            self.rec.log("world/ground_truth", self.rr.LineStrips3D([np.stack(self.gt)], colors=[90, 220, 90]))

    def close(self) -> None:
        """Log the final trajectories and flush the file."""
        self.log_trajectories()
        self.rec.flush()
        self.rec.disconnect()
        log.info("Rerun recording of %d frames: %s (open it with: rerun %s)", self.frames, self.path, self.path)


class RerunPipeline:
    """A :class:`vo_app.pipeline.VOPipeline` whose :meth:`run` also logs every step to a :class:`RerunLog`.

    Everything else (source, summary, write_outputs, ...) is the wrapped pipeline's.
    """

    def __init__(self, pipeline, path: str | Path) -> None:
        self._pipeline = pipeline
        self._log = RerunLog(path)

    def __getattr__(self, name: str):
        return getattr(self._pipeline, name)

    def run(self) -> Iterator:
        try:
            for step in self._pipeline.run():
                self._log.add(self._pipeline, step)
                yield step
        finally:
            self._log.close()


def rerun_path(value: str, out: str | Path) -> Path:
    """``--rerun`` without a file name writes ``OUT/recording.rrd``."""
    return Path(value) if value else Path(out) / "recording.rrd"
