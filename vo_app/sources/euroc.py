"""EuRoC MAV sequences (ASL format, left camera ``cam0``).

Layout::

    <seq>/mav0/cam0/data.csv          #timestamp [ns],filename
    <seq>/mav0/cam0/data/<ns>.png     752x480 grey
    <seq>/mav0/cam0/sensor.yaml       intrinsics [fu, fv, cu, cv], radial-tangential
                                      distortion [k1, k2, p1, p2], T_BS (camera -> body, 4x4)
    <seq>/mav0/state_groundtruth_estimate0/data.csv
                                      #timestamp [ns], p_RS_R x y z, q_RS w x y z, ... (body -> world)

Camera ground truth is ``T_world_cam = T_world_body @ T_BS`` at the nearest ground-truth
time (200 Hz, within ``max_dt``). Images are undistorted to a pinhole K.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from models.errors import BadInputError, MissingFileError

from .base import ImageFileSource, readonly
from .calib import check_dist, make_calibration, parse_yaml
from .poses import associate, gather_poses, poses_from_tq, read_table

log = logging.getLogger(__name__)


def read_euroc_camera(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int], np.ndarray]:
    """``sensor.yaml`` -> (K 3x3, dist [5], (width, height), T_BS 4x4)."""
    if not path.is_file():
        raise MissingFileError(f"EuRoC camera file not found: {path}")
    data = parse_yaml(path.read_text())
    try:
        fu, fv, cu, cv = (float(v) for v in data["intrinsics"])
        model = data.get("distortion_model", "radial-tangential")
        if model not in ("radial-tangential", "radtan", "plumb_bob"):
            raise BadInputError(f"{path}: distortion model {model!r} is not supported (radial-tangential only)")
        dist = check_dist(data.get("distortion_coefficients", []), str(path))
        width, height = (int(v) for v in data["resolution"])
        T_BS = np.asarray(data["T_BS"]["data"], dtype=np.float64).reshape(4, 4)
    except BadInputError:
        raise
    except (TypeError, KeyError, ValueError) as exc:
        raise BadInputError(f"{path}: not an EuRoC camera file (missing or bad {exc})") from None
    calib = make_calibration(fu, fv, cu, cv, dist, (width, height), str(path))
    return calib.K, calib.dist, (width, height), T_BS


class EurocSource(ImageFileSource):
    """A EuRoC MAV sequence (``cam0``), undistorted, with camera ground truth when present.

    Args:
        folder: the sequence folder (holding ``mav0``) or ``mav0`` itself.
        euroc_camera: ``"cam0"`` (left) or ``"cam1"``.
        max_dt: largest image-to-ground-truth time difference, seconds.
        colour: deliver ``frame.colour`` too (EuRoC is grey: the grey image repeated).
    """

    def __init__(self, folder: str | Path, euroc_camera: str = "cam0", max_dt: float = 0.01,
                 colour: bool = False) -> None:
        super().__init__(colour=colour)
        folder = Path(folder)
        if not folder.is_dir():
            raise MissingFileError(f"EuRoC sequence folder not found: {folder}")
        self.mav = folder if folder.name == "mav0" else folder / "mav0"
        if not self.mav.is_dir():
            raise MissingFileError(f"EuRoC folder has no mav0/: {folder}")
        self.name = f"euroc/{(folder.parent if folder.name == 'mav0' else folder).name}"
        cam_dir = self.mav / euroc_camera
        self.timestamps, self.paths = self._list_images(cam_dir)
        K, dist, size, self.T_BS = read_euroc_camera(cam_dir / "sensor.yaml")
        self._set_camera(K, dist, size)
        self.gt_poses = self._ground_truth(max_dt)

    def _list_images(self, cam_dir: Path) -> tuple[np.ndarray, list[Path]]:
        csv = cam_dir / "data.csv"
        if not csv.is_file():
            raise MissingFileError(f"EuRoC image list not found: {csv}")
        stamps, paths = [], []
        for n, line in enumerate(csv.read_text().splitlines(), 1):
            parts = [p.strip() for p in line.split("#", 1)[0].split(",")]
            if parts == [""]:
                continue
            if len(parts) < 2 or not parts[0].isdigit():
                raise BadInputError(f"{csv}, line {n}: expected 'timestamp_ns,filename'")
            stamps.append(int(parts[0]) * 1e-9)
            paths.append(cam_dir / "data" / parts[1])
        if not paths:
            raise MissingFileError(f"no images listed in {csv}")
        return np.asarray(stamps), paths

    def _ground_truth(self, max_dt: float) -> np.ndarray | None:
        path = self.mav / "state_groundtruth_estimate0" / "data.csv"
        if not path.is_file():
            return None
        rows = read_table(path, 8, delimiter=",")
        stamps = rows[:, 0] * 1e-9
        order = np.argsort(stamps)
        T_world_body = poses_from_tq(rows[order, 1:4], rows[order][:, [5, 6, 7, 4]])  # (w,x,y,z) -> (x,y,z,w)
        index = associate(self.timestamps, stamps[order], max_dt)
        if (index < 0).any():
            log.warning("%s: %d of %d images have no ground truth within %.3f s", self.name, int((index < 0).sum()),
                        len(index), max_dt)
        return readonly(gather_poses(T_world_body @ self.T_BS, index))
