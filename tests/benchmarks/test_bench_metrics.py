"""Unit tests of benchmarks.metrics on small hand-made inputs (no data files needed)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from benchmarks.metrics import homography as hm
from benchmarks.metrics import pose
from models.errors import BadInputError
from vo_app import trajectory

# ---------------------------------------------------------------- pose AUC


def test_auc_hand_computed():
    # sorted errors 0,1,3,inf,inf with recall 0,.25,.5,.75,1: area up to 5 = .125 + .75 + 1.0 = 1.875 -> / 5
    assert pose.pose_auc([1.0, 3.0, math.inf, math.inf], (5.0,)) == pytest.approx([0.375])
    # threshold inside the first segment: area of the triangle-free trapezoid up to 2 = .125 + (.25+.25)/2 * 1
    assert pose.pose_auc([1.0, 3.0, math.inf, math.inf], (2.0,)) == pytest.approx([(0.125 + 0.25) / 2])


def test_auc_limits():
    assert pose.pose_auc([0.0, 0.0, 0.0]) == pytest.approx([1.0, 1.0, 1.0])
    assert pose.pose_auc([math.inf] * 4) == [0.0, 0.0, 0.0]
    assert pose.pose_auc([]) == [0.0, 0.0, 0.0]
    assert pose.pose_auc([25.0, 30.0]) == [0.0, 0.0, 0.0]
    # errors uniform on [0, 20]: the recall curve is the diagonal, AUC@20 = 1/2, AUC@10 = 1/4
    errors = np.linspace(0, 20, 20001)[1:]
    auc5, auc10, auc20 = pose.pose_auc(errors)
    assert auc20 == pytest.approx(0.5, abs=1e-3) and auc10 == pytest.approx(0.25, abs=1e-3)
    assert auc5 == pytest.approx(0.125, abs=1e-3)


def test_auc_rejects_nan():
    with pytest.raises(BadInputError):
        pose.pose_auc([1.0, float("nan")])


# ---------------------------------------------------------------- relative pose


def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis) * np.radians(deg))[0]


def _synthetic_pair(n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    X = rng.uniform([-2, -2, 4], [2, 2, 8], size=(n, 3))
    T = np.eye(4)
    T[:3, :3] = _rotation([0.1, 1.0, 0.05], 10.0)
    T[:3, 3] = [0.5, 0.05, 0.1]
    x0 = (X / X[:, 2:]) @ K.T
    X1 = X @ T[:3, :3].T + T[:3, 3]
    x1 = (X1 / X1[:, 2:]) @ K.T
    return x0[:, :2], x1[:, :2], K, T


def test_relative_pose_exact_on_synthetic_points():
    x0, x1, K, T = _synthetic_pair()
    err, inliers = pose.pair_pose_error(x0, x1, K, K, T)
    assert err < 0.05 and inliers >= 195
    # the same points against the inverse ground truth: a wrong convention shows up as a large error
    assert pose.pair_pose_error(x0, x1, K, K, np.linalg.inv(T))[0] > 5


def test_relative_pose_failures_and_sign():
    x0, x1, K, T = _synthetic_pair()
    assert pose.pair_pose_error(x0[:4], x1[:4], K, K, T) == (math.inf, 0)
    # E fixes t only up to sign: a flipped translation is not an error
    assert pose.pose_error_deg(T, T[:3, :3], -T[:3, 3]) == pytest.approx((0.0, 0.0), abs=1e-5)
    assert pose.rotation_error_deg(np.eye(3), _rotation([0, 0, 1], 30)) == pytest.approx(30.0)
    with pytest.raises(BadInputError):
        pose.estimate_relative_pose(x0, x1[:10], K, K)


# ---------------------------------------------------------------- homography


def test_homography_metrics_on_exact_matches():
    H = np.array([[1.1, 0.05, 10.0], [-0.02, 0.95, 5.0], [1e-4, 2e-5, 1.0]])
    rng = np.random.default_rng(1)
    pts0 = rng.uniform(0, 400, size=(100, 2))
    pts1 = hm.warp_points(pts0, H)
    pts1[:20] += 4.0  # 20 matches off by sqrt(32) = 5.7 px
    errors = hm.match_errors(pts0, pts1, H)
    assert hm.matching_accuracy(errors, (1, 5, 10)) == pytest.approx([0.8, 0.8, 1.0])
    H_est, inliers = hm.estimate_homography(pts0, pts1)
    assert inliers == 80 and hm.corner_error(H_est, H, 400, 300) < 1e-4
    assert hm.corner_error(None, H, 400, 300) == math.inf
    assert hm.accuracy([0.5, 2.0, math.inf, 4.0], (1, 3, 5)) == pytest.approx([0.25, 0.5, 0.75])


def test_homography_metrics_empty_input():
    H = np.eye(3)
    empty = np.zeros((0, 2))
    assert hm.matching_accuracy(hm.match_errors(empty, empty, H)).tolist() == [0.0] * 10
    assert hm.estimate_homography(empty, empty) == (None, 0)
    assert hm.accuracy([]).tolist() == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- trajectories


def _straight(n: int, step: float = 1.0, yaw_per_frame: float = 0.0) -> np.ndarray:
    """Poses along +z, ``step`` m apart, turning ``yaw_per_frame`` rad about y (positions unchanged)."""
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 2, 3] = np.arange(n) * step
    for i in range(n):
        poses[i, :3, :3] = _rotation([0, 1, 0], np.degrees(yaw_per_frame * i))
    return poses


def _segments(n: int):
    """(first, length) of the devkit's segments on a 1 m-per-frame path of ``n`` frames."""
    # a segment of length L ends at the first frame *beyond* L metres: it spans L + 1 frames
    return [(f, length) for f in range(0, n, 10) for length in trajectory.KITTI_LENGTHS if f + length + 1 < n]


