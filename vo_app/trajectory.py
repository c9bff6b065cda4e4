"""Trajectories: KITTI / TUM / EuRoC files through evo's ``file_interface``, and the metrics.

The one trajectory module of the project (below ``benchmarks``, which imports it). Files:

- KITTI poses: one line per frame, the top 3x4 of ``T_world_cam``, row-major. Tools read the
  rows in order, so :func:`fill_gaps` gives frames that were never estimated (skipped,
  unreadable) an interpolated pose instead of dropping their row.
- TUM: ``timestamp tx ty tz qx qy qz qw`` (Hamilton quaternion, ``qw`` last).
- EuRoC ground truth ``state_groundtruth_estimate0/data.csv`` (read only; nanosecond stamps).

Metrics through evo's Python API, plus the KITTI devkit drift:

Poses are ``T_world_cam`` (camera-to-world) ``[N, 4, 4]`` float64, or ``[N, 3, 4]`` rows as in
KITTI pose files; the ground truth and the estimate are associated by index (same ``N``).

- APE: translation part, after Umeyama alignment of the estimate to the ground truth with
  ``align="se3"`` (rotation + translation), ``"sim3"`` (plus scale), ``"scale"`` or ``"none"``.
- RPE: translation part (m) or rotation angle (deg) of ``(Q_i^-1 Q_j)^-1 (P_i^-1 P_j)``, with pairs
  ``delta`` frames or metres apart (consecutive, non-overlapping pairs, as ``evo_rpe``).
  ``pairing="legacy"`` reproduces the metre pairing of the 2018 evo release that wrote evo's archived
  KITTI 00 results (its first pair starts where the path first reaches ``delta``, not at pose 0).
- KITTI devkit (``evaluate_odometry.cpp``): every 10th frame starts segments of 100, 200, ..., 800 m
  of ground-truth path; ``t_err`` = translation error / length, ``r_err`` = rotation angle / length,
  averaged over all segments; reported as % and deg per 100 m; ``None`` when no segment fits.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from evo.core import lie_algebra as lie
from evo.core import metrics as evo_metrics
from evo.core.geometry import GeometryException
from evo.core.trajectory import PosePath3D, PoseTrajectory3D
from evo.tools import file_interface
from scipy.spatial.transform import Rotation, Slerp

from models.errors import BadInputError

Alignment = Literal["none", "se3", "sim3", "scale"]
Pairing = Literal["evo", "legacy"]

KITTI_LENGTHS = (100, 200, 300, 400, 500, 600, 700, 800)
KITTI_STEP = 10  # frames between segment starts, as in the devkit
STAT_KEYS = ("rmse", "mean", "median", "std", "min", "max", "sse")


def as_poses(poses: np.ndarray | list, name: str = "poses") -> np.ndarray:
    """Check and return ``[N, 4, 4]`` float64 poses from ``[N, 4, 4]`` or ``[N, 3, 4]`` / ``[N, 12]`` input."""
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim == 2 and arr.shape[1] == 12:
        arr = arr.reshape(-1, 3, 4)
    if arr.ndim != 3 or arr.shape[1:] not in ((3, 4), (4, 4)):
        raise BadInputError(f"{name} must be [N, 4, 4], [N, 3, 4] or [N, 12], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise BadInputError(f"{name} contain NaN or infinite values")
    if arr.shape[1] == 3:
        bottom = np.broadcast_to(np.array([0.0, 0.0, 0.0, 1.0]), (arr.shape[0], 1, 4))
        arr = np.concatenate([arr, bottom], axis=1)
    return arr


def write_kitti(path, poses: np.ndarray) -> None:
    """Write ``[N, 4, 4]`` ``T_world_cam`` as a KITTI pose file (evo ``file_interface``)."""
    file_interface.write_kitti_poses_file(str(path), PosePath3D(poses_se3=list(as_poses(poses, "poses"))))


def read_kitti(path) -> np.ndarray:
    """``[N, 4, 4]`` poses of a KITTI pose file; one clear error when it cannot be parsed."""
    try:
        return np.stack(file_interface.read_kitti_poses_file(str(path)).poses_se3)
    except (OSError, file_interface.FileInterfaceException, ValueError) as err:
        raise BadInputError(f"cannot read KITTI poses {path}: {err}") from None


def write_tum(path, timestamps: np.ndarray, poses: np.ndarray) -> None:
    """Write ``timestamps [N]`` (s) and ``poses [N, 4, 4]`` as a TUM trajectory (evo ``file_interface``)."""
    poses = as_poses(poses, "poses")
    stamps = np.asarray(timestamps, np.float64).reshape(-1)
    if len(stamps) != len(poses):
        raise BadInputError(f"{len(stamps)} timestamps for {len(poses)} poses")
    file_interface.write_tum_trajectory_file(str(path), PoseTrajectory3D(poses_se3=list(poses), timestamps=stamps))


def _read_stamped(reader, path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps [N], poses [N, 4, 4])`` through one of evo's readers; one error line on failure."""
    try:
        traj = reader(str(path))
    except (OSError, file_interface.FileInterfaceException, ValueError) as err:
        raise BadInputError(f"cannot read {kind} trajectory {path}: {err}") from None
    return np.asarray(traj.timestamps, np.float64), np.stack(traj.poses_se3)


