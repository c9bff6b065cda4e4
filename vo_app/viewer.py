"""The live viewer of ``traqpoint-vo``: :func:`run_viewer`, the windowed twin of ``run_headless``.

Left: the current frame with the keypoint tracks as trails coloured by age; right: the 3D
trajectory (ground truth too when known), the camera frustum and the triangulated points
(a 2D top-down plot when OpenGL cannot start); bottom: FPS, tracks, inliers, keyframes,
tracking failures, frame. Keys: space pause/resume, → one frame while paused, q / Esc quit.
Ctrl-C in the terminal closes the window too. Closing stops the pipeline and writes the same
outputs as ``--headless``.

This module imports Qt only inside :func:`run_viewer`, after :func:`check_display` has made
sure Qt can open a window (Qt aborts the whole process when it cannot).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from models.errors import TraqPointError

log = logging.getLogger(__name__)

NO_DISPLAY_HINT = ("run with --headless, or give Qt a display: QT_QPA_PLATFORM=offscreen traqpoint-vo ... "
                   "(2D trajectory view) or xvfb-run traqpoint-vo ...")


def check_display() -> None:
    """Raise one clear :class:`TraqPointError` when Qt would have no display to open a window on, or
    when its xcb platform plugin lacks system libraries (:mod:`vo_app.viewer_deps`)."""
    platform = os.environ.get("QT_QPA_PLATFORM", "")
    if platform.split(":")[0] not in ("", "xcb") or not sys.platform.startswith("linux"):
        return  # offscreen, wayland, vnc, ... chosen explicitly, or macOS / Windows: always a display
    display = os.environ.get("DISPLAY")
    if not display and not os.environ.get("WAYLAND_DISPLAY"):
        raise TraqPointError(f"the viewer needs a display and neither $DISPLAY nor $WAYLAND_DISPLAY is set; "
                             f"{NO_DISPLAY_HINT}")
    if display and not os.environ.get("WAYLAND_DISPLAY") and x_display_reachable(display) is False:
        raise TraqPointError(f"cannot connect to the X display {display!r}; {NO_DISPLAY_HINT}")
    if platform.startswith("xcb") or not os.environ.get("WAYLAND_DISPLAY"):  # Qt will load its xcb plugin
        from .viewer_deps import xcb_problem

        problem = xcb_problem()  # Qt would abort the process (core dump) on a missing library
        if problem:
            raise TraqPointError(problem)


def x_display_reachable(display: str) -> bool | None:
    """Whether an X server answers on ``display`` (None when libxcb is not there to ask)."""
    name = ctypes.util.find_library("xcb")
    if name is None:
        return None
    try:
        xcb = ctypes.CDLL(name)
    except OSError:
        return None
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    conn = xcb.xcb_connect(display.encode(), None)
    try:
        return xcb.xcb_connection_has_error(conn) == 0
    finally:
        xcb.xcb_disconnect(conn)


def qt_application():
    """The process's ``QApplication`` (created on first use); one clear error when Qt is missing."""
    try:
        from PyQt6 import QtWidgets
    except ImportError as exc:
        raise TraqPointError(f"the viewer needs PyQt6, pyqtgraph and PyOpenGL ({exc}); "
                             "pip install PyQt6 pyqtgraph PyOpenGL, or run with --headless") from None
    app = QtWidgets.QApplication.instance()
    if app is None:
        from PyQt6.QtCore import QCoreApplication, Qt

        # pyqtgraph caches its GL shader programs per class, not per context: every GL view of
        # the process (a second run_viewer, tests) must share one context group to reuse them
        QCoreApplication.setAttribute(Qt.ApplicationAttribute.AA_ShareOpenGLContexts)
        app = QtWidgets.QApplication([sys.argv[0] if sys.argv and sys.argv[0] else "traqpoint-vo"])
        app.setApplicationName("traqpoint-vo")
    return app


def run_viewer(pipeline, out: str | Path, video: str | None = None, export_ply: bool = False,
               use_gl: bool | None = None, close_when_done: bool = False) -> dict:
    """Show the pipeline running until the window is closed; write the outputs and return the metrics.

    Args:
        pipeline: a :class:`vo_app.pipeline.VOPipeline`, not started.
        out: output folder (as for ``run_headless``).
        video: also write the tracks view to this mp4.
        export_ply: also write ``map.ply``.
        use_gl: False forces the 2D trajectory plot; None uses OpenGL when it initialises.
        close_when_done: close the window by itself when the source ends (else it stays open, except
            on Qt's offscreen / minimal platforms where nobody could close it).

    Raises:
        TraqPointError: no display, no Qt, or the error that stopped the pipeline.
    """
    check_display()
    app = qt_application()
    try:
        from PyQt6 import QtCore

        from .viewer_window import ViewerWindow
    except ImportError as exc:
        raise TraqPointError(f"the viewer cannot start ({exc}); pip install pyqtgraph, or use --headless") from None
    from .headless import TrackVideo

    if app.platformName() in ("offscreen", "minimal") and not close_when_done:
        log.info("Qt platform %r shows nothing: the viewer closes when the source ends", app.platformName())
        close_when_done = True
    window = ViewerWindow(pipeline, video=TrackVideo(video) if video else None, use_gl=use_gl,
                          close_when_done=close_when_done)
    loop = QtCore.QEventLoop()
    window.closed.connect(loop.quit)
    window.show()
    window.start()
    restore = _close_on_sigint(window)
    try:
        loop.exec()
    finally:
        restore()
        window.stop()
        window.deleteLater()
        app.processEvents()
    if window.error is not None:
        raise window.error
    log.info("viewer closed after %d frames; writing outputs to %s", window.frames_shown, out)
    return pipeline.write_outputs(out, export_ply=export_ply)


def _close_on_sigint(window):
    """Make Ctrl-C close ``window``; returns the undo.

    Python runs the handler between two bytecodes of whatever Python code Qt is executing (the
    display timer guarantees there is some), possibly inside a paint; so it only posts the close
    to the event loop.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    from PyQt6.QtCore import QTimer

    previous = signal.signal(signal.SIGINT, lambda *_: QTimer.singleShot(0, window.close))
    return lambda: signal.signal(signal.SIGINT, previous)
