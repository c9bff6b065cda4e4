"""The viewer's pipeline thread: runs :class:`VOPipeline` off the UI thread, with pause and step.

The worker iterates ``pipeline.run()`` in a plain :class:`threading.Thread` and puts one
:class:`Snapshot` per frame on a queue that the window drains on a timer, so drawing never
holds up the pipeline and a slow pipeline never freezes the window. Snapshots only hold
references: the tracker builds a new ``Tracks`` table every frame and never changes an old one,
so the UI thread can draw a snapshot while the worker carries on. No Qt in this module.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from frontend.tracker import Tracks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Snapshot:
    """What the window draws of one processed frame.

    Attributes:
        index: frame index in the source.
        image: ``H x W`` (or ``H x W x 3`` RGB) uint8 image of the frame.
        keypoints: ``[N, 2]`` float32 keypoints of the frame.
        tracks: active tracks after the frame (``history`` gives the trails), or None.
        pose: ``T_world_cam`` 4x4 estimate.
        gt_pose: ``T_world_cam`` 4x4 ground truth, or None when unknown.
        K: 3x3 intrinsics (for the frustum).
        points3d: ``[P, 3]`` world points triangulated at this frame (new keyframes), or None.
        status: odometry status ``init|ok|static|lost``.
        stats: the pipeline's per-frame stats row (``active``, ``matches``, ``inliers``, ...).
        keyframes / failures: odometry counters after the frame.
        fps: processing rate of this frame (time spent in the pipeline only, pauses excluded).
    """

    index: int
    image: np.ndarray
    keypoints: np.ndarray
    tracks: Tracks | None
    pose: np.ndarray
    gt_pose: np.ndarray | None
    K: np.ndarray
    points3d: np.ndarray | None
    status: str
    stats: dict
    keyframes: int
    failures: int
    fps: float

    @classmethod
    def of(cls, pipeline, step, seconds: float) -> Snapshot:
        """Snapshot of ``step`` (a ``StepResult``) just after ``pipeline`` produced it."""
        odo, frame = step.odometry, step.frame
        return cls(
            index=frame.index, image=np.asarray(frame.image), keypoints=frame.keypoints.numpy().reshape(-1, 2),
            tracks=pipeline.tracker.tracks, pose=odo.pose, gt_pose=step.gt_pose, K=frame.K, points3d=odo.points3d,
            status=odo.status, stats=step.stats, keyframes=pipeline.odometry.keyframes,
            failures=pipeline.odometry.failures, fps=1.0 / max(seconds, 1e-9),
        )


class PipelineWorker(threading.Thread):
    """Runs a pipeline to its end (or until :meth:`stop`), honouring pause and single steps.

    Args:
        pipeline: a :class:`vo_app.pipeline.VOPipeline` (not started).
        video: optional :class:`vo_app.headless.TrackVideo` fed every frame, closed at the end.
        paused: start paused (frames then come one :meth:`step` at a time).

    ``updates`` holds the snapshots not yet taken by the window; ``error`` the exception that
    ended the run early (None otherwise); ``done`` is set once the thread has finished.
    """

    def __init__(self, pipeline, video=None, paused: bool = False) -> None:
        super().__init__(name="traqpoint-vo-pipeline", daemon=True)
        self.pipeline, self.video = pipeline, video
        self.updates: queue.Queue[Snapshot] = queue.Queue()
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.frames = 0
        self._cond = threading.Condition()
        self._paused, self._steps, self._stopping = paused, 0, False

    # -- control (any thread) -----------------------------------------------------------------
    @property
    def paused(self) -> bool:
        return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            self._paused, self._steps = paused, 0
            self._cond.notify_all()

    def step(self) -> None:
        """While paused, let exactly one more frame through."""
        with self._cond:
            if self._paused:
                self._steps += 1
                self._cond.notify_all()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Ask the thread to stop after the frame in progress and wait for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
            if self.is_alive():
                log.warning("the pipeline thread did not stop within %.0f s", timeout)

    # -- the thread ----------------------------------------------------------------------------
    def _next_turn(self) -> bool:
        """Block while paused (and no step is pending); False once stopping."""
        with self._cond:
            while self._paused and not self._steps and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return False
            if self._paused:
                self._steps -= 1
            return True

    def run(self) -> None:
        steps = self.pipeline.run()
        try:
            while self._next_turn():
                t0 = time.perf_counter()
                step = next(steps, None)
                if step is None:
                    break
                seconds = time.perf_counter() - t0
                if self.video is not None:
                    self.video.add(self.pipeline, step)
                self.frames += 1
                self.updates.put(Snapshot.of(self.pipeline, step, seconds))
        except Exception as exc:  # handed to the window (shown) and re-raised by run_viewer
            self.error = exc
            log.error("the pipeline stopped: %s", exc)
        finally:
            steps.close()
            if self.video is not None:
                self.video.close()
            self.done.set()
