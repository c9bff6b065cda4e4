"""Before Qt starts: can its xcb platform plugin load? If not, name the Debian/Ubuntu packages to install.

PyQt6's wheel brings Qt but not the X11 client libraries of the ``xcb`` plugin. When one is
missing Qt prints "Could not load the Qt platform plugin xcb" and *aborts the process* (SIGABRT,
core dump), so the check must run before the first ``QApplication``. ``ldd`` on the plugin
resolves its dependencies the way the loader will (RPATH included) and lists what is not found.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

#: Debian/Ubuntu packages of the Qt 6 xcb platform plugin (README and .ci/run list the same)
XCB_PACKAGES = (
    "libxcb-cursor0",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-randr0",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-shm0",
    "libxcb-sync1",
    "libxcb-xfixes0",
    "libxcb-xkb1",
    "libxkbcommon-x11-0",
    "libxkbcommon0",
    "libx11-xcb1",
    "libegl1",
    "libgl1",
    "libfontconfig1",
    "libdbus-1-3",
)

#: shared-object name -> the package that ships it (Debian 12, Ubuntu 22.04 / 24.04)
SONAME_PACKAGES = {
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxcb-xinput.so.0": "libxcb-xinput0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-glx.so.0": "libxcb-glx0",
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libX11.so.6": "libx11-6",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libEGL.so.1": "libegl1",
    "libGL.so.1": "libgl1",
    "libGLX.so.0": "libglx0",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libpng16.so.16": "libpng16-16",
}

NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)


def xcb_plugin() -> Path | None:
    """The ``libqxcb.so`` of the installed PyQt6 (None when PyQt6 or the plugin is absent)."""
    try:
        from PyQt6.QtCore import QLibraryInfo  # QtCore alone never opens a platform plugin
    except ImportError:
        return None
    path = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms" / "libqxcb.so"
    return path if path.is_file() else None


def missing_libraries(library: Path) -> list[str] | None:
    """Shared objects ``library`` needs that the loader cannot find, in ``ldd`` order, without repeats.

    None when it cannot be told (no ``ldd``, or ``ldd`` fails): the caller then lets Qt try.
    """
    ldd = shutil.which("ldd")
    if ldd is None:
        return None
    try:
        proc = subprocess.run([ldd, str(library)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 and not NOT_FOUND.search(proc.stdout):
        return None
    return list(dict.fromkeys(NOT_FOUND.findall(proc.stdout)))


def packages_for(sonames: list[str]) -> list[str]:
    """The Debian/Ubuntu packages that ship ``sonames`` (an unknown name is kept as is)."""
    return list(dict.fromkeys(SONAME_PACKAGES.get(name, name) for name in sonames))


def xcb_problem() -> str | None:
    """One line saying which libraries Qt's xcb plugin lacks and what to install; None when it can load."""
    plugin = xcb_plugin()
    if plugin is None:
        return None
    missing = missing_libraries(plugin)
    if not missing:
        return None
    return (
        f"Qt's xcb platform plugin cannot load ({', '.join(missing)} not found): "
        f"sudo apt-get install {' '.join(packages_for(missing))}, or run with --headless"
    )
