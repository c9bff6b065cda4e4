"""Feature export with a cache (glue-factory style: export once, evaluate from the cache).

Layout: ``ROOT/<benchmark>/<method>-<method key>/<image key>.npz`` where the method key hashes the
extractor's class, settings and weight values (:attr:`benchmarks.methods.Method.cache_key`) and the
image key hashes the file (resolved path, size, modification time) and the resize setting. A re-run
with the same method, settings and images reads the features back instead of extracting them.
Files are written atomically, so an interrupted run never leaves a broken entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .images import Resize, load_image
from .methods import Method

log = logging.getLogger(__name__)

DEFAULT_CACHE = Path(os.environ.get("TRAQPOINT_VO_CACHE", "~/.cache/traqpoint-vo")).expanduser()


@dataclass
class ImageFeatures:
    """Features of one image in the resized frame, with the map back to the original image."""

    keypoints: np.ndarray  # [N, 2] float32, pixels of the resized image
    scores: np.ndarray  # [N] float32
    descriptors: np.ndarray  # [N, D] float32, L2-normalised
    size: tuple[int, int]  # (width, height) of the resized image
    original_size: tuple[int, int]  # (width, height) of the file
    scale: tuple[float, float]  # (sx, sy), see benchmarks.images

    def save(self, path: Path) -> None:
        """Write atomically to ``path`` (``.npz``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
        os.close(fd)
        arrays = {k: np.asarray(v) for k, v in vars(self).items()}
        np.savez(tmp, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ImageFeatures:
        with np.load(path) as z:
            return cls(
                keypoints=z["keypoints"],
                scores=z["scores"],
                descriptors=z["descriptors"],
                size=tuple(int(v) for v in z["size"]),
                original_size=tuple(int(v) for v in z["original_size"]),
                scale=tuple(float(v) for v in z["scale"]),
            )


def image_key(path: Path, resize: Resize) -> str:
    """Hash identifying an image file's content version and its preprocessing."""
    st = path.stat()
    text = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{resize.describe()}"
    return hashlib.sha1(text.encode()).hexdigest()[:20]


class FeatureCache:
    """Exports features of images per method to ``root`` (a temporary folder when ``root`` is None)."""

    def __init__(self, root: str | Path | None, benchmark: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="traqpoint-bench-") if root is None else None
        self.root = Path(self._tmp.name if self._tmp else root).expanduser() / benchmark
        self.extracted = 0  # images extracted by this run (the others came from the cache)
        self.reused = 0

    def path(self, method: Method, image: Path, resize: Resize) -> Path:
        return self.root / f"{method.name}-{method.cache_key}" / f"{image_key(image, resize)}.npz"

    def get(self, method: Method, image: Path, resize: Resize) -> ImageFeatures:
        """Features of ``image`` for ``method``: from the cache, or extracted and stored."""
        path = self.path(method, image, resize)
        if path.is_file():
            try:
                return ImageFeatures.load(path)
            except (OSError, ValueError, KeyError) as err:
                log.warning("ignoring unreadable cache entry %s (%s)", path, err)
        loaded = load_image(image, resize)
        f = method.extract(loaded.image)
        feats = ImageFeatures(**f, size=loaded.size, original_size=loaded.original_size, scale=loaded.scale)
        feats.save(path)
        self._write_meta(method, path.parent)
        self.extracted += 1
        return feats

    def export(self, method: Method, images: list[Path], resize: Resize) -> None:
        """Make sure every image of ``images`` has features in the cache (with a progress bar)."""
        for image in tqdm(images, desc=f"export {method.name}", unit="img", leave=False, disable=None):
            if self.path(method, image, resize).is_file():
                self.reused += 1
            else:
                self.get(method, image, resize)

    def _write_meta(self, method: Method, folder: Path) -> None:
        meta = folder / "method.json"
        if not meta.is_file():
            meta.write_text(json.dumps({"method": method.name, **method.describe()}, indent=1, default=str))

    def close(self) -> None:
        """Remove the temporary folder, if any."""
        if self._tmp is not None:
            self._tmp.cleanup()
