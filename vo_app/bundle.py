"""Windowed bundle adjustment of keyframe poses and map points with pycolmap (Ceres).

The window's keyframes become images of a throw-away :class:`pycolmap.Reconstruction` (one
pinhole camera, constant intrinsics), the map points they observe become its 3D points, and
COLMAP's Ceres bundle adjuster minimises the robust (Huber by default) reprojection error. The
first ``num_fixed`` keyframes are held constant: with two of them fixed, the gauge (including the
monocular scale) is fixed as well. Ceres runs on one thread, so results are deterministic.

Building the problem visits each point once (pycolmap takes one track per point); everything
else is vectorised.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pycolmap

from .map_geometry import invert

log = logging.getLogger(__name__)

LOSSES = {"huber": pycolmap.LossFunctionType.HUBER, "cauchy": pycolmap.LossFunctionType.CAUCHY,
          "trivial": pycolmap.LossFunctionType.TRIVIAL}  # fmt: skip


@dataclass
class Observations:
    """What one keyframe sees: ``point_rows [n]`` (rows of the point array) at pixels ``uv [n, 2]``."""

    point_rows: np.ndarray
    uv: np.ndarray


@dataclass
class BundleResult:
    poses: np.ndarray  # [W, 4, 4] refined T_world_cam
    points: np.ndarray  # [P, 3] refined world points
    initial_cost: float
    final_cost: float
    iterations: int
    seconds: float
    residuals: int  # observations (2 residuals each)
    converged: bool


def bundle_adjust(
    K: np.ndarray,
    image_size: tuple[int, int],
    poses: np.ndarray,
    observations: list[Observations],
    points: np.ndarray,
    num_fixed: int = 2,
    loss: str = "huber",
    loss_scale_px: float = 2.0,
    max_iterations: int = 20,
) -> BundleResult:
    """Refine ``poses [W, 4, 4]`` (T_world_cam) and ``points [P, 3]`` from the keyframes' observations.

    Points observed fewer than twice are left out (and returned unchanged): their depth is unconstrained.
    """
    t0 = time.perf_counter()
    W, P = len(poses), len(points)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    camera = pycolmap.Camera(model="PINHOLE", width=int(image_size[0]), height=int(image_size[1]),
                             params=[fx, fy, cx, cy], camera_id=1)  # fmt: skip
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(camera)
    count = np.zeros(P, np.int64)
    for k, obs in enumerate(observations):
        image = pycolmap.Image(name=str(k), keypoints=np.asarray(obs.uv, np.float64).reshape(-1, 2),
                               camera_id=1, image_id=k + 1)  # fmt: skip
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(invert(poses[k])[:3]))
        np.add.at(count, obs.point_rows, 1)
    # (image, keypoint) pairs of every point, grouped by point
    img = np.concatenate([np.full(len(o.point_rows), k + 1) for k, o in enumerate(observations)])
    kp = np.concatenate([np.arange(len(o.point_rows)) for o in observations])
    rows = np.concatenate([o.point_rows for o in observations])
    order = np.argsort(rows, kind="stable")
    img, kp, rows = img[order], kp[order], rows[order]
    starts = np.searchsorted(rows, np.arange(P + 1))
    point_ids = np.full(P, -1, np.int64)
    for j in np.flatnonzero(count >= 2):  # one pycolmap call per point (see the module docstring)
        track = pycolmap.Track()
        track.add_elements([pycolmap.TrackElement(int(i), int(p)) for i, p in
                            zip(img[starts[j]:starts[j + 1]], kp[starts[j]:starts[j + 1]])])  # fmt: skip
        point_ids[j] = rec.add_point3D(points[j], track)

    config = pycolmap.BundleAdjustmentConfig()
    for k in range(W):
        config.add_image(k + 1)
    for k in range(min(num_fixed, W)):
        config.set_constant_rig_from_world_pose(k + 1)
    config.set_constant_cam_intrinsics(1)
    options = pycolmap.BundleAdjustmentOptions()
    options.refine_focal_length = False
    options.refine_principal_point = False
    options.refine_extra_params = False
    options.print_summary = False
    options.ceres.loss_function_type = LOSSES[loss]
    options.ceres.loss_function_scale = loss_scale_px
    options.ceres.solver_options.max_num_iterations = max_iterations
    options.ceres.solver_options.num_threads = 1
    summary = pycolmap.create_default_bundle_adjuster(options, config, rec).solve()

    out_poses = np.array(poses, np.float64, copy=True)
    for k in range(W):
        T = np.eye(4)
        T[:3] = rec.image(k + 1).cam_from_world().matrix()
        out_poses[k] = invert(T)
    out_points = np.array(points, np.float64, copy=True)
    valid = np.flatnonzero(point_ids >= 0)
    if len(valid):
        out_points[valid] = np.stack([rec.point3D(int(point_ids[j])).xyz for j in valid])
    ceres = summary.ceres_summary
    return BundleResult(
        out_poses,
        out_points,
        float(ceres.initial_cost),
        float(ceres.final_cost),
        int(ceres.num_successful_steps) + int(ceres.num_unsuccessful_steps),
        time.perf_counter() - t0,
        int(summary.num_residuals) // 2,
        bool(summary.is_solution_usable()),
    )
