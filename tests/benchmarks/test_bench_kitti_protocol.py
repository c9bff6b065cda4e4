"""The authors' KITTI protocol: their greedy AKTL tracker, the frame-to-frame pose, a real run."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import kitti, kitti_protocol, runner
from benchmarks.kitti_protocol import AuthorsTracks, frame_to_frame, greedy_assign

DATA = Path(os.environ.get("TRAQPOINT_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data"
KITTI = DATA / "kitti_mini"
needs_kitti = pytest.mark.skipif(not KITTI.is_dir(), reason=f"shared test data not available: {KITTI}")


def sequential_assign(points, descs, tracks, track_descs, radius, min_cos):
    """The authors' loop, one keypoint at a time (reference for the vectorised version)."""
    taken = np.zeros(len(tracks), dtype=bool)
    out = np.full(len(points), -1)
    for i, (p, d) in enumerate(zip(points, descs)):
        free = np.flatnonzero(~taken)
        if len(free) == 0:
            continue
        dist = np.linalg.norm(tracks[free] - p, axis=1)
        j = free[np.argmin(dist)]
        if dist.min() < radius:
            cos = track_descs[j] @ d / (np.linalg.norm(track_descs[j]) * np.linalg.norm(d))
            if cos > min_cos:
                taken[j] = True
                out[i] = j
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_greedy_equals_the_sequential_loop(seed):
    rng = np.random.default_rng(seed)
    n, m = rng.integers(50, 400), rng.integers(50, 400)
    tracks = rng.uniform(0, [300, 100], (m, 2))  # dense: many keypoints compete for the same tracks
    points = np.concatenate([tracks[rng.integers(0, m, n // 2)] + rng.normal(0, 8, (n // 2, 2)),
                             rng.uniform(0, [300, 100], (n - n // 2, 2))])  # fmt: skip
    track_descs = rng.normal(size=(m, 8))
    descs = rng.normal(size=(n, 8))  # independent of the tracks: a fraction passes the cosine by chance
    descs[: n // 2] = track_descs[rng.integers(0, m, n // 2)] + 0.5 * rng.normal(size=(n // 2, 8))
    got = greedy_assign(points, descs, tracks, track_descs, 30.0, 0.5)
    want = sequential_assign(points, descs, tracks, track_descs, 30.0, 0.5)
    np.testing.assert_array_equal(got, want)
    assert (want >= 0).sum() > 10  # the case is not trivial


def test_greedy_nearest_only_and_strict_thresholds():
    tracks = np.array([[0.0, 0.0], [10.0, 0.0]])
    track_descs = np.array([[1.0, 0.0], [0.0, 1.0]])
    # nearest track 0 fails the cosine: the point starts a track even though track 1 would pass
    assert greedy_assign(np.array([[2.0, 0.0]]), np.array([[0.0, 1.0]]), tracks, track_descs, 30, 0.5).tolist() == [-1]
    # distance exactly 30 does not continue (< 30); the cosine must exceed 0.5
    assert greedy_assign(np.array([[30.0, 0.0]]), np.array([[1.0, 0.0]]), tracks[:1], track_descs[:1], 30, 0.5)[0] == -1
    for cos, want in ((0.49, -1), (0.51, 0)):
        desc = np.array([[cos, np.sqrt(1 - cos**2)]])
        assert greedy_assign(np.array([[1.0, 0.0]]), desc, tracks[:1], track_descs[:1], 30, 0.5)[0] == want
    # the first keypoint takes the shared nearest track, the second takes the next one
    pts = np.array([[4.0, 0.0], [5.0, 0.0]])
    descs = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert greedy_assign(pts, descs, tracks, track_descs + [[0, 0.9], [0.9, 0]], 30, 0.5).tolist() == [0, 1]


def test_tracks_survive_one_miss_and_aktl_counts_alive_tracks():
    t = AuthorsTracks(radius=30.0, min_cosine=0.5, max_missing=1)
    a, b = np.array([[[0.0, 0.0]]]), np.array([[[200.0, 0.0]]])
    d = np.array([[1.0, 0.0]])
    t.update(np.r_[a[0], b[0]], np.r_[d, d])  # two tracks, length 1
    t.update(a[0] + 1, d)  # a continues (2); b missed once, still alive
    assert sorted(t.length.tolist()) == [1, 2]
    t.update(np.r_[a[0] + 2, b[0] + 1], np.r_[d, d])  # b comes back after one miss
    assert sorted(t.length.tolist()) == [2, 3]
    t.update(a[0] + 3, d)
    t.update(a[0] + 4, d)  # b missed twice: ended
    assert t.length.tolist() == [5] and t.aktl == 5.0 and t.ended_count == 1
    assert t.aktl_all == pytest.approx((5 + 2) / 2)


def test_frame_to_frame_recovers_the_camera_motion():
    K = np.array([[707.0912, 0, 601.8873], [0, 707.0912, 183.1104], [0, 0, 1]])
    rng = np.random.default_rng(0)
    X_ref = rng.uniform([-15, -3, 5], [15, 2, 60], (400, 3))
    R_ref_cur = cv2.Rodrigues(np.radians([0.3, 2.0, -0.2]))[0]
    c = np.array([0.05, -0.02, 1.0])  # the current camera's centre in the reference frame (1 m forward)
    X_cur = (X_ref - c) @ R_ref_cur  # X_ref = R X_cur + c
    proj = lambda X: X[:, :2] / X[:, 2:] * K[0, 0] + K[:2, 2]  # noqa: E731
    est = frame_to_frame(proj(X_ref), proj(X_cur), K, kitti_protocol.DEFAULT_CONF)
    assert est is not None
    R, t, inliers = est
    assert inliers > 380
    assert np.degrees(np.arccos(np.clip((np.trace(R.T @ R_ref_cur) - 1) / 2, -1, 1))) < 0.05
    assert np.degrees(np.arccos(t @ c / np.linalg.norm(c))) < 1.0
    assert frame_to_frame(np.zeros((4, 2)), np.zeros((4, 2)), K, kitti_protocol.DEFAULT_CONF) is None


@needs_kitti
@pytest.mark.slow
def test_protocol_run_on_kitti_06(tmp_path):
    # SIFT, first 12 frames of kitti_mini 06 (13.1 m): measured mean x-z error 0.11 m, AKTL 2.12, 0 failures
    argv = ["--root", str(KITTI), "--id", "06", "--max-frames", "12", "--methods", "sift", "--protocol", "traqpoint"]
    args = runner.make_parser(kitti.SPEC).parse_args([*argv, "--json", str(tmp_path / "r.json")])
    out = kitti.run(args)
    runner.validate_result(out.result, kitti.KEYS)
    sift = out.result["methods"]["sift"]
    assert sift["frames"] == 12 and sift["tracking_failures"] == 0 and sift["fps"] is None
    assert sift["ate_xz_mean_m"] < 0.3 and sift["aktl"] > 1.5
    assert out.result["config"]["odometry"]["ransac_threshold_px"] == 1.0
    assert out.result["config"]["odometry"]["ransac_confidence"] == 0.999
    # the trajectory starts at the first ground-truth pose and has ground-truth scale
    run = out.plot_data["runs"]["sift"]
    np.testing.assert_allclose(run.poses[0], run.gt[0])
    steps = np.linalg.norm(np.diff(run.poses[:, :3, 3], axis=0), axis=1)
    np.testing.assert_allclose(steps, np.linalg.norm(np.diff(run.gt[:, :3, 3], axis=0), axis=1), rtol=1e-6)
