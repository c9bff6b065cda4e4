"""Tests of the live viewer: a real window on the demo, keys, the 2D fallback, run_viewer, no display.

Qt needs a display before the first ``QApplication``: the ``qt_app`` fixture uses $DISPLAY when an
X server answers there, else starts its own Xvfb (OpenGL through Mesa: the 3D view is tested),
else sets ``QT_QPA_PLATFORM=offscreen`` (no OpenGL widgets there: the 2D fallback is tested).
A screenshot of the window goes to /tmp/traqpoint_viewer.png.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import models
from models.errors import TraqPointError
from vo_app import viewer
from vo_app.pipeline import VOPipeline
from vo_app.sources import open_source

SCREENSHOT = Path("/tmp/traqpoint_viewer.png")
QT_PROBE = "from PyQt6.QtWidgets import QApplication; QApplication([])"


def die_with_parent() -> None:
    """In the child: get SIGTERM when the test process ends (Qt exits the process if X dies under it)."""
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_xvfb() -> tuple[subprocess.Popen, str] | None:
    """An Xvfb server on a free display that Qt can open (it lives as long as this process), or None."""
    if not shutil.which("Xvfb") or not sys.platform.startswith("linux"):
        return None
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=die_with_parent)
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    display = f":{number}"
    env = {**os.environ, "DISPLAY": display}
    env.pop("QT_QPA_PLATFORM", None)
    probe = subprocess.run([sys.executable, "-c", QT_PROBE], env=env, capture_output=True, timeout=60)
    if not number or probe.returncode != 0:  # e.g. Qt's xcb plugin lacks system libraries
        proc.terminate()
        proc.wait(10)
        return None
    return proc, display


@pytest.fixture(scope="module")
def qt_app():
    """The QApplication, on a display chosen as in the module docstring."""
    QtWidgets = pytest.importorskip("PyQt6.QtWidgets")
    pytest.importorskip("pyqtgraph")
    if QtWidgets.QApplication.instance() is None:
        display = os.environ.get("DISPLAY")
        usable = os.environ.get("QT_QPA_PLATFORM") or (display and viewer.x_display_reachable(display))
        if not usable:
            xvfb = start_xvfb()
            if xvfb is not None:
                os.environ["DISPLAY"] = xvfb[1]  # kept: the QApplication stays connected to it
            else:
                os.environ["QT_QPA_PLATFORM"] = "offscreen"
    app = viewer.qt_application()
    yield app
    for widget in app.topLevelWidgets():
        widget.close()
    app.processEvents()


def gl_expected(app) -> bool:
    """Whether the 3D view should work: a real window system with an OpenGL context."""
    from PyQt6.QtGui import QOpenGLContext

    return app.platformName() == "xcb" and QOpenGLContext().create()


def demo_pipeline(max_frames: int, num_keypoints: int = 300) -> VOPipeline:
    extractor = models.build("sift", num_keypoints=num_keypoints)
    return VOPipeline(open_source("demo"), extractor, scale="gt", num_keypoints=num_keypoints, max_frames=max_frames)


def wait_until(app, condition, timeout: float = 60.0) -> None:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, "timed out waiting for the viewer"
        app.processEvents()
        time.sleep(0.01)


def settle(app, seconds: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        app.processEvents()
        time.sleep(0.01)


def to_rgb(widget) -> np.ndarray:
    """``H x W x 3`` uint8 screenshot of a widget."""
    from PyQt6.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    ptr = image.constBits()
    ptr.setsize(image.sizeInBytes())
    rows = np.frombuffer(ptr, np.uint8).reshape(image.height(), image.bytesPerLine())
    return rows[:, : 3 * image.width()].reshape(image.height(), image.width(), 3).copy()


def coloured(rgb: np.ndarray, min_chroma: int = 80) -> np.ndarray:
    """Mask of saturated pixels (the demo frames are grey: only tracks are coloured)."""
    rgb = rgb.astype(np.int16)
    return rgb.max(2) - rgb.min(2) >= min_chroma


def near(rgb: np.ndarray, colour: tuple[int, ...], tol: int = 45) -> np.ndarray:
    return (np.abs(rgb.astype(np.int16) - np.array(colour[:3])) <= tol).all(2)


# ---------------------------------------------------------------- the window on the demo


def test_viewer_draws_tracks_and_trajectory(qt_app):
    from vo_app.viewer_views import BACKGROUND_RGB, EST_RGB, FRUSTUM_RGB
    from vo_app.viewer_window import ViewerWindow

    # 20 frames of 1000 SIFT keypoints: the local-map odometry initialises once the tracks have
    # 12 px of parallax (frame 13 of the demo); 300 keypoints' short tracks end before that
    window = ViewerWindow(demo_pipeline(20, 1000))
    window.show()
    window.start()
    try:
        wait_until(qt_app, lambda: window.finished)
        settle(qt_app, 0.2)
        assert window.error is None
        assert window.frames_shown == 20 and len(window.est) == 20 and len(window.gt) == 20
        assert window.trajectory.kind == ("3d" if gl_expected(qt_app) else "2d")
        text = window.status.text()
        for part in ("frame 19", "fps", "tracks", "inliers", "keyframes", "failures 0", "finished"):
            assert part in text, text
        assert len(window.points) > 50  # triangulated at the keyframes

        shot = to_rgb(window)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        window.grab().save(str(SCREENSHOT))
        assert shot.shape[0] > 300 and shot.shape[1] > 600

        left = to_rgb(window.frame_view.widget)
        assert coloured(left).sum() > 300  # trails and track dots coloured by age

        right = to_rgb(window.trajectory.widget)
        background = near(right, BACKGROUND_RGB, tol=12)
        assert (~background).sum() > 500  # trajectory, frustum, points (and grid)
        assert near(right, EST_RGB).sum() > 5  # the estimated trajectory
        assert near(right, FRUSTUM_RGB, tol=40).sum() > 20  # the camera frustum
    finally:
        window.close()
    assert not window.worker.is_alive()


def test_keys_pause_step_quit(qt_app):
    from PyQt6.QtCore import Qt
    from PyQt6.QtTest import QTest

    from vo_app.viewer_window import ViewerWindow

    window = ViewerWindow(demo_pipeline(40), use_gl=False)
    window.show()
    window.start(paused=True)
    settle(qt_app, 0.3)
    assert window.frames_shown == 0 and "paused" in window.status.text()
    for expected in (1, 2):
        QTest.keyClick(window, Qt.Key.Key_Right)
        wait_until(qt_app, lambda n=expected: window.frames_shown == n)
    settle(qt_app, 0.5)
    assert window.frames_shown == 2  # paused: nothing more without a key
    QTest.keyClick(window, Qt.Key.Key_Space)  # resume
    wait_until(qt_app, lambda: window.frames_shown >= 4)
    QTest.keyClick(window, Qt.Key.Key_Q)
    wait_until(qt_app, lambda: not window.isVisible())
    assert not window.worker.is_alive() and window.worker.error is None
    assert 4 <= window.frames_shown < 40


# ---------------------------------------------------------------- the trajectory views alone


def test_2d_fallback_plot(qt_app):
    from vo_app.viewer_views import EST_RGB, GT_RGB, Trajectory2D, make_trajectory_view

    view = make_trajectory_view(use_gl=False)
    assert isinstance(view, Trajectory2D) and view.kind == "2d"
    t = np.linspace(0, np.pi, 50)
    gt = np.stack([10 * np.sin(t), np.zeros_like(t), 10 * (1 - np.cos(t))], 1)  # a half circle in x-z
    est = gt + [0.8, 0.0, 0.0]
    pose = np.eye(4)
    pose[:3, 3] = est[-1]
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    view.widget.resize(400, 400)
    view.widget.show()
    view.update(est, gt, pose, K, (640, 480), np.random.default_rng(0).normal(5, 3, (200, 3)))
    settle(qt_app, 0.1)
    rgb = to_rgb(view.widget)
    assert near(rgb, EST_RGB).sum() > 50 and near(rgb, GT_RGB).sum() > 50
    view.widget.close()


def test_3d_view_twice_in_one_process(qt_app):
    """A second GL view after the first is gone still draws (pyqtgraph shares shader programs)."""
    if not gl_expected(qt_app):
        pytest.skip(f"no OpenGL widgets on the {qt_app.platformName()!r} Qt platform")
    from vo_app.viewer_views import EST_RGB, GT_RGB, Trajectory3D

    t = np.linspace(0, 2, 30)
    gt = np.stack([np.sin(t), np.zeros_like(t), 3 * t], 1)
    est = gt + [0.3, 0.0, 0.0]
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    for _ in range(2):
        view = Trajectory3D()
        view.widget.resize(300, 300)
        view.widget.show()
        view.update(est, gt, np.eye(4), K, (640, 480), None)
        settle(qt_app, 0.05)
        rgb = to_rgb(view.widget)
        assert near(rgb, EST_RGB).sum() > 20 and near(rgb, GT_RGB).sum() > 20
        view.widget.close()
        view.widget.deleteLater()
        settle(qt_app, 0.05)


def test_gl_failure_falls_back_to_2d(qt_app, monkeypatch, caplog):
    from vo_app import viewer_views

    def broken():
        raise ImportError("no PyOpenGL")

    monkeypatch.setattr(viewer_views, "Trajectory3D", broken)
    with caplog.at_level("WARNING", logger="vo_app.viewer_views"):
        view = viewer_views.make_trajectory_view()
    assert view.kind == "2d"
    assert any("2D top-down" in r.getMessage() and "no PyOpenGL" in r.getMessage() for r in caplog.records)


def test_trail_grows_and_keeps_the_newest():
    from vo_app.viewer_views import Trail

    trail = Trail()
    for i in range(600):  # past the initial capacity
        trail.extend([i, 2 * i, 3 * i])
    assert len(trail) == 600 and trail.data[-1].tolist() == [599, 1198, 1797]
    capped = Trail(max_rows=5)
    capped.extend(np.arange(12).reshape(4, 3))
    capped.extend(np.arange(12, 21).reshape(3, 3))
    np.testing.assert_array_equal(capped.data[:, 0], [6, 9, 12, 15, 18])
    capped.extend(np.arange(30).reshape(10, 3))
    np.testing.assert_array_equal(capped.data[:, 0], [15, 18, 21, 24, 27])


def test_frustum_geometry():
    from vo_app.viewer_views import frustum_segments, to_display

    K = np.array([[100.0, 0, 50], [0, 100, 40], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [1, 2, 3]
    seg = frustum_segments(pose, K, (100, 80), depth=2.0)
    assert seg.shape == (16, 3)
    np.testing.assert_allclose(seg[0], [1, 2, 3])  # apex at the camera centre
    np.testing.assert_allclose(seg[8:, 2], 5.0)  # far rectangle at depth 2 along +z
    np.testing.assert_allclose(seg[1], [1 - 1.0, 2 - 0.8, 5.0])  # top-left corner: (0 - 50) / 100 * 2, ...
    np.testing.assert_allclose(to_display([[1, 2, 3]]), [[1, 3, -2]])  # up (-y) is display z


# ---------------------------------------------------------------- run_viewer end to end


def test_run_viewer_quit_writes_outputs(qt_app, tmp_path):
    """Press q after a few frames: the pipeline stops, outputs and the video cover the frames shown."""
    import cv2
    from PyQt6.QtCore import Qt, QTimer
    from PyQt6.QtTest import QTest

    from vo_app.viewer_window import ViewerWindow

    def press_q_after_3_frames():
        windows = [w for w in qt_app.topLevelWidgets() if isinstance(w, ViewerWindow) and w.isVisible()]
        if windows and windows[0].frames_shown >= 3:
            QTest.keyClick(windows[0], Qt.Key.Key_Q)
        else:
            QTimer.singleShot(20, press_q_after_3_frames)

    QTimer.singleShot(20, press_q_after_3_frames)
    video = tmp_path / "tracks.mp4"
    metrics = viewer.run_viewer(demo_pipeline(40), tmp_path / "out", video=str(video), use_gl=False)
    assert 3 <= metrics["frames"] < 40
    for name in ("trajectory_kitti.txt", "trajectory_tum.txt", "stats.csv", "results.json"):
        assert (tmp_path / "out" / name).is_file(), name
    assert np.loadtxt(tmp_path / "out" / "trajectory_kitti.txt").shape == (metrics["frames"], 12)
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == metrics["frames"]
    cap.release()


def test_pipeline_error_is_shown_then_raised(qt_app, tmp_path):
    """An error inside the pipeline thread: shown in the status bar, re-raised by run_viewer, no outputs."""
    from types import SimpleNamespace

    from models.errors import BadInputError
    from vo_app.viewer_window import ViewerWindow

    def failing_run():
        raise BadInputError("frame 3: the camera went away")
        yield  # a generator, like VOPipeline.run

    def stub():
        return SimpleNamespace(extractor=SimpleNamespace(name="stub"), scale="mono", run=failing_run,
                               source=SimpleNamespace(name="stub", image_size=(64, 48)))

    window = ViewerWindow(stub(), use_gl=False)
    window.show()
    window.start()
    wait_until(qt_app, lambda: window.finished)
    assert "ERROR: frame 3: the camera went away" in window.status.text()
    window.close()
    with pytest.raises(BadInputError, match="camera went away"):
        viewer.run_viewer(stub(), tmp_path / "out", use_gl=False, close_when_done=True)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- no display


def test_no_display_is_one_clear_error(monkeypatch):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(TraqPointError) as info:
        viewer.check_display()
    message = str(info.value)
    assert "\n" not in message
    assert "--headless" in message and "QT_QPA_PLATFORM=offscreen" in message and "xvfb-run" in message


def test_unreachable_x_display(monkeypatch):
    if viewer.x_display_reachable(":4711") is None:
        pytest.skip("libxcb not available to probe X displays")
    monkeypatch.setenv("DISPLAY", ":4711")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")
    with pytest.raises(TraqPointError, match="cannot connect to the X display"):
        viewer.check_display()
