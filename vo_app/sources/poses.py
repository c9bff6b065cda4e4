"""Ground-truth pose files and timestamp association.

Every function returns ``T_world_cam`` 4x4 float64 poses (camera-to-world) stacked as
``[N, 4, 4]``; rows that are unknown are NaN.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.errors import BadInputError


def read_table(path: Path, min_cols: int, delimiter: str | None = None) -> np.ndarray:
    """Numeric table of a text file (``#`` comments skipped) with at least ``min_cols`` columns."""
    rows = []
    for n, line in enumerate(Path(path).read_text(errors="replace").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            values = [float(v) for v in (line.split(delimiter) if delimiter else line.split())]
        except ValueError:
            raise BadInputError(f"{path}, line {n}: not a number in {line[:60]!r}") from None
        if len(values) < min_cols:
            raise BadInputError(f"{path}, line {n}: expected {min_cols} numbers, got {len(values)}")
        rows.append(values[:min_cols])
    return np.array(rows, dtype=np.float64).reshape(-1, min_cols)


def kitti_poses(path: Path) -> np.ndarray:
    """KITTI ground truth (12 numbers per line: top 3x4 of T_world_cam, row-major) -> [N, 4, 4]."""
    rows = read_table(path, 12)
    poses = np.tile(np.eye(4), (len(rows), 1, 1))
    poses[:, :3, :4] = rows.reshape(-1, 3, 4)
    return poses


def quat_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrices [N, 3, 3] from unit quaternions [N, 4] in (x, y, z, w) order."""
    q = np.asarray(q_xyzw, dtype=np.float64).reshape(-1, 4)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    x, y, z, w = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)


def poses_from_tq(t: np.ndarray, q_xyzw: np.ndarray) -> np.ndarray:
    """4x4 poses [N, 4, 4] from translations [N, 3] and quaternions [N, 4] (x, y, z, w)."""
    poses = np.tile(np.eye(4), (len(t), 1, 1))
    poses[:, :3, :3] = quat_to_matrix(q_xyzw)
    poses[:, :3, 3] = t
    return poses


def tum_trajectory(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """TUM trajectory (``timestamp tx ty tz qx qy qz qw``) -> (timestamps [N], poses [N, 4, 4])."""
    rows = read_table(path, 8)
    return rows[:, 0], poses_from_tq(rows[:, 1:4], rows[:, 4:8])


def associate(query: np.ndarray, stamps: np.ndarray, max_dt: float) -> np.ndarray:
    """Index into sorted ``stamps`` of the nearest stamp to each query, or -1 if further than ``max_dt``."""
    query, stamps = np.asarray(query, np.float64), np.asarray(stamps, np.float64)
    if len(stamps) == 0:
        return np.full(len(query), -1)
    right = np.clip(np.searchsorted(stamps, query), 0, len(stamps) - 1)
    left = np.maximum(right - 1, 0)
    nearest = np.where(np.abs(stamps[left] - query) <= np.abs(stamps[right] - query), left, right)
    return np.where(np.abs(stamps[nearest] - query) <= max_dt, nearest, -1)


def gather_poses(poses: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``poses[index]`` with NaN rows where ``index`` is -1."""
    out = np.full((len(index), 4, 4), np.nan)
    ok = index >= 0
    out[ok] = poses[index[ok]]
    return out