def test_kitti_drift_of_a_one_percent_scale_error():
    gt, est = _straight(1001), _straight(1001, step=1.01)
    t_err, r_err = trajectory.kitti_drift(gt, est)
    expected = np.mean([0.01 * (length + 1) / length for _, length in _segments(1001)]) * 100
    assert t_err == pytest.approx(expected, rel=1e-9) and r_err == pytest.approx(0.0, abs=1e-9)
    assert 1.0 < t_err < 1.01
    assert trajectory.kitti_drift(gt, gt) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_kitti_drift_rotation_follows_devkit_segments():
    yaw = 1e-4
    gt, est = _straight(1001), _straight(1001, yaw_per_frame=yaw)
    expected = [(length + 1) * yaw / length for _, length in _segments(1001)]
    assert trajectory.kitti_drift(gt, est)[1] == pytest.approx(np.degrees(np.mean(expected)) * 100, rel=1e-6)


def test_kitti_metrics_keys_and_short_sequence():
    gt = _straight(50)
    est = gt.copy()
    est[:, 0, 3] += 0.1 * np.sin(np.arange(50))
    m = trajectory.kitti_metrics(gt, est)
    assert list(m) == ["ate_rmse_m", "ate_pct_path", "rpe_trans_m", "rpe_rot_deg", "t_err_pct", "r_err_deg_per_100m"]
    assert m["t_err_pct"] is None and m["r_err_deg_per_100m"] is None  # 49 m < 100 m
    assert m["ate_pct_path"] == pytest.approx(m["ate_rmse_m"] / 49 * 100)
    assert m["ate_rmse_m"] > 0.01 and m["rpe_trans_m"] > 0.01


def test_ape_on_a_straight_line():
    # collinear positions: evo's Umeyama refuses them, ours aligns (the error is still well defined)
    gt = _straight(30)
    est = gt.copy()
    est[:, :3, 3] = est[:, :3, 3] * 2 + [1.0, 2.0, 3.0]
    assert trajectory.ape(gt, est, "sim3")["rmse"] < 1e-9
    assert trajectory.ape(gt, est, "se3")["rmse"] == pytest.approx(np.sqrt(np.mean((np.arange(30) - 14.5) ** 2)))


