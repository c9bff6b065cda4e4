"""A live camera, ``cv2.VideoCapture(index)``; intrinsics from ``--calib`` (required for VO).

A camera that stops delivering frames (unplugged, taken by another program) ends the
iteration cleanly after ``stall_s`` seconds of failed reads, with a logged warning and the
reason in ``source.stop_reason``. Shorter stalls are waited out, logged and counted in
``source.stalls``; frames of the wrong size are skipped and counted in ``source.skipped``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import cv2

from frontend.frame import Frame
from models.errors import MissingFileError

from .base import Source, readonly, split_bgr
from .calib import pinhole_camera, resolve_calibration

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_opencv():
    """Silence OpenCV's own stderr warnings (e.g. while probing a camera index that may not exist)."""
    logging_api = getattr(cv2, "utils", None) and getattr(cv2.utils, "logging", None)
    if logging_api is None:
        yield
        return
    previous = logging_api.getLogLevel()
    logging_api.setLogLevel(logging_api.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging_api.setLogLevel(previous)


class WebcamSource(Source):
    """Frames from camera ``index`` as they arrive; ``frame.timestamp`` = seconds since opening.

    Args:
        index: OpenCV camera index (``webcam:N``).
        calib: calibration file / :class:`Calibration` / 3x3 K (see :mod:`.calib`).
        allow_guess: without ``calib``, guess K (tracks-only display) instead of raising.
        colour: also deliver RGB (``frame.colour``).
        width, height: requested capture size (the camera may pick another).
        stall_s: seconds of failed reads after which the camera is considered gone.
    """

    is_live = True

    def __init__(self, index: int = 0, calib=None, allow_guess: bool = False, colour: bool = False,
                 width: int | None = None, height: int | None = None, stall_s: float = 2.0) -> None:
        super().__init__()
        self.index, self.colour, self.stall_s = int(index), colour, stall_s
        self.name = f"webcam:{self.index}"
        with quiet_opencv():
            self.cap = cv2.VideoCapture(self.index)
            if not self.cap.isOpened():
                self.cap.release()
                raise MissingFileError(f"webcam {self.index} cannot be opened (no such camera, or it is busy)")
            if width and height:
                self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
                self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        size = (int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        try:
            if min(size) <= 0:  # some backends report the size only once a frame arrived
                size = self._size_from_first_frame()
            calibration = resolve_calibration(calib, size, allow_guess, self.name)
        except Exception:
            self.cap.release()
            raise
        self.calibrated = calibration.origin != "guess"
        self.image_size = size
        K, self.undistorter = pinhole_camera(calibration.K, calibration.dist, size)
        self.K = readonly(K)
        self._t0 = time.monotonic()
        self._index = 0
        self.stalls = 0  # interruptions of the stream that ended by themselves
        self.stop_reason: str | None = None  # why the stream ended, when the camera did it

    def _size_from_first_frame(self) -> tuple[int, int]:
        deadline = time.monotonic() + self.stall_s
        while time.monotonic() < deadline:
            ok, bgr = self.cap.read()
            if ok and bgr is not None:
                return bgr.shape[1], bgr.shape[0]
            time.sleep(0.01)
        raise MissingFileError(f"webcam {self.index} opened but delivered no frame within {self.stall_s:.1f} s")

    def _frames(self) -> Iterator[Frame]:
        failing_since, read_failed = None, False
        while self.cap is not None:
            ok, bgr = self.cap.read()
            wrong_size = ok and bgr is not None and (bgr.shape[1], bgr.shape[0]) != self.image_size
            if wrong_size:
                self._skip(f"frame {self._index}", ValueError(f"size {bgr.shape[1]}x{bgr.shape[0]} changed"))
            if not ok or bgr is None or wrong_size:  # no usable frame: a stall, or the end after stall_s
                now = time.monotonic()
                failing_since = failing_since or now
                read_failed = read_failed or not wrong_size
                if now - failing_since > self.stall_s:
                    self.stop_reason = f"{self.name}: no frame for {self.stall_s:.1f} s (camera disconnected?)"
                    log.warning("%s; stopping", self.stop_reason)
                    self.close()
                    return
                time.sleep(0.01)
                continue
            if read_failed:
                self.stalls += 1
                log.warning("%s: frames resumed after %.2f s without one (stall %d)", self.name,
                            time.monotonic() - failing_since, self.stalls)
            failing_since, read_failed = None, False
            grey, rgb = split_bgr(bgr, self.colour, self.undistorter)
            yield Frame(index=self._index, image=grey, timestamp=time.monotonic() - self._t0, K=self.K, colour=rgb)
            self._index += 1

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None