def read_tum(path) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps [N], poses [N, 4, 4])`` of a TUM trajectory file."""
    return _read_stamped(file_interface.read_tum_trajectory_file, path, "TUM")


def read_euroc(path) -> tuple[np.ndarray, np.ndarray]:
    """``(timestamps [N] in s, poses [N, 4, 4])`` of a EuRoC ``data.csv`` ground truth (body poses)."""
    return _read_stamped(file_interface.read_euroc_csv_trajectory, path, "EuRoC")


def fill_gaps(indices: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Poses for every index from ``indices[0]`` to ``indices[-1]``: ``(all indices, poses, filled mask)``.

    ``indices [N]`` strictly increasing frame numbers with gaps (skipped frames), ``poses [N, 4, 4]``.
    A missing frame gets the pose interpolated between its neighbours (linear in position,
    slerp in rotation), so that a KITTI file keeps one row per frame in order.
    """
    indices = np.asarray(indices, np.int64)
    poses = as_poses(poses, "poses") if len(indices) else np.zeros((0, 4, 4))
    if len(indices) < 2 or np.all(np.diff(indices) == 1):
        return indices, poses, np.zeros(len(indices), bool)
    full = np.arange(indices[0], indices[-1] + 1)
    out = np.tile(np.eye(4), (len(full), 1, 1))
    for k in range(3):
        out[:, k, 3] = np.interp(full, indices, poses[:, k, 3])
    out[:, :3, :3] = Slerp(indices, Rotation.from_matrix(poses[:, :3, :3]))(full).as_matrix()
    known = np.isin(full, indices)
    out[known] = poses  # exact where estimated
    return full, out, ~known


