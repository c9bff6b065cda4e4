"""Loading a pool of real photographs for homography-based training, with clear errors."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from models.errors import BadInputError, MissingFileError
from models.image_io import IMAGE_SUFFIXES

log = logging.getLogger(__name__)


def list_images(folders: list[str | Path]) -> list[Path]:
    """All image files under ``folders`` (recursive, sorted); a missing folder is an error."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise MissingFileError(f"training image folder not found: {folder}")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInputError(f"no images (png/jpg/ppm/...) found under: {', '.join(map(str, folders))}")
    return files


def load_pool(folders: list[str | Path], max_side: int = 640, min_side: int = 120) -> tuple[list[np.ndarray], int]:
    """Read every image as grey uint8, downscaled so the long side is at most ``max_side``.

    Corrupt or tiny images are skipped with a warning; returns ``(images, skipped)``.
    """
    pool, skipped = [], 0
    for path in list_images(folders):
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None or min(img.shape) < min_side:
            log.warning("skipping unreadable or too small training image: %s", path)
            skipped += 1
            continue
        scale = max_side / max(img.shape)
        if scale < 1:
            img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        pool.append(img)
    if not pool:
        raise BadInputError(f"all {skipped} images under {', '.join(map(str, folders))} were unreadable")
    return pool, skipped
