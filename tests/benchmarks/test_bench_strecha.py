"""Strecha benchmark: loader and pose convention (synthetic cameras, a real pair), the PoseLib
estimator, an end-to-end run and the bad-input errors."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from benchmarks import relpose, runner, strecha
from benchmarks.metrics import pose
from models.errors import BadInputError

DATA = Path(os.environ.get("TRAQPOINT_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data"
STRECHA = DATA / "strecha"
needs_strecha = pytest.mark.skipif(not STRECHA.is_dir(), reason=f"shared test data not available: {STRECHA}")


def _rot(rx: float, ry: float, rz: float) -> np.ndarray:
    return cv2.Rodrigues(np.radians([rx, ry, rz]))[0]


def _camera_line(name: str, K: np.ndarray, T_world_cam: np.ndarray) -> str:
    values = [K[0, 0], K[1, 1], K[0, 2], K[1, 2], *T_world_cam[:3].ravel()]
    return name + " " + " ".join(f"{v:.12f}" for v in values)


def _project(K: np.ndarray, X_cam: np.ndarray) -> np.ndarray:
    p = X_cam @ K.T
    return p[:, :2] / p[:, 2:]


@pytest.fixture
def synthetic_scene(tmp_path):
    """Two cameras 20 deg apart looking at points 5-9 m away; ``cameras.txt`` written as the real files."""
    K0 = np.array([[1000.0, 0, 767.5], [0, 1005.0, 511.5], [0, 0, 1]])
    K1 = np.array([[980.0, 0, 760.0], [0, 990.0, 500.0], [0, 0, 1]])
    T0, T1 = np.eye(4), np.eye(4)
    T0[:3, :3], T0[:3, 3] = _rot(2, -5, 1), [0.3, -0.1, 0.2]
    T1[:3, :3], T1[:3, 3] = _rot(-1, 15, -2), [1.8, 0.05, -0.4]
    scene = tmp_path / "synthetic"
    (scene / "images").mkdir(parents=True)
    header = "# name fx fy cx cy | T_world_cam rows 1-3"
    (scene / "cameras.txt").write_text(
        "\n".join([header, _camera_line("a.jpg", K0, T0), _camera_line("b.jpg", K1, T1)])
    )
    rng = np.random.default_rng(0)
    X_world = (T0[:3, :3] @ rng.uniform([-2, -1.5, 5], [2, 1.5, 9], (300, 3)).T).T + T0[:3, 3]
    return scene, (K0, K1), (T0, T1), X_world


def test_loader_pose_convention_on_synthetic_cameras(synthetic_scene):
    scene, (K0, K1), (T0, T1), X_world = synthetic_scene
    cams = strecha.parse_cameras(scene / "cameras.txt")
    assert [c.image.name for c in cams] == ["a.jpg", "b.jpg"] and cams[0].image.parent == scene / "images"
    np.testing.assert_allclose(cams[0].K, K0)
    np.testing.assert_allclose(cams[1].T_world_cam, T1, atol=1e-12)
    (pair,) = strecha.scene_pairs(cams, max_gap=3)
    # T_0to1 takes camera-0 coordinates of a world point to its camera-1 coordinates
    X0 = (np.linalg.inv(T0) @ np.c_[X_world, np.ones(len(X_world))].T).T[:, :3]
    X1 = (np.linalg.inv(T1) @ np.c_[X_world, np.ones(len(X_world))].T).T[:, :3]
    np.testing.assert_allclose(X0 @ pair.T_0to1[:3, :3].T + pair.T_0to1[:3, 3], X1, atol=1e-9)
    # the whole estimation chain recovers it from noisy pixels, with either estimator
    rng = np.random.default_rng(1)
    pts0 = _project(K0, X0) + rng.normal(0, 0.1, (len(X0), 2))
    pts1 = _project(K1, X1) + rng.normal(0, 0.1, (len(X1), 2))
    for estimator in pose.ESTIMATORS:
        err, inliers = pose.pair_pose_error(pts0, pts1, K0, K1, pair.T_0to1, pose.RansacConfig.for_estimator(estimator))
        assert err < 1.0 and inliers > 250, estimator
        # the inverse pose (the usual convention slip) is far off
        wrong, _ = pose.pair_pose_error(pts0, pts1, K0, K1, np.linalg.inv(pair.T_0to1), pose.RansacConfig())
        assert wrong > 10


def test_pairs_within_gap():
    eye = np.eye(4)
    cams = [strecha.Camera(Path(f"{i}.jpg"), np.eye(3), eye) for i in range(11)]
    pairs = strecha.scene_pairs(cams, max_gap=3)
    assert len(pairs) == 10 + 9 + 8
    gaps = {int(p.image1.stem) - int(p.image0.stem) for p in pairs}
    assert gaps == {1, 2, 3}
    assert len(strecha.scene_pairs(cams, max_gap=20)) == 55


def _sampson(F: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    x0, x1 = np.c_[p0, np.ones(len(p0))], np.c_[p1, np.ones(len(p1))]
    Fx0, Ftx1 = x0 @ F.T, x1 @ F
    return np.abs(np.sum(x1 * Fx0, 1)) / np.sqrt(Fx0[:, 0] ** 2 + Fx0[:, 1] ** 2 + Ftx1[:, 0] ** 2 + Ftx1[:, 1] ** 2)


def _fundamental(K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray) -> np.ndarray:
    t = T_0to1[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(K1).T @ tx @ T_0to1[:3, :3] @ np.linalg.inv(K0)


@needs_strecha
def test_real_pair_ground_truth_agrees_with_sift_epipolar_geometry():
    # fountain-P11 0000/0001 at the stored 1536x1024: measured median Sampson error of SIFT ratio-test
    # matches under the ground-truth F 0.09 px, 93 % below 1 px (the inverted pose: 43 px, 0.5 %)
    cams = strecha.parse_cameras(STRECHA / "fountain-P11" / "cameras.txt")
    pair = strecha.scene_pairs(cams[:2], max_gap=1)[0]
    sift = cv2.SIFT_create(3000)
    k0, d0 = sift.detectAndCompute(cv2.imread(str(pair.image0), cv2.IMREAD_GRAYSCALE), None)
    k1, d1 = sift.detectAndCompute(cv2.imread(str(pair.image1), cv2.IMREAD_GRAYSCALE), None)
    good = [m for m, n in cv2.BFMatcher().knnMatch(d0, d1, k=2) if m.distance < 0.8 * n.distance]
    assert len(good) > 500
    # cv2 keypoints put pixel centres at integers, as cameras.txt
    p0 = np.array([k0[m.queryIdx].pt for m in good])
    p1 = np.array([k1[m.trainIdx].pt for m in good])
    err = _sampson(_fundamental(pair.K0, pair.K1, pair.T_0to1), p0, p1)
    assert np.median(err) < 0.3 and np.mean(err < 1.0) > 0.8
    wrong = _sampson(_fundamental(pair.K0, pair.K1, np.linalg.inv(pair.T_0to1)), p0, p1)
    assert np.median(wrong) > 5


@needs_strecha
def test_shared_strecha_has_96_pairs_at_gap_3():
    pairs, per_scene = strecha.load_pairs(STRECHA, max_gap=3)
    assert per_scene == {"Herz-Jesus-P25": 69, "fountain-P11": 27} and len(pairs) == 96
    assert all(p.available() for p in pairs)


def _fountain_subset(root: Path, count: int) -> Path:
    """``root/fountain-P11`` with the first ``count`` cameras of the real scene (images linked)."""
    src = STRECHA / "fountain-P11"
    lines = [line for line in (src / "cameras.txt").read_text().splitlines() if not line.startswith("#")][:count]
    (root / "fountain-P11" / "images").mkdir(parents=True)
    (root / "fountain-P11" / "cameras.txt").write_text("\n".join(lines) + "\n")
    for line in lines:
        name = line.split()[0]
        os.symlink(src / "images" / name, root / "fountain-P11" / "images" / name)
    return root


@needs_strecha
@pytest.mark.slow
def test_sift_end_to_end_on_fountain_both_estimators(tmp_path):
    # fountain-P11 images 0-3, gap 1 (3 pairs), long side 1024, 2048 SIFT; measured AUC@5
    # OPENCV_AUC5 (OpenCV) / POSELIB_AUC5 (PoseLib); a wrong K scaling or pose convention gives ~0
    root = _fountain_subset(tmp_path / "strecha", 4)
    results = {}
    for estimator in pose.ESTIMATORS:
        argv = ["--root", str(root), "--max-gap", "1", "--methods", "sift", "--estimator", estimator]
        args = runner.make_parser(strecha.SPEC).parse_args([*argv, "--cache", str(tmp_path / "cache")])
        result = strecha.run(args).result
        runner.validate_result(result, relpose.KEYS)
        results[estimator] = result
    for estimator, floor in (("opencv", 80), ("poselib", 85)):
        sift = results[estimator]["methods"]["sift"]
        assert sift["pairs"] == 3 and sift["auc5"] > floor and sift["inliers_mean"] > 400, (estimator, sift)
        assert results[estimator]["config"]["ransac"]["estimator"] == estimator
    assert results["opencv"]["config"]["ransac"]["threshold_px"] == 0.5
    assert results["poselib"]["config"]["ransac"]["threshold_px"] == 1.0
    assert results["opencv"]["config"]["resize"] == "long side 1024"


def test_bad_inputs(tmp_path, capsys, synthetic_scene):
    def fails(argv: list[str]) -> str:
        assert strecha.main(["--methods", "sift", "--no-cache", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    assert "Strecha root not found" in fails(["--root", str(tmp_path / "absent")])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no scene folder with cameras.txt" in fails(["--root", str(empty)])
    scene, *_ = synthetic_scene
    assert "none of the 1 Strecha pairs has its images" in fails(["--root", str(scene.parent)])
    assert "scene 'nope' not found" in fails(["--root", str(scene.parent), "--scenes", "nope"])
    assert "--max-gap must be at least 1" in fails(["--root", str(scene.parent), "--max-gap", "0"])
    (scene / "cameras.txt").write_text("a.jpg 1 2 3\n")
    assert "expected 'name fx fy cx cy' + 12 pose values" in fails(["--root", str(scene.parent)])
    with pytest.raises(BadInputError, match="RANSAC settings out of range"):
        pose.RansacConfig.for_estimator("poselib", threshold_px=-1.0)
    with pytest.raises(BadInputError, match="unknown essential-matrix estimator"):
        pose.RansacConfig(estimator="magsac")


@needs_strecha
def test_missing_images_make_a_sample_and_unlisted_images_are_named(tmp_path, caplog):
    """A scene whose image is missing is evaluated on the rest and marked a sample (its skipped
    pairs counted); an image that ``cameras.txt`` does not list is named in the result and the log."""
    root = _fountain_subset(tmp_path / "strecha", 3)
    images = root / "fountain-P11" / "images"
    (images / "0002.jpg").unlink()  # pairs 0-2 and 1-2 lose an image
    os.symlink(STRECHA / "fountain-P11" / "images" / "0005.jpg", images / "0005.jpg")  # no camera line
    args = runner.make_parser(strecha.SPEC).parse_args(["--root", str(root), "--methods", "orb", "--no-cache"])
    with caplog.at_level("WARNING"):
        result = strecha.run(args).result
    data = result["data"]
    assert data["pairs_listed"] == 3 and data["pairs_evaluated"] == 1 and data["pairs_skipped_missing_images"] == 2
    assert data["sample"] is True
    assert data["images_without_camera"] == ["fountain-P11/images/0005.jpg"]
    assert "fountain-P11/images/0005.jpg has no line" in caplog.text
    assert len(data["pose_error_deg"]["orb"]) == 1 and data["pair_images"] == [
        ["fountain-P11/images/0000.jpg", "fountain-P11/images/0001.jpg"]]
