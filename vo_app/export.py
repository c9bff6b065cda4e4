"""Export of the trajectory and triangulated points as a PLY point cloud through Open3D."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.errors import TraqPointError


def import_open3d():
    """Import Open3D lazily with a one-line explanation when its system library is missing."""
    try:
        import open3d
    except (ImportError, OSError) as err:
        raise TraqPointError(
            f"Open3D is unavailable ({err}); on Debian/Ubuntu install libusb-1.0-0 (apt install libusb-1.0-0)"
        ) from None
    return open3d


def export_ply(path: Path, poses: np.ndarray, points: np.ndarray) -> Path:
    """Camera centres (red) and map points (grey) in one coloured PLY."""
    o3d = import_open3d()
    centres = poses[:, :3, 3] if len(poses) else np.zeros((0, 3))
    xyz = np.concatenate([centres, points]).astype(np.float64)
    colours = np.concatenate([np.tile([1.0, 0.1, 0.1], (len(centres), 1)), np.tile([0.6, 0.6, 0.6], (len(points), 1))])
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    cloud.colors = o3d.utility.Vector3dVector(colours)
    if not o3d.io.write_point_cloud(str(path), cloud):
        raise TraqPointError(f"could not write {path}")
    return path
