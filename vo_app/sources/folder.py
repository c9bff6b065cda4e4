"""A folder of images (``*.png``, ``*.jpg``, ``*.jpeg``) in natural name order, plus ``--calib``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from models.errors import BadInputError, MissingFileError

from .base import ImageFileSource
from .calib import resolve_calibration

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def natural_key(path: Path) -> list:
    """Sort key so that ``img2.png`` comes before ``img10.png``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, naturally sorted."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()), key=natural_key)


class ImageFolderSource(ImageFileSource):
    """Images of one folder, in natural name order; ``frame.timestamp = index / fps``.

    Args:
        folder: the folder.
        calib: calibration file / :class:`Calibration` / 3x3 K (see :mod:`.calib`).
        allow_guess: without ``calib``, guess K (tracks-only display) instead of raising.
        fps: frame rate used for timestamps.
        colour: also deliver RGB (``frame.colour``).
    """

    def __init__(self, folder: str | Path, calib=None, allow_guess: bool = False, fps: float = 10.0,
                 colour: bool = False) -> None:
        super().__init__(colour=colour)
        self.root = Path(folder)
        if not self.root.is_dir():
            raise MissingFileError(f"image folder not found: {self.root}")
        self.name = f"images/{self.root.name}"
        self.paths = list_images(self.root)
        if not self.paths:
            raise BadInputError(f"no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}) in folder {self.root}")
        if fps <= 0:
            raise BadInputError(f"fps must be positive, got {fps}")
        self.timestamps = np.arange(len(self.paths)) / fps
        size = self._first_readable_size()
        calibration = resolve_calibration(calib, size, allow_guess, f"image folder {self.root.name}")
        self.calibrated = calibration.origin != "guess"
        self._set_camera(calibration.K, calibration.dist, size)
