"""The viewer on a plain Linux desktop: Qt's xcb plugin checked before Qt can abort, and a real run on Xvfb + xcb.

``test_viewer_on_xvfb_xcb`` runs the window on the real ``xcb`` platform (not offscreen) in a
child process with its own Xvfb; it skips when Xvfb or the xcb libraries are absent, except under
``TRAQPOINT_REQUIRE_XCB=1`` (set by ``.ci/run``, which installs them) where that is a failure.
The window's screenshot goes to /tmp/traqpoint_viewer_xcb.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.errors import TraqPointError
from vo_app import viewer, viewer_deps

REPO = Path(__file__).resolve().parents[2]
SCREENSHOT = Path("/tmp/traqpoint_viewer_xcb.png")
REQUIRED = os.environ.get("TRAQPOINT_REQUIRE_XCB") == "1"

FAKE_LDD = """#!/bin/sh
echo "	linux-vdso.so.1 (0x00007ffd)"
echo "	libQt6XcbQpa.so.6 => /opt/qt/lib/libQt6XcbQpa.so.6 (0x00007f00)"
echo "	libxcb-icccm.so.4 => not found"
echo "	libxcb-keysyms.so.1 => not found"
echo "	libxcb-icccm.so.4 => not found"
echo "	libfoo-unknown.so.7 => not found"
"""


def fake_ldd(tmp_path, monkeypatch, script: str = FAKE_LDD) -> None:
    (tmp_path / "ldd").write_text(script)
    (tmp_path / "ldd").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")


def test_missing_libraries_from_ldd(tmp_path, monkeypatch):
    fake_ldd(tmp_path, monkeypatch)
    missing = viewer_deps.missing_libraries(Path("/any/libqxcb.so"))
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libfoo-unknown.so.7"]  # once each, in order
    assert viewer_deps.packages_for(missing) == ["libxcb-icccm4", "libxcb-keysyms1", "libfoo-unknown.so.7"]


def test_nothing_missing_or_no_ldd(tmp_path, monkeypatch):
    fake_ldd(tmp_path, monkeypatch, "#!/bin/sh\necho '\tlibxcb.so.1 => /usr/lib/libxcb.so.1 (0x1)'\n")
    assert viewer_deps.missing_libraries(Path("/any/libqxcb.so")) == []
    monkeypatch.setattr(viewer_deps.shutil, "which", lambda name: None)
    assert viewer_deps.missing_libraries(Path("/any/libqxcb.so")) is None  # cannot tell: let Qt try


def test_check_display_names_the_packages(tmp_path, monkeypatch):
    """Was: Qt's "Could not load the Qt platform plugin xcb" and SIGABRT (exit 134, core dump)."""
    fake_ldd(tmp_path, monkeypatch)
    monkeypatch.setattr(viewer_deps, "xcb_plugin", lambda: tmp_path / "libqxcb.so")
    monkeypatch.setattr(viewer, "x_display_reachable", lambda display: True)
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    with pytest.raises(TraqPointError) as info:
        viewer.check_display()
    message = str(info.value)
    assert "\n" not in message
    assert "sudo apt-get install libxcb-icccm4 libxcb-keysyms1 libfoo-unknown.so.7" in message
    assert "--headless" in message
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # no xcb plugin involved: no check
    viewer.check_display()


def test_readme_and_ci_list_the_packages():
    readme, ci = (REPO / "README.md").read_text(), (REPO / ".ci" / "run").read_text()
    for package in viewer_deps.XCB_PACKAGES:
        assert package in readme, f"README.md does not list {package}"
        assert package in ci, f".ci/run does not install {package}"


def start_xvfb() -> tuple[subprocess.Popen, str]:
    read, write = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as fh:
        return proc, f":{fh.readline().strip()}"


CHILD = r"""
import json, sys, time
import numpy as np
import models
from vo_app import viewer
from vo_app.pipeline import VOPipeline
from vo_app.sources import open_source

viewer.check_display()
app = viewer.qt_application()
from vo_app.viewer_window import ViewerWindow

pipeline = VOPipeline(open_source("demo"), models.build("sift", num_keypoints=300), scale="gt",
                      num_keypoints=300, max_frames=20)
window = ViewerWindow(pipeline)
window.resize(1400, 640)
window.show()
window.start()
t0 = time.monotonic()
while not window.finished and time.monotonic() - t0 < 240:
    app.processEvents()
    time.sleep(0.01)
for _ in range(30):
    app.processEvents()
    time.sleep(0.01)
window.grab().save(sys.argv[1])
print(json.dumps({"platform": app.platformName(), "frames": window.frames_shown, "view": window.trajectory.kind,
                  "error": None if window.error is None else str(window.error), "status": window.status.text()}))
window.close()
"""


def test_viewer_on_xvfb_xcb(tmp_path):
    """The demo in the viewer on Xvfb with Qt's real xcb platform: frames drawn, a screenshot."""
    absent = None
    if not sys.platform.startswith("linux") or not shutil.which("Xvfb"):
        absent = "Xvfb is not installed (apt-get install xvfb)"
    elif viewer_deps.xcb_plugin() is None:
        absent = "PyQt6 has no xcb platform plugin"
    elif problem := viewer_deps.xcb_problem():
        absent = problem
    if absent:
        if REQUIRED:
            pytest.fail(f"TRAQPOINT_REQUIRE_XCB=1 but {absent}")
        pytest.skip(absent)
    xvfb, display = start_xvfb()
    try:
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
        env.pop("WAYLAND_DISPLAY", None)
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(SCREENSHOT)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["platform"] == "xcb" and result["error"] is None, result
    assert result["frames"] == 20 and "finished" in result["status"], result
    import cv2

    shot = cv2.imread(str(SCREENSHOT))
    assert shot is not None and shot.shape[0] >= 400 and shot.shape[1] >= 1000
    chroma = shot.max(2).astype(int) - shot.min(2)
    assert (chroma >= 80).sum() > 300  # coloured track trails on the grey demo frames, trajectory
    assert np.unique(shot.reshape(-1, 3), axis=0).shape[0] > 100  # a drawn window, not a blank one
