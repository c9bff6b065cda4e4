"""KITTI odometry sequences.

Layout (the official ``data_odometry_gray``/``color`` + ``poses`` archives)::

    <root>/sequences/XX/image_0/000000.png ...   left grey   (image_2: left colour)
    <root>/sequences/XX/image_1/000000.png ...   right grey  (image_3: right colour)
    <root>/sequences/XX/calib.txt                P0..P3: 3x4 rectified projection matrices
    <root>/sequences/XX/times.txt                one timestamp (s) per frame
    <root>/poses/XX.txt                          ground truth, 12 numbers per line (T_world_cam)

Images are rectified, so ``K = P_left[:, :3]`` with no distortion; the stereo baseline is
``(P_left[0, 3] - P_right[0, 3]) / fx`` metres (about 0.54 m).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from models.errors import BadInputError, MissingFileError
from models.image_io import read_image

from .base import ImageFileSource, readonly
from .calib import check_K
from .poses import kitti_poses, read_table

log = logging.getLogger(__name__)


def read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    """``calib.txt`` -> ``{"P0": 3x4, ...}`` (other keys such as ``Tr`` are kept as read)."""
    if not path.is_file():
        raise MissingFileError(f"KITTI calibration not found: {path}")
    mats = {}
    for line in path.read_text().splitlines():
        key, sep, values = line.partition(":")
        if not sep:
            continue
        try:
            numbers = np.array([float(v) for v in values.split()])
        except ValueError:
            raise BadInputError(f"{path}: not a number in the {key.strip()} line") from None
        if numbers.size == 12:
            mats[key.strip()] = numbers.reshape(3, 4)
    return mats


class KittiSource(ImageFileSource):
    """A KITTI odometry sequence (left camera), with ground truth when ``poses/XX.txt`` exists.

    Args:
        sequence_dir: ``.../sequences/XX``.
        kitti_camera: 0 = grey pair (image_0 / image_1), 2 = colour pair (image_2 / image_3);
            default 0, or 2 when only the colour images are there.
        colour: also deliver RGB (``frame.colour``); grey images are converted if so.
        poses: ground-truth file (default ``<sequence_dir>/../../poses/XX.txt``, if present).
    """

    def __init__(self, sequence_dir: str | Path, kitti_camera: int | None = None, colour: bool = False,
                 poses: str | Path | None = None) -> None:
        super().__init__(colour=colour)
        self.root = Path(sequence_dir)
        if not self.root.is_dir():
            raise MissingFileError(f"KITTI sequence folder not found: {self.root}")
        camera = kitti_camera
        if camera is None:
            camera = 2 if (self.root / "image_2").is_dir() and not (self.root / "image_0").is_dir() else 0
        if camera not in (0, 2):
            raise BadInputError(f"KITTI camera must be 0 (grey) or 2 (colour), got {camera}")
        self.camera = camera
        self.name = f"kitti/{self.root.name}"
        image_dir = self.root / f"image_{camera}"
        self.paths = sorted(image_dir.glob("*.png"))
        if not self.paths:
            raise MissingFileError(f"no KITTI images (*.png) in {image_dir}")
        calib = read_kitti_calib(self.root / "calib.txt")
        self.P_left, self.P_right = (self._projection(calib, f"P{c}") for c in (camera, camera + 1))
        self._set_camera(self.P_left[:, :3], None, self._first_readable_size())
        self.timestamps = self._read_times()
        default_poses = self.root.parent.parent / "poses" / f"{self.root.name}.txt"
        self.gt_poses = self._read_poses(Path(poses) if poses else default_poses)

    def _projection(self, calib: dict[str, np.ndarray], key: str) -> np.ndarray:
        """The checked 3x4 matrix ``key``: finite, positive focal lengths (a NaN or negative P0 is refused)."""
        path = self.root / "calib.txt"
        if key not in calib:
            raise BadInputError(f"{path}: no {key} line (3x4 projection matrix)")
        P = calib[key]
        check_K(P[:, :3], f"{path} {key}")
        if not np.isfinite(P).all():
            raise BadInputError(f"calibration {path} {key}: the translation column holds NaN or inf")
        return P

    def _read_times(self) -> np.ndarray:
        path = self.root / "times.txt"
        if not path.is_file():
            log.warning("%s: no times.txt, assuming 10 Hz", self.name)
            return np.arange(len(self.paths)) * 0.1
        times = read_table(path, 1)[:, 0]
        if len(times) < len(self.paths):
            raise BadInputError(f"{path} has {len(times)} timestamps for {len(self.paths)} images")
        return times[: len(self.paths)]

    def _read_poses(self, path: Path) -> np.ndarray | None:
        if not path.is_file():
            log.info("%s: no ground truth at %s", self.name, path)
            return None
        poses = kitti_poses(path)
        if len(poses) < len(self.paths):
            raise BadInputError(f"{path} has {len(poses)} poses for {len(self.paths)} images")
        if len(poses) > len(self.paths):
            log.warning("%s: %d ground-truth poses for %d images; using the first ones", self.name, len(poses),
                        len(self.paths))
        poses = poses[: len(self.paths)]
        bad = np.flatnonzero(~np.isfinite(poses.reshape(len(poses), -1)).all(1))
        if len(bad):
            poses[bad] = np.nan  # pose_at() gives None for these frames
            log.warning("%s: %d of %d ground-truth poses in %s are NaN or inf (first: frame %d); those frames "
                        "have no ground truth", self.name, len(bad), len(poses), path, bad[0])
        return readonly(poses)

    @property
    def stereo_baseline(self) -> float:
        """Distance between the left and right camera centres, metres (from P_left, P_right)."""
        return float((self.P_left[0, 3] - self.P_right[0, 3]) / self.P_right[0, 0])

    @property
    def has_stereo(self) -> bool:
        """True when the right images (``image_1`` / ``image_3``) are present."""
        return (self.root / f"image_{self.camera + 1}").is_dir()

    def right_path(self, index: int) -> Path:
        """Path of the right image of frame ``index``."""
        return self.root / f"image_{self.camera + 1}" / self.paths[index].name

    def right_image(self, index: int) -> np.ndarray:
        """The right grey image of frame ``index`` (rectified, same K); MissingFileError if absent."""
        path = self.right_path(index)
        if not path.is_file():
            raise MissingFileError(f"KITTI right image not found: {path} (stereo needs image_{self.camera + 1}/)")
        return read_image(path)
