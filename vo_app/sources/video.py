"""A video file read with ``cv2.VideoCapture``; intrinsics from ``--calib`` (required for VO)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import cv2

from frontend.frame import Frame
from models.errors import BadInputError, MissingFileError

from .base import Source, readonly, split_bgr
from .calib import pinhole_camera, resolve_calibration

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".mts")


class VideoSource(Source):
    """Frames of a video file, in order; ``frame.timestamp = index / fps``.

    Args:
        path: the video file.
        calib: calibration file / :class:`Calibration` / 3x3 K (see :mod:`.calib`).
        allow_guess: without ``calib``, guess K (tracks-only display) instead of raising.
        colour: also deliver RGB (``frame.colour``).
        max_bad_frames: consecutive undecodable frames (before the known end) to skip before giving up.
    """

    def __init__(self, path: str | Path, calib=None, allow_guess: bool = False, colour: bool = False,
                 max_bad_frames: int = 10) -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise MissingFileError(f"video file not found: {self.path}")
        self.name = f"video/{self.path.name}"
        self.colour, self.max_bad_frames = colour, max_bad_frames
        cap = self._open()
        try:
            ok, first = cap.read()
            if not ok or first is None:
                raise BadInputError(f"video has no readable frame: {self.path}")
            size = (first.shape[1], first.shape[0])
            fps = cap.get(cv2.CAP_PROP_FPS)
            self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else 30.0  # some containers report 0 or NaN
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            self._count = count if count > 0 else None
        finally:
            cap.release()
        calibration = resolve_calibration(calib, size, allow_guess, f"video {self.path.name}")
        self.calibrated = calibration.origin != "guess"
        self.image_size = size
        K, self.undistorter = pinhole_camera(calibration.K, calibration.dist, size)
        self.K = readonly(K)

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise BadInputError(f"cannot open video (unknown format or corrupt): {self.path}")
        return cap

    @property
    def num_frames(self) -> int | None:
        """Frame count reported by the container (may be approximate), or None."""
        return self._count

    def _frames(self) -> Iterator[Frame]:
        cap = self._open()
        index, bad = 0, 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    if self._count is None or index >= self._count - 1 or bad >= self.max_bad_frames:
                        if bad >= self.max_bad_frames:
                            log.warning("%s: %d bad frames in a row; stopping at frame %d", self.name, bad, index)
                        return
                    self._skip(f"frame {index}", BadInputError("undecodable video frame"))
                    index, bad = index + 1, bad + 1
                    continue
                bad = 0
                if (bgr.shape[1], bgr.shape[0]) != self.image_size:
                    self._skip(f"frame {index}", BadInputError(f"frame size {bgr.shape[1]}x{bgr.shape[0]} changed"))
                    index += 1
                    continue
                grey, rgb = split_bgr(bgr, self.colour, self.undistorter)
                yield Frame(index=index, image=grey, timestamp=index / self.fps, K=self.K, colour=rgb)
                index += 1
        finally:
            cap.release()

