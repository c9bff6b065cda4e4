"""The viewer's main window: frame + tracks on the left, trajectory on the right, status bar.

The pipeline runs in a :class:`~vo_app.viewer_worker.PipelineWorker` thread; a timer drains its
snapshots every ``poll_ms``: every pose goes into the trajectory, only the newest frame is
drawn (so a slow display skips frames instead of slowing the pipeline). Keys: space pauses or
resumes, → steps one frame while paused, q / Esc closes; closing stops the pipeline after the
frame in progress.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from PyQt6 import QtCore, QtWidgets

from frontend.draw import draw_tracks

from .viewer_views import BACKGROUND_RGB, FrameView, Trail, legend_label, make_trajectory_view
from .viewer_worker import PipelineWorker, Snapshot

log = logging.getLogger(__name__)

Key = QtCore.Qt.Key
MAX_POINTS = 200_000  # triangulated points kept for display (oldest dropped)


class ViewerWindow(QtWidgets.QMainWindow):
    """Live view of a :class:`vo_app.pipeline.VOPipeline` run.

    Args:
        pipeline: the pipeline to run (not started).
        video: optional :class:`vo_app.headless.TrackVideo`, fed every frame by the worker.
        use_gl: False forces the 2D trajectory plot; None tries OpenGL first.
        show_points: draw the triangulated points.
        close_when_done: close by itself once the pipeline has finished (tests, scripts).
        poll_ms: display refresh period.
    """

    closed = QtCore.pyqtSignal()

    def __init__(self, pipeline, video=None, use_gl: bool | None = None, show_points: bool = True,
                 close_when_done: bool = False, poll_ms: int = 30) -> None:
        super().__init__()
        self.pipeline, self.video = pipeline, video
        self.show_points, self.close_when_done = show_points, close_when_done
        self.worker: PipelineWorker | None = None
        self.est, self.gt, self.points = Trail(), Trail(), Trail(max_rows=MAX_POINTS)
        self.frames_shown = 0  # snapshots taken from the worker
        self.finished = False
        self.latest: Snapshot | None = None
        self._frame_time: float | None = None  # smoothed seconds per frame
        self._points_dirty = False
        self.setWindowTitle(f"TraqPoint-VO — {pipeline.extractor.name} on {pipeline.source.name} "
                            f"(scale: {pipeline.scale})")
        self.frame_view = FrameView()
        self.trajectory = make_trajectory_view(use_gl)
        self._build_layout()
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(poll_ms)
        self.timer.timeout.connect(self.poll)

    def _build_layout(self) -> None:
        right = QtWidgets.QWidget()
        column = QtWidgets.QVBoxLayout(right)
        column.setContentsMargins(0, 0, 0, 0)
        column.setSpacing(0)
        column.addWidget(legend_label())
        column.addWidget(self.trajectory.widget, 1)
        split = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        split.addWidget(self.frame_view.widget)
        split.addWidget(right)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        self.setCentralWidget(split)
        self.status = QtWidgets.QLabel("starting…")
        self.statusBar().addWidget(self.status, 1)
        self.statusBar().setStyleSheet(f"background: rgb{BACKGROUND_RGB}; color: rgb(230, 230, 230);")
        w, h = self.pipeline.source.image_size
        self.resize(min(1600, max(1000, int(1.7 * w))), min(900, max(480, h + 120)))

    # -- control -------------------------------------------------------------------------------
    def start(self, paused: bool = False) -> None:
        """Start the pipeline thread and the display timer."""
        self.worker = PipelineWorker(self.pipeline, self.video, paused=paused)
        self.worker.start()
        self.timer.start()
        self._show_status()

    def toggle_pause(self) -> None:
        if self.worker is not None and not self.finished:
            self.worker.set_paused(not self.worker.paused)
            self._show_status()

    def step_frame(self) -> None:
        if self.worker is not None and self.worker.paused:
            self.worker.step()

    def stop(self) -> None:
        """Stop the pipeline thread (after the frame in progress) and the timer; idempotent."""
        self.timer.stop()
        if self.worker is not None:
            self.worker.stop()
            self.poll()  # take what arrived meanwhile, so the outputs and the view agree

    @property
    def error(self) -> BaseException | None:
        return None if self.worker is None else self.worker.error

    def keyPressEvent(self, event) -> None:  # noqa: N802 (Qt override)
        key = event.key()
        if key == Key.Key_Space:
            self.toggle_pause()
        elif key == Key.Key_Right:
            self.step_frame()
        elif key in (Key.Key_Q, Key.Key_Escape):
            self.close()
        else:
            super().keyPressEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt override)
        self.stop()
        event.accept()
        self.closed.emit()

    # -- display -------------------------------------------------------------------------------
    def poll(self) -> None:
        """Take the worker's new snapshots, redraw with the newest, notice the end of the run."""
        if self.worker is None:
            return
        latest = None
        while not self.worker.updates.empty():
            latest = self.worker.updates.get_nowait()
            self._add(latest)
        if latest is not None:
            self._draw(latest)
        if self.worker.done.is_set() and self.worker.updates.empty() and not self.finished:
            self.finished = True
            self._show_status()
            if self.close_when_done:
                QtCore.QTimer.singleShot(0, self.close)

    def _add(self, snap: Snapshot) -> None:
        self.frames_shown += 1
        self.est.extend(snap.pose[:3, 3])
        if snap.gt_pose is not None:
            self.gt.extend(snap.gt_pose[:3, 3])
        if self.show_points and snap.points3d is not None and len(snap.points3d):
            self.points.extend(snap.points3d[np.isfinite(snap.points3d).all(1)])
            self._points_dirty = True
        dt = 1.0 / max(snap.fps, 1e-9)
        self._frame_time = dt if self._frame_time is None else 0.8 * self._frame_time + 0.2 * dt

    def _draw(self, snap: Snapshot) -> None:
        self.latest = snap
        canvas = draw_tracks(snap.image, snap.tracks, snap.keypoints)
        self.frame_view.set_image(cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB))
        points = self.points.data.copy() if self._points_dirty else None  # the capped trail shifts in place
        self._points_dirty = False
        h, w = snap.image.shape[:2]
        self.trajectory.update(self.est.data, self.gt.data if len(self.gt) else None, snap.pose, snap.K, (w, h),
                               points)
        self._show_status()

    def _show_status(self) -> None:
        snap = self.latest
        parts = []
        if snap is not None:
            s = snap.stats
            fps = 1.0 / self._frame_time if self._frame_time else 0.0
            parts = [f"frame {snap.index}", f"{fps:.1f} fps", f"tracks {s.get('active', 0)}",
                     f"inliers {s.get('inliers', 0)}/{s.get('matches', 0)}", f"keyframes {snap.keyframes}",
                     f"failures {snap.failures}", snap.status]
        if self.error is not None:
            parts.append(f"ERROR: {self.error} (q: quit)")
            self.status.setStyleSheet("color: rgb(255, 110, 110);")
        elif self.finished:
            parts.append("finished (q: quit)")
        elif self.worker is not None and self.worker.paused:
            parts.append("paused (space: resume, →: step)")
        elif not parts:
            parts.append("starting…")
        self.status.setText("  |  ".join(parts))