def test_ape_alignment_modes():
    rng = np.random.default_rng(2)
    gt = np.tile(np.eye(4), (30, 1, 1))
    gt[:, :3, 3] = np.cumsum(rng.normal(size=(30, 3)), axis=0)
    moved = np.eye(4)
    moved[:3, :3] = _rotation([1, 2, 3], 40)
    moved[:3, 3] = [5, -2, 1]
    est = moved @ gt
    assert trajectory.ape(gt, est, "se3")["rmse"] < 1e-9
    assert trajectory.ape(gt, est, "none")["rmse"] > 1
    scaled = est.copy()
    scaled[:, :3, 3] *= 0.5
    assert trajectory.ape(gt, scaled, "sim3")["rmse"] < 1e-9 < trajectory.ape(gt, scaled, "se3")["rmse"]
    assert np.array_equal(est, moved @ gt)  # inputs untouched (evo aligns in place)


def test_rpe_frames_and_bad_input():
    gt = _straight(20)
    est = _straight(20, step=1.1)
    stats = trajectory.rpe(gt, est, "trans", delta=1)
    assert stats["rmse"] == pytest.approx(0.1) and stats["max"] == pytest.approx(0.1)
    assert trajectory.rpe(gt, est, "rot_deg")["max"] == pytest.approx(0.0, abs=1e-9)
    assert trajectory.as_poses(gt[:, :3, :].reshape(20, 12)).shape == (20, 4, 4)
    with pytest.raises(BadInputError, match="20 poses but the estimate has 19"):
        trajectory.rpe(gt, est[:19])
    with pytest.raises(BadInputError, match="must be"):
        trajectory.ape(np.zeros((5, 3, 3)), np.zeros((5, 3, 3)))
    bad = est.copy()
    bad[3, 0, 3] = np.nan
    with pytest.raises(BadInputError, match="NaN"):
        trajectory.kitti_metrics(gt, bad)


def test_local_zoom_of_known_homographies():
    assert hm.local_zoom(np.eye(3), 10, 20) == pytest.approx(1.0)
    assert hm.local_zoom(np.diag([2.5, 2.5, 1.0]), 100, 50) == pytest.approx(2.5)
    H = np.array([[1.2, 0.1, 5.0], [-0.05, 0.9, 3.0], [1e-3, 2e-4, 1.0]])
    x, y, eps = 120.0, 80.0, 1e-4  # against a numerical Jacobian
    f = lambda p: hm.warp_points(np.array([p]), H)[0]  # noqa: E731
    dx = (f((x + eps, y)) - f((x - eps, y))) / (2 * eps)
    dy = (f((x, y + eps)) - f((x, y - eps))) / (2 * eps)
    jac = np.stack([dx, dy], 1)
    assert hm.local_zoom(H, x, y) == pytest.approx(math.sqrt(abs(np.linalg.det(jac))), rel=1e-6)


def test_repeatability_counts_points_inside_with_a_partner():
    H = np.array([[1.0, 0, 10.0], [0, 1.0, 0], [0, 0, 1.0]])  # shift right by 10 px
    k0 = np.array([[0.0, 0.0], [20.0, 5.0], [95.0, 5.0], [40.0, 40.0]])  # the third lands outside (105 > 99)
    k1 = np.array([[10.5, 0.0], [30.0, 9.5], [50.0, 40.0]])  # partners at 0.5, 4.5 and 0 px
    assert hm.repeatability(k0, k1, H, (100, 100), 3.0) == pytest.approx(2 / 3)
    assert hm.repeatability(k0, k1, H, (100, 100), 5.0) == pytest.approx(1.0)
    assert hm.repeatability(k0, k1[:0], H, (100, 100), 3.0) == 0.0
    assert math.isnan(hm.repeatability(k0 + 500, k1, H, (100, 100), 3.0))


def test_zoom_range_brackets_the_centre():
    H = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1e-3, 0.0, 1.0]])  # perspective along x
    lo, hi = hm.zoom_range(H, 200, 100)
    assert lo < hm.local_zoom(H, 100, 50) < hi and hi == pytest.approx(1.0)
