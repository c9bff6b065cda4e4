"""The viewer's panes: the frame with its tracks, and the trajectory in 3D (OpenGL) or 2D.

Conventions: poses are ``T_world_cam`` with the camera frame x right, y down, z forward
(:mod:`models.conventions`), so the ground is roughly the world x–z plane and "up" is -y.
The 3D view shows world ``(x, y, z)`` at display ``(x, z, -y)`` (a rotation: pyqtgraph's
GL views have z up); the 2D fallback is the top-down x–z plane (x right, z up the screen).
Estimated trajectory in orange, ground truth in green, the current camera as a white
frustum, triangulated points in pale blue.
"""

from __future__ import annotations

import logging

import numpy as np
import pyqtgraph as pg
from PyQt6 import QtCore, QtGui, QtWidgets

try:  # needs PyOpenGL; without it the viewer falls back to the 2D plot
    import pyqtgraph.opengl as gl
except Exception as _exc:  # noqa: BLE001 (any import failure means: no 3D view)
    gl, GL_IMPORT_ERROR = None, _exc
else:
    GL_IMPORT_ERROR = None

log = logging.getLogger(__name__)

EST_RGB = (255, 153, 26)  # estimated trajectory
GT_RGB = (90, 217, 90)  # ground truth
FRUSTUM_RGB = (255, 255, 255)
POINTS_RGBA = (150, 190, 255, 110)
BACKGROUND_RGB = (18, 18, 24)
DISPLAY_FROM_WORLD = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # (x, y, z) -> (x, z, -y)
MIN_FOLLOW_DISTANCE = 5.0  # display units (metres with metric scale) of the follow camera
LEGEND_HTML = (
    f"<span style='color:rgb{EST_RGB}'>━ estimated</span> &nbsp; "
    f"<span style='color:rgb{GT_RGB}'>━ ground truth</span> &nbsp; "
    f"<span style='color:rgb{POINTS_RGBA[:3]}'>● triangulated points</span>"
)


class Trail:
    """A growing ``[N, D]`` float array (amortised O(1) appends), optionally keeping only the last rows."""

    def __init__(self, dim: int = 3, max_rows: int | None = None) -> None:
        self._buf = np.zeros((256, dim))
        self._n = 0
        self.max_rows = max_rows

    def __len__(self) -> int:
        return self._n

    @property
    def data(self) -> np.ndarray:
        """The rows so far (a view; do not keep it across appends)."""
        return self._buf[: self._n]

    def extend(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows, np.float64).reshape(-1, self._buf.shape[1])
        if self.max_rows is not None and len(rows) >= self.max_rows:
            rows, self._n = rows[-self.max_rows:], 0
        need = self._n + len(rows)
        if self.max_rows is not None and need > self.max_rows:  # drop the oldest
            keep = self.max_rows - len(rows)
            self._buf[:keep] = self._buf[self._n - keep: self._n]
            self._n, need = keep, self.max_rows
        if need > len(self._buf):
            grown = np.zeros((max(need, 2 * len(self._buf)), self._buf.shape[1]))
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n: need] = rows
        self._n = need


def to_display(xyz: np.ndarray) -> np.ndarray:
    """World points ``[N, 3]`` -> 3D display coordinates ``[N, 3]`` (z up)."""
    return np.asarray(xyz, np.float64).reshape(-1, 3) @ DISPLAY_FROM_WORLD.T


def frustum_segments(pose: np.ndarray, K: np.ndarray, image_wh: tuple[int, int], depth: float) -> np.ndarray:
    """World end points ``[16, 3]`` of the 8 edges (pairs of rows) of a camera frustum ``depth`` deep."""
    w, h = image_wh
    corners = np.array([[0, 0, 1], [w, 0, 1], [w, h, 1], [0, h, 1]], np.float64)
    rays = corners @ np.linalg.inv(K).T
    cam = rays / rays[:, 2:] * depth
    world = cam @ pose[:3, :3].T + pose[:3, 3]
    apex = pose[:3, 3]
    edges = [(apex, c) for c in world] + [(world[i], world[(i + 1) % 4]) for i in range(4)]
    return np.array([p for edge in edges for p in edge])


def follow_distance(display_xyz: np.ndarray, recent: int = 200) -> float:
    """Viewing distance that keeps the last ``recent`` positions in view."""
    if len(display_xyz) < 2:
        return MIN_FOLLOW_DISTANCE
    tail = display_xyz[-recent:]
    spread = float(np.linalg.norm(tail.max(0) - tail.min(0)))
    return max(MIN_FOLLOW_DISTANCE, 1.5 * spread)


