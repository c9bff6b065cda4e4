"""TUM RGB-D sequences (RGB stream only).

Layout: ``rgb.txt`` (``timestamp rgb/<timestamp>.png``), ``rgb/*.png`` and, when present,
``groundtruth.txt`` (``timestamp tx ty tz qx qy qz qw``, T_world_cam) associated to the
images by nearest timestamp within ``max_dt`` seconds. A folder without ``rgb.txt`` whose
PNGs are named by timestamp (``1341847980.722988.png``) also works.

The camera (freiburg1/2/3) is read from the folder name (``freiburg2``, ``fr2``) or given
with ``tum_camera``; its official intrinsics and distortion are built in, and images are
undistorted so that ``source.K`` is a pinhole K of the same image size.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from models.errors import BadInputError, MissingFileError

from .base import ImageFileSource, readonly
from .poses import associate, gather_poses, tum_trajectory

log = logging.getLogger(__name__)

# Official TUM RGB-D colour-camera calibration (fx, fy, cx, cy, k1, k2, p1, p2, k3), 640x480.
# Source: vision.in.tum.de/data/datasets/rgbd-dataset/file_formats (fr3 images are already undistorted).
TUM_CAMERAS = {
    "fr1": (517.306408, 516.469215, 318.643040, 255.313989, 0.262383, -0.953104, -0.005358, 0.002628, 1.163314),
    "fr2": (520.908620, 521.007327, 325.141442, 249.701764, 0.231222, -0.784899, -0.003257, -0.000105, 0.917205),
    "fr3": (535.4, 539.2, 320.1, 247.6, 0.0, 0.0, 0.0, 0.0, 0.0),
}
TUM_SIZE = (640, 480)


def tum_camera_from_name(path: Path) -> str | None:
    """``"fr1"``/``"fr2"``/``"fr3"`` from a folder name such as ``rgbd_dataset_freiburg2_desk``."""
    match = re.search(r"(?<![a-z])(?:freiburg|fr)([123])(?!\d)", path.name.lower())
    return f"fr{match.group(1)}" if match else None


class TumSource(ImageFileSource):
    """A TUM RGB-D sequence, undistorted to a pinhole camera.

    Args:
        folder: the sequence folder (holds ``rgb.txt``, or timestamp-named PNGs).
        tum_camera: ``"fr1"``, ``"fr2"`` or ``"fr3"``; default: from the folder name.
        max_dt: largest image-to-ground-truth time difference, seconds (TUM's associate.py: 0.02).
        colour: also deliver RGB (``frame.colour``).
        undistort: remap to a pinhole camera (True); False keeps raw images and K (distorted).
    """

    def __init__(self, folder: str | Path, tum_camera: str | None = None, max_dt: float = 0.02,
                 colour: bool = False, undistort: bool = True) -> None:
        super().__init__(colour=colour)
        self.root = Path(folder)
        if not self.root.is_dir():
            raise MissingFileError(f"TUM sequence folder not found: {self.root}")
        self.name = f"tum/{self.root.name}"
        self.timestamps, self.paths = self._list_images()
        self.tum_camera = self._camera(tum_camera)
        fx, fy, cx, cy, *dist = TUM_CAMERAS[self.tum_camera]
        size = self._first_readable_size()
        if size != TUM_SIZE:
            raise BadInputError(f"{self.name}: TUM images are 640x480, got {size[0]}x{size[1]}")
        K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
        self._set_camera(K, np.array(dist) if undistort else None, size)
        self.gt_poses = self._ground_truth(max_dt)

    def _camera(self, tum_camera: str | None) -> str:
        if tum_camera is not None:
            key = tum_camera.lower().replace("freiburg", "fr")
            if key not in TUM_CAMERAS:
                raise BadInputError(f"unknown TUM camera {tum_camera!r}: use fr1, fr2 or fr3")
            return key
        key = tum_camera_from_name(self.root)
        if key is None:
            raise BadInputError(
                f"cannot tell the TUM camera of {self.root.name!r} (no freiburg1/2/3 or fr1/2/3 in the name): "
                "pass tum_camera='fr1', 'fr2' or 'fr3'"
            )
        return key

    def _list_images(self) -> tuple[np.ndarray, list[Path]]:
        """(timestamps, paths) from ``rgb.txt``, else from timestamp-named PNGs."""
        listing = self.root / "rgb.txt"
        if listing.is_file():
            stamps, paths = [], []
            for n, line in enumerate(listing.read_text().splitlines(), 1):
                parts = line.split("#", 1)[0].split()
                if not parts:
                    continue
                try:
                    stamps.append(float(parts[0]))
                except ValueError:
                    raise BadInputError(f"{listing}, line {n}: expected 'timestamp filename'") from None
                if len(parts) < 2:
                    raise BadInputError(f"{listing}, line {n}: expected 'timestamp filename'")
                paths.append(self.root / parts[1])
        else:
            image_dir = self.root / "rgb" if (self.root / "rgb").is_dir() else self.root
            files = image_dir.glob("*.png")
            named = [(float(p.stem), p) for p in files if re.fullmatch(r"\d+(\.\d+)?", p.stem)]
            stamps, paths = zip(*sorted(named)) if named else ((), ())
        if not paths:
            raise MissingFileError(f"no TUM images in {self.root} (expected rgb.txt or <timestamp>.png files)")
        return np.asarray(stamps, dtype=np.float64), list(paths)

    def _ground_truth(self, max_dt: float) -> np.ndarray | None:
        path = self.root / "groundtruth.txt"
        if not path.is_file():
            return None
        stamps, poses = tum_trajectory(path)
        order = np.argsort(stamps)
        index = associate(self.timestamps, stamps[order], max_dt)
        if (index < 0).any():
            log.warning("%s: %d of %d images have no ground truth within %.3f s", self.name, int((index < 0).sum()),
                        len(index), max_dt)
        return readonly(gather_poses(poses[order], index))