def scale_steps(poses: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``poses [F, 4, 4]`` with each frame-to-frame camera displacement rescaled to ``lengths [F-1]``.

    The rotations and the first position are kept; position ``i`` becomes position ``i-1`` plus the
    estimated displacement ``i-1 -> i`` scaled to ``lengths[i-1]`` (the ground-truth step length of
    the paper's ``--scale gt`` protocol). A step without displacement (no direction, e.g. a pose
    extrapolated before any motion was known) passes its length on to the next step that moves; a
    NaN length keeps the estimated step.
    """
    poses = as_poses(poses)
    lengths = np.asarray(lengths, np.float64).reshape(-1)
    if len(lengths) != max(len(poses) - 1, 0):
        raise ValueError(f"need {max(len(poses) - 1, 0)} step lengths for {len(poses)} poses, got {len(lengths)}")
    out = poses.copy()
    if len(poses) < 2:
        return out
    d = np.diff(poses[:, :3, 3], axis=0)
    norm = np.linalg.norm(d, axis=1)
    moves = np.flatnonzero(norm > 1e-12)
    target = np.searchsorted(moves, np.arange(len(d)))  # the step (index into moves) that takes each length
    carried = np.zeros(len(moves))
    keep = target < len(moves)  # lengths after the last move go nowhere
    np.add.at(carried, target[keep], lengths[keep])
    ratio = np.ones(len(d))
    ok = np.isfinite(carried)
    ratio[moves[ok]] = carried[ok] / norm[moves[ok]]
    out[1:, :3, 3] = poses[0, :3, 3] + np.cumsum(d * ratio[:, None], axis=0)
    return out


def _pair(gt: np.ndarray, est: np.ndarray, min_poses: int = 2) -> tuple[np.ndarray, np.ndarray]:
    # Copies: evo aligns trajectories in place and our inputs must stay untouched.
    gt, est = as_poses(gt, "ground-truth poses").copy(), as_poses(est, "estimated poses").copy()
    if len(gt) != len(est):
        raise BadInputError(f"ground truth has {len(gt)} poses but the estimate has {len(est)}")
    if len(gt) < min_poses:
        raise BadInputError(f"need at least {min_poses} poses, got {len(gt)}")
    return gt, est


def _stats(metric: evo_metrics.PE) -> dict[str, float]:
    stats = metric.get_all_statistics()
    return {k: float(stats[k]) for k in STAT_KEYS}


def path_length(poses: np.ndarray) -> float:
    """Length in metres of the path through the camera centres of ``poses``."""
    xyz = as_poses(poses)[:, :3, 3]
    return float(np.linalg.norm(np.diff(xyz, axis=0), axis=1).sum())


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares ``(R, t, s)`` with ``dst ~ s R src + t`` for points ``[N, 3]`` (Umeyama 1991).

    Unlike evo's version it accepts collinear points (a straight drive), where the rotation about
    the line is arbitrary but every solution gives the same, minimal, position error.
    """
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    cov = (dst - mu_dst).T @ (src - mu_src) / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    R = u @ sign @ vt
    var_src = ((src - mu_src) ** 2).sum() / len(src)
    s = float(np.trace(np.diag(d) @ sign) / var_src) if with_scale and var_src > 0 else 1.0
    return R, mu_dst - s * R @ mu_src, s


def _align(traj: PosePath3D, ref: PosePath3D, align: Alignment) -> None:
    """Align ``traj`` to ``ref`` in place with evo, or with :func:`umeyama` where evo finds it degenerate."""
    try:
        traj.align(ref, correct_scale=align in ("sim3", "scale"), correct_only_scale=align == "scale")
    except GeometryException:
        if align == "scale":
            raise
        R, t, s = umeyama(traj.positions_xyz, ref.positions_xyz, with_scale=align == "sim3")
        traj.scale(s)
        traj.transform(lie.se3(R, t))


def ape(gt: np.ndarray, est: np.ndarray, align: Alignment = "se3") -> dict[str, float]:
    """Absolute (translation) pose error statistics in metres after ``align``; keys :data:`STAT_KEYS`."""
    if align not in ("none", "se3", "sim3", "scale"):
        raise BadInputError(f"unknown alignment {align!r}; choose none, se3, sim3 or scale")
    gt, est = _pair(gt, est, min_poses=3 if align != "none" else 1)
    ref, traj = PosePath3D(poses_se3=list(gt)), PosePath3D(poses_se3=list(est))
    if align != "none":
        _align(traj, ref, align)
    metric = evo_metrics.APE(evo_metrics.PoseRelation.translation_part)
    metric.process_data((ref, traj))
    return _stats(metric)


def legacy_path_ids(poses: np.ndarray, delta: float) -> list[int]:
    """Indices where the travelled path reaches ``delta`` metres again (the pairing of older evo releases)."""
    ids, travelled = [], 0.0
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    for i, step in enumerate(steps, start=1):
        travelled += float(step)
        if travelled >= delta:
            ids.append(i)
            travelled = 0.0
    return ids


def rpe(
    gt: np.ndarray,
    est: np.ndarray,
    relation: Literal["trans", "rot_deg"] = "trans",
    delta: float = 1,
    unit: Literal["frames", "m"] = "frames",
    pairing: Pairing = "evo",
) -> dict[str, float]:
    """Relative pose error statistics (metres for ``"trans"``, degrees for ``"rot_deg"``); keys :data:`STAT_KEYS`.

    Pairs are consecutive and non-overlapping, ``delta`` frames or metres (of the estimate's path,
    as evo) apart. ``pairing="legacy"`` only changes metre pairs (see the module docstring).
    """
    gt, est = _pair(gt, est)
    relation_enum = {
        "trans": evo_metrics.PoseRelation.translation_part,
        "rot_deg": evo_metrics.PoseRelation.rotation_angle_deg,
    }.get(relation)
    if relation_enum is None:
        raise BadInputError(f"unknown RPE relation {relation!r}; choose trans or rot_deg")
    if unit not in ("frames", "m") or pairing not in ("evo", "legacy") or delta <= 0:
        raise BadInputError(f"bad RPE settings: delta={delta} unit={unit!r} pairing={pairing!r}")
    if unit == "m" and pairing == "legacy":
        # Reduce both paths to the legacy pair chain; consecutive pairs of it are then 1 frame apart.
        ids = legacy_path_ids(est, float(delta))
        if len(ids) < 2:
            raise BadInputError(f"the estimate is too short for RPE pairs {delta} m apart")
        gt, est, delta, unit = gt[ids], est[ids], 1, "frames"
    evo_unit = evo_metrics.Unit.frames if unit == "frames" else evo_metrics.Unit.meters
    metric = evo_metrics.RPE(relation_enum, delta=delta, delta_unit=evo_unit, all_pairs=False)
    try:
        metric.process_data((PosePath3D(poses_se3=list(gt)), PosePath3D(poses_se3=list(est))))
    except Exception as err:  # noqa: BLE001 - evo raises its own exception types for too-short paths
        raise BadInputError(f"RPE failed ({type(err).__name__}): {err}") from None
    return _stats(metric)


def _rotation_angle(r: np.ndarray) -> np.ndarray:
    """Rotation angles (rad) of ``[..., 3, 3]`` matrices, as the devkit's ``rotationError``."""
    d = 0.5 * (np.trace(r, axis1=-2, axis2=-1) - 1.0)
    return np.arccos(np.clip(d, -1.0, 1.0))


def kitti_drift(gt: np.ndarray, est: np.ndarray) -> tuple[float | None, float | None]:
    """KITTI devkit drift ``(t_err %, r_err deg / 100 m)`` over 100-800 m segments; ``None`` when too short."""
    gt, est = _pair(gt, est)
    dist = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1))])
    t_errs, r_errs = [], []
    for first in range(0, len(gt), KITTI_STEP):
        for length in KITTI_LENGTHS:
            # The devkit takes the first frame whose distance exceeds dist[first] + length.
            last = int(np.searchsorted(dist, dist[first] + length, side="right"))
            if last >= len(gt):
                continue
            delta_gt = np.linalg.inv(gt[first]) @ gt[last]
            delta_est = np.linalg.inv(est[first]) @ est[last]
            err = np.linalg.inv(delta_est) @ delta_gt
            t_errs.append(np.linalg.norm(err[:3, 3]) / length)
            r_errs.append(_rotation_angle(err[:3, :3]) / length)
    if not t_errs:
        return None, None
    return float(np.mean(t_errs) * 100.0), float(np.degrees(np.mean(r_errs)) * 100.0)


def kitti_metrics(gt: np.ndarray, est: np.ndarray, align: Alignment = "se3") -> dict[str, float | None]:
    """The trajectory keys of the ``kitti`` result schema (DESIGN.md section 6).

    ``ate_rmse_m`` is the APE RMSE after ``align`` (``"sim3"`` for up-to-scale monocular runs),
    ``ate_pct_path`` that RMSE as % of the ground-truth path length, ``rpe_trans_m`` / ``rpe_rot_deg``
    the RMSE of the 1-frame RPE, ``t_err_pct`` / ``r_err_deg_per_100m`` the KITTI devkit drift
    (``None`` when the sequence is shorter than 100 m).
    """
    gt, est = _pair(gt, est, min_poses=3)
    ate = ape(gt, est, align)["rmse"]
    length = path_length(gt)
    t_err, r_err = kitti_drift(gt, est)
    return {
        "ate_rmse_m": ate,
        "ate_pct_path": ate / length * 100.0 if length > 0 else None,
        "rpe_trans_m": rpe(gt, est, "trans")["rmse"],
        "rpe_rot_deg": rpe(gt, est, "rot_deg")["rmse"],
        "t_err_pct": t_err,
        "r_err_deg_per_100m": r_err,
    }
