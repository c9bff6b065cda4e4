"""The base classes of all sources, and the frame record they yield (:class:`frontend.frame.Frame`).

Conventions (see :mod:`models.conventions`): images are ``H x W`` uint8 grey (plus an
optional ``H x W x 3`` uint8 RGB copy), ``K`` is a 3x3 float64 pinhole matrix of the image
as delivered (sources that undistort report the K of the undistorted image), the centre of
the top-left pixel is ``(0, 0)``, poses are ``T_world_cam`` 4x4 float64 (camera-to-world).
``image_size`` is ``(width, height)``, the OpenCV order.

A frame that cannot be read in the middle of a sequence (corrupt or missing file, wrong
size) is skipped: the iteration logs a warning, counts it in ``source.skipped`` and goes on.
Random access (``source[i]`` on finite sources) raises the error instead.

Sources fill a frame's ``index``, ``timestamp`` (seconds: the dataset clock, or seconds since the
start for live sources), ``image``, ``K`` (read-only), ``pose`` (ground truth or None), ``path``
(or None) and ``colour`` (only when the source was opened with ``colour=True``); ``index`` is the
row of ``source.gt_poses``, and skipped frames leave gaps.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from frontend.frame import Frame
from models.errors import BadInputError, TraqPointError
from models.image_io import read_image

from .calib import Undistorter, pinhole_camera

log = logging.getLogger(__name__)


def readonly(array: np.ndarray) -> np.ndarray:
    """Return ``array`` as float64 with writes disabled (shared K and poses must not change)."""
    array = np.array(array, dtype=np.float64)
    array.setflags(write=False)
    return array


def split_bgr(bgr: np.ndarray, colour: bool, undistorter: Undistorter | None) -> tuple[np.ndarray, np.ndarray | None]:
    """A decoded BGR (or grey) frame -> (grey, RGB or None), undistorted if needed."""
    if bgr.ndim == 2:
        grey, rgb = bgr, (cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB) if colour else None)
    else:
        grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if colour else None
    if undistorter is not None:
        grey = undistorter(grey)
        rgb = undistorter(rgb) if rgb is not None else None
    return grey, rgb


class Source(ABC):
    """Base of all sources: attributes, iteration with skipping, context management.

    Subclasses set ``name``, ``K``, ``image_size`` and ``gt_poses`` in ``__init__`` and
    implement :meth:`_frames` (a generator of frames that reports unreadable ones with
    :meth:`_skip`); :class:`IndexedSource` does this for random-access sources.
    """

    name: str = "source"
    K: np.ndarray
    image_size: tuple[int, int]  # (width, height)
    gt_poses: np.ndarray | None = None  # [N, 4, 4] T_world_cam; NaN rows where unknown (pose_at gives None)
    calibrated: bool = True  # False when K is a guess (tracks only, no metric VO)
    is_live: bool = False

    def __init__(self) -> None:
        self.skipped = 0

    @property
    def num_frames(self) -> int | None:
        """Number of frames, or None for live sources (and videos of unknown length)."""
        return None

    def __len__(self) -> int:
        n = self.num_frames
        if n is None:
            raise TypeError(f"{self.name} has no known length (live or unknown); use source.num_frames")
        return n

    def __bool__(self) -> bool:  # an empty-but-valid source must not be falsy by accident
        return True

    def __iter__(self) -> Iterator[Frame]:
        self.skipped = 0
        return self._frames()

    @abstractmethod
    def _frames(self) -> Iterator[Frame]:
        """Yield the frames (subclasses)."""

    def _skip(self, what: str, exc: Exception) -> None:
        """Count and log a frame that could not be read."""
        self.skipped += 1
        log.warning("%s: skipping %s: %s", self.name, what, exc)

    def pose_at(self, index: int) -> np.ndarray | None:
        """Ground-truth ``T_world_cam`` of frame ``index``, or None when unknown."""
        if self.gt_poses is None or not 0 <= index < len(self.gt_poses):
            return None
        pose = self.gt_poses[index]
        return pose if np.isfinite(pose).all() else None

    @property
    def frames_without_gt(self) -> int:
        """Frames whose ground-truth row is unknown (NaN/inf: a bad row, or no pose near its time); 0 without GT.

        The sources yield ``pose=None`` for them (logged once when the ground truth is read); the
        odometry then carries the last known motion over them.
        """
        if self.gt_poses is None:
            return 0
        return int((~np.isfinite(self.gt_poses.reshape(len(self.gt_poses), -1)).all(1)).sum())

    def close(self) -> None:  # noqa: B027 - a deliberate no-op default, overridden by live sources
        """Release devices and files (no-op for file-based sources)."""

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.image_size
        return f"{type(self).__name__}({self.name!r}, {w}x{h}, frames={self.num_frames})"


class IndexedSource(Source):
    """A finite source with random access: ``source[i]`` and ``len(source)``."""

    def __getitem__(self, index: int) -> Frame:
        n = self.num_frames
        if not -n <= index < n:
            raise IndexError(f"frame {index} out of range for {self.name} ({n} frames)")
        return self._load(index % n)

    @abstractmethod
    def _load(self, index: int) -> Frame:
        """Read frame ``index`` (subclasses)."""

    def _frames(self) -> Iterator[Frame]:
        for i in range(self.num_frames):
            try:
                frame = self._load(i)
            except TraqPointError as exc:
                self._skip(f"frame {i}", exc)
                continue
            yield frame


class ImageFileSource(IndexedSource):
    """An indexed source whose frames are image files (KITTI, TUM, EuRoC, image folders).

    Subclasses fill ``paths`` and ``timestamps`` and call :meth:`_set_camera` with the raw
    camera; images with lens distortion are undistorted to the pinhole ``K`` it sets.
    """

    paths: list[Path]
    timestamps: np.ndarray
    undistorter: Undistorter | None = None

    def __init__(self, colour: bool = False) -> None:
        super().__init__()
        self.colour = colour

    @property
    def num_frames(self) -> int:
        return len(self.paths)

    def _set_camera(self, K: np.ndarray, dist: np.ndarray | None, size: tuple[int, int]) -> None:
        """Set ``image_size``, the undistortion maps (if ``dist`` is not zero) and the pinhole K."""
        self.image_size = size
        K, self.undistorter = pinhole_camera(K, dist, size)
        self.K = readonly(K)

    def _first_readable_size(self) -> tuple[int, int]:
        """``(width, height)`` of the first image that decodes (bad ones are skipped later)."""
        for path in self.paths[:50]:
            try:
                h, w = read_image(path).shape[:2]
                return w, h
            except TraqPointError as exc:
                log.warning("%s: %s", self.name, exc)
        raise BadInputError(f"{self.name}: none of the first {min(len(self.paths), 50)} images can be read")

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Read frame ``index`` as (grey, RGB or None), checked for size and undistorted."""
        path = self.paths[index]
        rgb = read_image(path, grey=False) if self.colour else None
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb is not None else read_image(path)
        if (grey.shape[1], grey.shape[0]) != self.image_size:
            w, h = self.image_size
            raise BadInputError(f"image is {grey.shape[1]}x{grey.shape[0]}, expected {w}x{h}: {path}")
        if self.undistorter is not None:
            grey = self.undistorter(grey)
            rgb = self.undistorter(rgb) if rgb is not None else None
        return grey, rgb

    def _load(self, index: int) -> Frame:
        grey, rgb = self._read(index)
        return Frame(
            index=index,
            timestamp=float(self.timestamps[index]),
            image=grey,
            K=self.K,
            pose=self.pose_at(index),
            path=self.paths[index],
            colour=rgb,
        )
