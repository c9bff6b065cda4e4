"""``open_source(spec)``: turn a ``--sequence`` value into a source.

Accepted forms (:data:`ACCEPTED`):

- ``kitti/NN``: sequence ``NN`` under the KITTI odometry root, taken from ``data_root``, else
  ``$TRAQPOINT_DATA_ROOT``, else ``$KITTI_ROOT``, else ``kitti_root`` in ``configs/paths.yaml``
  (the root holds ``sequences/`` and ``poses/``; ``<root>/dataset`` is tried too, as KITTI's
  archives unpack there);
- a path: a KITTI sequence folder (``image_0/`` + ``calib.txt``), a TUM folder (``rgb.txt``, or
  timestamp-named PNGs when ``tum_camera`` is given), a EuRoC folder (``mav0/``), a video
  file, or a folder of images (the last two need ``calib``);
- ``demo`` / ``demo:N``: the built-in rendered sequence (``N`` frames, default 300);
  ``webcam`` / ``webcam:N``: camera ``N``.

Options (``**opts``) are passed to the source that takes them (e.g. ``colour``,
``allow_guess``, ``tum_camera``, ``num_frames``); an option no source knows is an error.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from pathlib import Path

import yaml

from models.errors import BadInputError, MissingFileError

from .base import Source
from .demo import DemoSource
from .euroc import EurocSource
from .folder import ImageFolderSource, list_images
from .kitti import KittiSource
from .tum import TumSource
from .video import VIDEO_SUFFIXES, VideoSource
from .webcam import WebcamSource

log = logging.getLogger(__name__)

ACCEPTED = ("kitti/NN, demo[:N], webcam[:N], or a path to a KITTI sequence, TUM or EuRoC folder, "
            "a video file or a folder of images")
SOURCES = (KittiSource, TumSource, EurocSource, VideoSource, ImageFolderSource, WebcamSource, DemoSource)
REPO_ROOT = Path(__file__).resolve().parents[2]


def open_source(spec: str | Path, data_root: str | Path | None = None, calib=None, **opts) -> Source:
    """Open the source named by ``spec`` (forms in the module docstring); raise one clear line."""
    _check_options(opts)
    text = str(spec).strip()
    match = re.fullmatch(r"demo(?::(\d+))?", text)
    if match:  # demo:N = the built-in sequence with N frames (e.g. demo:1200 for two laps)
        if match.group(1):
            opts = {**opts, "num_frames": int(match.group(1))}
        return _make(DemoSource, calib, opts)
    match = re.fullmatch(r"webcam(?::(\d+))?", text)
    if match:
        return _make(WebcamSource, calib, opts, int(match.group(1) or 0))
    match = re.fullmatch(r"kitti/(\d{1,2})", text)
    if match:
        return _make(KittiSource, calib, opts, kitti_sequence_dir(f"{int(match.group(1)):02d}", data_root))
    path = Path(text).expanduser()
    if path.exists():
        return _open_path(path, calib, opts)
    if _looks_like_path(text):
        raise MissingFileError(f"sequence not found: {path} (accepted: {ACCEPTED})")
    raise BadInputError(f"unknown sequence {text!r}; accepted: {ACCEPTED}")


def _looks_like_path(text: str) -> bool:
    return "/" in text or "\\" in text or text.startswith((".", "~")) or bool(Path(text).suffix)


def _open_path(path: Path, calib, opts: dict) -> Source:
    """Pick the source type of an existing path from its contents."""
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            log.info("%s: unknown suffix, trying it as a video", path)
        return _make(VideoSource, calib, opts, path)
    if any((path / f"image_{c}").is_dir() for c in (0, 2)) and (path / "calib.txt").is_file():
        return _make(KittiSource, calib, opts, path)
    if (path / "sequences").is_dir():
        raise BadInputError(f"{path} is a KITTI root: name a sequence, e.g. kitti/00 with --data-root {path}")
    if (path / "rgb.txt").is_file() or opts.get("tum_camera"):
        return _make(TumSource, calib, opts, path)
    if (path / "mav0").is_dir() or (path.name == "mav0" and (path / "cam0").is_dir()):
        return _make(EurocSource, calib, opts, path)
    if list_images(path):
        return _make(ImageFolderSource, calib, opts, path)
    raise BadInputError(f"{path}: no images, and not a KITTI, TUM or EuRoC folder (accepted: {ACCEPTED})")


def _check_options(opts: dict) -> None:
    known = set().union(*(inspect.signature(cls.__init__).parameters for cls in SOURCES)) - {"self", "calib"}
    unknown = sorted(set(opts) - known)
    if unknown:
        raise BadInputError(f"unknown source option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _make(cls: type[Source], calib, opts: dict, *args) -> Source:
    """``cls(*args, calib=calib, **the opts it takes)``; a calibration it cannot use is reported."""
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in opts.items() if k in params}
    if "calib" in params:
        kwargs["calib"] = calib
    elif calib is not None:
        log.warning("%s carries its own calibration; --calib is ignored", cls.__name__)
    ignored = sorted(set(opts) - set(kwargs))
    if ignored:
        log.debug("%s ignores option(s) %s", cls.__name__, ", ".join(ignored))
    return cls(*args, **kwargs)


def kitti_root_candidates(data_root: str | Path | None) -> list[tuple[Path, str]]:
    """(root, where it came from) in order of precedence."""
    found = []
    if data_root:
        found.append((Path(data_root), "--data-root"))
    for var in ("TRAQPOINT_DATA_ROOT", "KITTI_ROOT"):
        if os.environ.get(var):
            found.append((Path(os.environ[var]), f"${var}"))
    for config in (Path.cwd() / "configs" / "paths.yaml", REPO_ROOT / "configs" / "paths.yaml"):
        if config.is_file():
            try:
                value = (yaml.safe_load(config.read_text()) or {}).get("kitti_root")
            except (yaml.YAMLError, AttributeError):
                raise BadInputError(f"{config}: not a YAML mapping") from None
            if value:
                found.append((Path(value).expanduser(), str(config)))
            break
    return found


def kitti_sequence_dir(sequence: str, data_root: str | Path | None = None) -> Path:
    """``<root>/sequences/<sequence>`` for the first configured root; one clear error otherwise."""
    candidates = kitti_root_candidates(data_root)
    if not candidates:
        raise MissingFileError(f"kitti/{sequence} needs the KITTI odometry root: pass --data-root, set "
                               "TRAQPOINT_DATA_ROOT or KITTI_ROOT, or add kitti_root to configs/paths.yaml")
    root, origin = candidates[0]
    for base in (root, root / "dataset", root / "kitti"):
        if (base / "sequences" / sequence).is_dir():
            return base / "sequences" / sequence
    raise MissingFileError(f"KITTI sequence folder not found: {root / 'sequences' / sequence} (root from {origin})")