def nice_spacing(extent: float) -> float:
    """A 1-2-5 grid spacing giving about 10 cells over ``extent``."""
    raw = max(extent / 10.0, 1e-3)
    base = 10.0 ** np.floor(np.log10(raw))
    return float(base * min((m for m in (1, 2, 5, 10) if base * m >= raw), default=10))


# ---------------------------------------------------------------------------------- frame pane
class FrameView:
    """The current frame (an RGB ``uint8`` image with the tracks already drawn) in a ViewBox."""

    def __init__(self) -> None:
        self.widget = pg.GraphicsLayoutWidget()
        self.widget.setBackground(BACKGROUND_RGB)
        self.widget.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.box = self.widget.addViewBox(lockAspect=True, invertY=True, enableMenu=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.box.addItem(self.image)
        self._shape: tuple[int, ...] | None = None

    def set_image(self, rgb: np.ndarray) -> None:
        self.image.setImage(rgb, autoLevels=False, levels=(0, 255))
        if rgb.shape != self._shape:  # first frame or a new size: fit it
            self._shape = rgb.shape
            self.box.setRange(xRange=(0, rgb.shape[1]), yRange=(0, rgb.shape[0]), padding=0.01)


# ---------------------------------------------------------------------------------- trajectory
class FollowGLView(gl.GLViewWidget if gl is not None else QtWidgets.QWidget):
    """A GL view whose centre follows the camera; zooming by hand stops the automatic distance."""

    user_zoomed = False

    def wheelEvent(self, ev) -> None:  # noqa: N802 (Qt override)
        self.user_zoomed = True
        super().wheelEvent(ev)

    def follow(self, centre: np.ndarray, distance: float) -> None:
        self.opts["center"] = QtGui.QVector3D(*(float(v) for v in centre))
        if not self.user_zoomed:
            self.opts["distance"] = distance
        self.update()


class Trajectory2D:
    """Top-down x–z plot of the trajectory: the fallback when OpenGL is unavailable."""

    kind = "2d"

    def __init__(self) -> None:
        self.widget = pg.PlotWidget(background=BACKGROUND_RGB)
        self.widget.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        plot = self.widget.getPlotItem()
        plot.setAspectLocked(True)
        plot.showGrid(x=True, y=True, alpha=0.25)
        plot.setLabel("bottom", "x")
        plot.setLabel("left", "z (forward)")
        plot.setMenuEnabled(False)
        plot.disableAutoRange()  # framed on the trajectory by _fit (far points would shrink it)
        self.user_moved = False
        plot.getViewBox().sigRangeChangedManually.connect(self._on_user_range)
        self.points = pg.ScatterPlotItem(size=2, pen=None, brush=pg.mkBrush(*POINTS_RGBA))
        plot.addItem(self.points)
        self.gt = plot.plot(pen=pg.mkPen(GT_RGB, width=2))
        self.est = plot.plot(pen=pg.mkPen(EST_RGB, width=2))
        self.frustum = plot.plot(pen=pg.mkPen(FRUSTUM_RGB, width=1), connect="pairs")

    def update(self, est: np.ndarray, gt: np.ndarray | None, pose: np.ndarray, K: np.ndarray,
               image_wh: tuple[int, int], points: np.ndarray | None) -> None:
        """Redraw from world positions ``est [N, 3]``, ``gt [M, 3]``, the current pose and ``points [P, 3]``."""
        self.est.setData(est[:, 0], est[:, 2])
        if gt is not None and len(gt):
            self.gt.setData(gt[:, 0], gt[:, 2])
        if points is not None and len(points):
            self.points.setData(points[:, 0], points[:, 2])
        depth = follow_distance(to_display(est)) / 10.0
        seg = frustum_segments(pose, K, image_wh, depth)
        self.frustum.setData(seg[:, 0], seg[:, 2])
        if not self.user_moved:
            self._fit(np.concatenate([est, seg] + ([gt] if gt is not None and len(gt) else []))[:, [0, 2]])

    def _on_user_range(self, *_) -> None:
        self.user_moved = True  # the user panned or zoomed: stop framing automatically

    def _fit(self, xz: np.ndarray) -> None:
        """Frame the trajectory (at least :data:`MIN_FOLLOW_DISTANCE` across), centred on it."""
        lo, hi = xz.min(0), xz.max(0)
        centre, half = (lo + hi) / 2, max(0.55 * float((hi - lo).max()), MIN_FOLLOW_DISTANCE / 2)
        self.widget.getPlotItem().getViewBox().setRange(
            xRange=(centre[0] - half, centre[0] + half), yRange=(centre[1] - half, centre[1] + half), padding=0)


class Trajectory3D:
    """3D trajectory, ground truth, frustum and points in a GL view that follows the camera."""

    kind = "3d"

    def __init__(self) -> None:
        if gl is None:
            raise ImportError(f"pyqtgraph.opengl: {GL_IMPORT_ERROR}")
        self.widget = FollowGLView()
        self.widget.setBackgroundColor(BACKGROUND_RGB)
        self.widget.setFocusPolicy(QtCore.Qt.FocusPolicy.NoFocus)
        self.widget.setCameraPosition(distance=MIN_FOLLOW_DISTANCE, elevation=35, azimuth=-90)
        self.grid = gl.GLGridItem(color=(255, 255, 255, 40))
        self.widget.addItem(self.grid)
        self.points = gl.GLScatterPlotItem(pos=np.zeros((0, 3)), size=2.0, color=rgba(POINTS_RGBA), pxMode=True)
        self.gt = gl.GLLinePlotItem(pos=np.zeros((0, 3)), color=rgba(GT_RGB), width=2.0, antialias=True)
        self.est = gl.GLLinePlotItem(pos=np.zeros((0, 3)), color=rgba(EST_RGB), width=2.0, antialias=True)
        self.frustum = gl.GLLinePlotItem(pos=np.zeros((0, 3)), color=rgba(FRUSTUM_RGB), width=1.5, mode="lines")
        for item in (self.points, self.gt, self.est, self.frustum):
            self.widget.addItem(item)
        self._spacing = 0.0

    def update(self, est: np.ndarray, gt: np.ndarray | None, pose: np.ndarray, K: np.ndarray,
               image_wh: tuple[int, int], points: np.ndarray | None) -> None:
        """Redraw (same arguments as :meth:`Trajectory2D.update`) and follow the camera."""
        est_d = to_display(est)
        self.est.setData(pos=est_d)
        if gt is not None and len(gt):
            self.gt.setData(pos=to_display(gt))
        if points is not None and len(points):
            self.points.setData(pos=to_display(points))
        distance = follow_distance(est_d)
        self.frustum.setData(pos=to_display(frustum_segments(pose, K, image_wh, distance / 10.0)))
        centre = to_display(pose[:3, 3])[0]
        self.widget.follow(centre, distance)
        self._move_grid(centre, distance)

    def _move_grid(self, centre: np.ndarray, distance: float) -> None:
        """Keep a ground grid (at the camera's height) under the view, snapped to its spacing."""
        spacing = nice_spacing(2 * distance)
        if spacing != self._spacing:
            self._spacing = spacing
            self.grid.setSpacing(spacing, spacing, spacing)
            self.grid.setSize(20 * spacing, 20 * spacing, 1)
        snapped = np.round(centre / spacing) * spacing
        self.grid.resetTransform()
        self.grid.translate(float(snapped[0]), float(snapped[1]), float(centre[2]))


def rgba(colour: tuple[int, ...]) -> tuple[float, ...]:
    """0–255 RGB(A) -> 0–1 RGBA for the GL items."""
    c = [v / 255.0 for v in colour]
    return (*c, 1.0) if len(c) == 3 else tuple(c)


def make_trajectory_view(use_gl: bool | None = None) -> Trajectory2D | Trajectory3D:
    """The 3D view when OpenGL initialises (unless ``use_gl`` is False), else the 2D fallback with a warning."""
    if use_gl is False:
        return Trajectory2D()
    try:
        view = Trajectory3D()
        view.widget.grabFramebuffer()  # creates the GL context now, to find out whether it works
        if view.widget.isValid():
            return view
        reason = "no OpenGL context on this platform"
        view.widget.deleteLater()
    except Exception as exc:  # ImportError (PyOpenGL), OpenGL errors from the driver
        reason = f"{type(exc).__name__}: {exc}"
    log.warning("3D view unavailable (%s); showing the trajectory as a 2D top-down x-z plot", reason)
    return Trajectory2D()


def legend_label() -> QtWidgets.QLabel:
    label = QtWidgets.QLabel(LEGEND_HTML)
    label.setStyleSheet(f"background: rgb{BACKGROUND_RGB}; color: white; padding: 3px;")
    return label
