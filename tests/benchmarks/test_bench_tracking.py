"""Tracking benchmark: the demo's exact depth, the track metrics on hand-built cases, a short run."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks import demo_truth, runner, tracking
from benchmarks.metrics import tracking as tm
from vo_app.sources.demo import CAMERA_HEIGHT, DemoSource


def test_depth_of_the_ground_ahead_is_exact():
    src = DemoSource(num_frames=1)
    K = np.asarray(src.K)
    px = np.stack([np.linspace(250, 390, 8), np.full(8, 470.0)], 1)  # bottom centre: the road ahead
    ray_y = (px[:, 1] - K[1, 2]) / K[1, 1]
    np.testing.assert_allclose(demo_truth.depth_at(src, 0, px), CAMERA_HEIGHT / ray_y, rtol=1e-9)
    assert np.isinf(demo_truth.depth_at(src, 0, np.array([[319.5, -1e4]]))).all()  # straight up: sky


def test_reprojection_agrees_with_the_rendered_images():
    # Shi-Tomasi corners of frame 0 followed into frame 3 by pyramidal Lucas-Kanade on the rendered
    # images land where the ray-cast depth and the poses say (measured median 0.03 px at 320x240)
    src = DemoSource(num_frames=4, width=320, height=240)
    im0, im3 = src.render(0), src.render(3)
    pts = cv2.goodFeaturesToTrack(im0, 300, 0.01, 6).reshape(-1, 2).astype(np.float64)
    flow, status, _ = cv2.calcOpticalFlowPyrLK(im0, im3, pts.astype(np.float32), None, winSize=(15, 15))
    depth = demo_truth.depth_at(src, 0, pts)
    ok = np.isfinite(depth) & (status[:, 0] == 1)
    gt, z = demo_truth.project(src, np.full(ok.sum(), 3), demo_truth.backproject(src, 0, pts[ok], depth[ok]))
    err = np.linalg.norm(flow[ok] - gt, axis=1)
    assert ok.sum() > 100 and (z > 0).all()
    assert np.median(err) < 0.2 and np.mean(err < 1.0) > 0.8


def test_anchors_and_ages():
    obs = tm.Observations(
        track=np.array([5, 2, 5, 2, 5]), frame=np.array([3, 1, 4, 2, 6]), xy=np.zeros((5, 2))
    )  # fmt: skip
    anchor, age = obs.anchors()
    assert anchor.tolist() == [0, 1, 0, 1, 0] and age.tolist() == [0, 0, 1, 1, 3]
    parts = [(np.array([0, -1, 1]), 0, np.array([[1.0, 1], [2, 2], [3, 3]])), (np.array([1]), 1, np.array([[4.0, 4]]))]
    cat = tm.Observations.concat(parts)
    assert cat.track.tolist() == [0, 1, 1] and cat.frame.tolist() == [0, 0, 1] and cat.xy[2].tolist() == [4, 4]


def _static_world(occluded_frame: int | None = None):
    """A camera that never moves over a plane at depth 2 (a point reprojects onto its anchor pixel)."""

    def depth_fn(frame, px):
        return np.full(len(px), 1.0 if frame == occluded_frame else 2.0)

    def project_fn(frames, points):
        return points[:, :2] / points[:, 2:], points[:, 2]

    def backproject_fn(frame, px, depth):
        return np.c_[px * depth[:, None], depth]

    return depth_fn, project_fn, backproject_fn


def test_reprojection_errors_on_a_hand_built_case():
    obs = tm.Observations(
        track=np.array([0, 0, 0, 0, 1, 1]),
        frame=np.array([0, 1, 2, 3, 2, 3]),
        xy=np.array([[10.0, 10], [10.5, 10], [12, 10], [10, 13], [50, 50], [50, 51]]),
    )
    errors = tm.reprojection_errors(obs, *_static_world(), image_size=(100, 100))
    np.testing.assert_allclose(errors.error, [np.nan, 0.5, 2.0, 3.0, np.nan, 1.0])
    assert errors.age.tolist() == [0, 1, 2, 3, 0, 1]
    summary = tm.error_summary(errors)
    assert summary["loc_err_px_p50"] == pytest.approx(1.5) and summary["scored"] == 4
    assert summary["by_age"]["1"]["n"] == 2 and summary["by_age"]["2-3"]["p50"] == pytest.approx(2.5)
    assert summary["drift_px"] is None  # no track reaches age 10
    # frame 3 sees a nearer surface where the points should be: occluded, not scored
    occ = tm.reprojection_errors(obs, *_static_world(occluded_frame=3), image_size=(100, 100))
    np.testing.assert_allclose(occ.error, [np.nan, 0.5, 2.0, np.nan, np.nan, np.nan])
    assert tm.error_summary(occ)["not_visible"] == 2
    # outside the image: not scored either
    out = tm.reprojection_errors(obs, *_static_world(), image_size=(40, 40))
    assert np.isnan(out.error[5]) and out.error[1] == pytest.approx(0.5)


def test_coverage():
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [639.0, 479.0], [320.0, 240.0]])
    assert tm.coverage(xy, (640, 480)) == pytest.approx(3 / 256)
    assert tm.coverage(np.zeros((0, 2)), (640, 480)) == 0.0


@pytest.mark.slow
def test_short_run_sift_and_orb(tmp_path):
    # 8 demo frames at 320x240, 512 keypoints; measured loc error p50 / p90: SIFT 0.13 / 0.44 px, ORB 0.62 / 1.75;
    # coverage 0.29 / 0.13, AKTL 2.33 / 3.47, inliers 311 / 369
    argv = ["--frames", "8", "--width", "320", "--height", "240", "--methods", "sift,orb", "--num-kp", "512"]
    args = runner.make_parser(tracking.SPEC).parse_args([*argv, "--json", str(tmp_path / "t.json")])
    out = tracking.run(args)
    runner.validate_result(out.result, tracking.KEYS)
    sift, orb = out.result["methods"]["sift"], out.result["methods"]["orb"]
    assert sift["loc_err_px_p50"] < 0.3 and sift["loc_err_px_p90"] < 2.0
    assert orb["loc_err_px_p50"] < 1.5
    for m in (sift, orb):
        assert m["aktl"] > 1.5 and 0.05 < m["coverage"] <= 1 and m["inliers_mean"] > 50
    assert out.result["data"]["per_method"]["sift"]["observations_scored"] > 500


def test_describe_with_keeps_keypoints_and_swaps_descriptors(capsys):
    """``--describe-with``: each method's keypoints with the named network's descriptors; ORB's keypoints
    described by traqpoint-lite track with lite's matcher. A bad describer is one error line."""
    argv = ["--frames", "6", "--width", "320", "--height", "240", "--num-kp", "256", "--precision", "fp32"]
    swap = ["--methods", "orb", "--describe-with", "traqpoint-lite"]
    args = runner.make_parser(tracking.SPEC).parse_args([*argv, *swap])
    out = tracking.run(args)
    (name,) = out.result["methods"]
    assert name == "orb+traqpoint-lite-desc"
    assert out.result["config"]["methods"][name]["matcher"] == "dual_softmax"
    assert out.result["methods"][name]["aktl"] > 1.2 and out.result["methods"][name]["inliers_mean"] > 30
    for bad, message in (("sift", "single-scale TraqPoint"), ("orb,sift", "takes one method"),
                         ("nope", "unknown method")):
        assert tracking.main([*argv, "--methods", "orb", "--describe-with", bad, "--no-cache"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err
