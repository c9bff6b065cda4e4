"""The odometry's parts on small hand-made inputs: map, PnP, bundle adjustment, keyframe policy, trajectory I/O."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from models.errors import BadInputError
from vo_app import trajectory
from vo_app.bundle import Observations, bundle_adjust
from vo_app.keyframes import KeyframePolicy
from vo_app.map import LocalMap
from vo_app.map_geometry import project, rotation_compensated_parallax, to_h, triangulate
from vo_app.map_pnp import refine_pnp, solve_pnp

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def points(n=400, seed=0):
    return np.random.default_rng(seed).uniform([-4, -3, 5], [4, 3, 20], (n, 3))


def test_map_add_lookup_cull():
    m = LocalMap()
    assert m.add(np.array([5, 1, 9]), np.eye(3), frame=0) == 3
    assert m.add(np.array([1, 7]), np.ones((2, 3)), frame=1) == 1  # 1 is already a point
    assert m.ids.tolist() == [1, 5, 7, 9]
    q, r = m.lookup(np.array([9, 2, 1]))
    assert sorted(zip(q.tolist(), m.ids[r].tolist())) == [(0, 9), (2, 1)]
    # 1 tracked now; 5 seen by two window keyframes; 7 and 9 by one only -> culled
    assert m.cull(np.array([1]), [np.array([5, 7]), np.array([5, 9])]) == 2
    assert m.ids.tolist() == [1, 5]


def test_triangulation_checks_angle_and_depth():
    X = points()
    Ta, Tb = np.eye(4), to_h(np.eye(3), [0.5, 0, 0])
    pa, _ = project(K, Ta, X)
    pb, _ = project(K, Tb, X)
    Y, good = triangulate(K, Ta, Tb, pa, pb, min_angle_deg=0.5)
    assert good.all() and np.abs(Y - X).max() < 1e-6
    _, good = triangulate(K, Ta, to_h(np.eye(3), [0.01, 0, 0]), pa, project(K, to_h(np.eye(3), [0.01, 0, 0]), X)[0])
    assert not good.any()  # 1 cm baseline: every ray pair is nearly parallel


def test_rotation_compensated_parallax_ignores_pure_rotation():
    X = points()
    R = Rotation.from_rotvec([0, 0.05, 0]).as_matrix()
    p0, _ = project(K, np.eye(4), X)
    p1, _ = project(K, to_h(R, [0, 0, 0]), X)
    R_cur_ref = R.T  # camera 1 from camera 0
    assert np.median(np.linalg.norm(p1 - p0, axis=1)) > 20
    assert rotation_compensated_parallax(K, R_cur_ref, p0, p1) < 1e-6


@pytest.mark.parametrize("method", ["poselib", "opencv"])
def test_pnp_with_outliers(method):
    X = points()
    T = to_h(Rotation.from_rotvec([0.02, -0.1, 0.01]).as_matrix(), [0.3, -0.1, 1.0])
    uv, _ = project(K, T, X)
    uv[:40] += 30.0  # 10 % gross outliers
    res = solve_pnp(K, uv, X, method, threshold_px=2.0)
    assert res is not None
    assert np.abs(res.pose - T).max() < 1e-6
    assert not res.inliers[:40].any() and res.inliers[40:].all()
    assert solve_pnp(K, uv[:5], X[:5], method) is None  # too few for min_inliers


@pytest.mark.parametrize("method", ["poselib", "opencv"])
def test_refine_pnp_from_a_close_pose(method):
    X = points()
    T = to_h(Rotation.from_rotvec([0.02, -0.1, 0.01]).as_matrix(), [0.3, -0.1, 1.0])
    uv, _ = project(K, T, X)
    uv[:40] += 30.0  # gross outliers: outside the threshold around the initial pose, never used
    near = to_h(Rotation.from_rotvec([0.021, -0.1, 0.01]).as_matrix(), [0.302, -0.1, 1.0])
    res = refine_pnp(K, uv, X, near, method, threshold_px=2.5)
    assert res is not None
    assert np.abs(res.pose - T).max() < 1e-6
    assert not res.inliers[:40].any() and res.inliers[40:].all()
    far = to_h(Rotation.from_rotvec([0.2, -0.1, 0.01]).as_matrix(), [0.3, -0.1, 1.0])  # 10 deg off
    assert refine_pnp(K, uv, X, far, method, threshold_px=2.5) is None  # nothing fits: the caller runs RANSAC


def test_bundle_adjustment_refines_poses_and_points():
    rng = np.random.default_rng(0)
    X = points(300)
    rot = Rotation.from_rotvec(np.outer(np.arange(5), [0, 0.02, 0])).as_matrix()
    poses = np.stack([to_h(rot[k], [0.3 * k, 0, 0.4 * k]) for k in range(5)])
    obs = []
    for T in poses:
        uv, _ = project(K, T, X)
        obs.append(Observations(np.arange(len(X)), uv))
    noisy = poses.copy()
    noisy[2:, :3, 3] += rng.normal(0, 0.05, (3, 3))
    res = bundle_adjust(K, (640, 480), noisy, obs, X + rng.normal(0, 0.05, X.shape), num_fixed=2)
    assert res.converged and res.final_cost < 1e-3 * res.initial_cost
    np.testing.assert_allclose(res.poses[:2], noisy[:2])  # the gauge keyframes are held
    assert np.abs(res.poses[:, :3, 3] - poses[:, :3, 3]).max() < 1e-4
    assert np.abs(res.points - X).max() < 1e-3


def test_keyframe_policy_reasons():
    p = KeyframePolicy(kf_parallax=30, kf_min_tracked=0.3, kf_min_points=60, kf_max_interval=10, kf_min_interval=1)
    assert p.reason(3, 5.0, 0.9, 200) is None
    assert p.reason(3, 31.0, 0.9, 200) == "parallax"
    assert p.reason(3, 5.0, 0.2, 200) == "tracked"
    assert p.reason(10, 5.0, 0.9, 200) == "interval"
    assert p.reason(0, 5.0, 0.9, 20) == "few_points"  # fires even within the minimum interval
    assert p.reason(0, 50.0, 0.1, 200) is None


def test_kitti_and_tum_files_round_trip_through_evo(tmp_path):
    rots = Rotation.from_rotvec(np.outer(np.arange(6), [0.01, 0.1, 0.0])).as_matrix()
    poses = np.stack([to_h(r, [i, 0.5 * i, -i]) for i, r in enumerate(rots)])
    trajectory.write_kitti(tmp_path / "t.kitti", poses)
    np.testing.assert_allclose(trajectory.read_kitti(tmp_path / "t.kitti"), poses, atol=1e-9)
    assert np.loadtxt(tmp_path / "t.kitti").shape == (6, 12)
    stamps = 100.0 + 0.1 * np.arange(6)
    trajectory.write_tum(tmp_path / "t.tum", stamps, poses)
    ts, back = trajectory.read_tum(tmp_path / "t.tum")
    np.testing.assert_allclose(ts, stamps)
    np.testing.assert_allclose(back, poses, atol=1e-9)
    with pytest.raises(BadInputError):
        trajectory.read_kitti(tmp_path / "missing.txt")


def test_fill_gaps_keeps_a_row_per_frame():
    poses = np.stack([to_h(Rotation.from_rotvec([0, 0.1 * i, 0]).as_matrix(), [i, 0, 0]) for i in (0, 1, 3, 4)])
    full, filled, interpolated = trajectory.fill_gaps(np.array([0, 1, 3, 4]), poses)
    assert full.tolist() == [0, 1, 2, 3, 4] and interpolated.tolist() == [False, False, True, False, False]
    np.testing.assert_allclose(filled[2, :3, 3], [2, 0, 0])
    np.testing.assert_allclose(filled[2, :3, :3], Rotation.from_rotvec([0, 0.2, 0]).as_matrix(), atol=1e-12)
    np.testing.assert_allclose(filled[[0, 1, 3, 4]], poses)


def test_scale_steps_gives_each_step_its_length():
    rots = Rotation.from_rotvec(np.outer(np.arange(5), [0.0, 0.05, 0.0])).as_matrix()
    xyz = np.array([[0, 0, 0], [0, 0, 2], [0, 0, 2], [1, 0, 2], [1, 0, 5]], float)  # step 1->2 does not move
    poses = np.stack([to_h(r, p) for r, p in zip(rots, xyz)])
    out = trajectory.scale_steps(poses, np.array([1.0, 0.5, 2.0, np.nan]))
    np.testing.assert_allclose(out[:, :3, :3], poses[:, :3, :3])
    np.testing.assert_allclose(out[0, :3, 3], xyz[0])
    steps = np.diff(out[:, :3, 3], axis=0)
    # lengths 1, (0.5 carried to the next step that moves) 2.5, and the NaN step kept as estimated
    np.testing.assert_allclose(steps, [[0, 0, 1], [0, 0, 0], [2.5, 0, 0], [0, 0, 3]], atol=1e-12)
    with pytest.raises(ValueError, match="step lengths"):
        trajectory.scale_steps(poses, np.ones(3))


def test_default_keyframe_parallax_scales_with_the_image():
    """DSO's rule: 0.04 x (width + height) px unless kf_parallax is given."""
    import numpy as np

    from vo_app.odometry import Odometry

    k = np.array([[700.0, 0, 612.5], [0, 700, 184.5], [0, 0, 1]])
    assert Odometry(k, "mono", image_size=(1226, 370)).policy.kf_parallax == pytest.approx(0.04 * 1596)
    assert Odometry(k, "mono", image_size=(640, 480)).policy.kf_parallax == pytest.approx(44.8)
    assert Odometry(k, "mono", image_size=(640, 480), kf_parallax=30.0).policy.kf_parallax == 30.0
