"""App-level tests of ``traqpoint-vo`` through ``vo_app.cli.main``: outputs, real data, bad input, damaged data.

Every run uses SIFT (no trained weights needed) and few frames to stay fast on a small CPU.
Bad input must give exit code 2 and exactly one ``traqpoint-vo: error:`` line on stderr.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import KITTI06, kitti_copy
from vo_app.cli import main

KITTI = KITTI06
needs_kitti = pytest.mark.skipif(not KITTI.is_dir(), reason=f"real test data not found at {KITTI} "
                                                             "(set TRAQPOINT_SHARED to the shared folder)")
FAST = ["--method", "sift", "--num-kp", "400"]


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["metrics"]


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    """Exit code 2 and a single ``traqpoint-vo: error:`` line that mentions ``fragments``, no traceback."""
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("traqpoint-vo: error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]


def kitti_p0(seq: Path) -> np.ndarray:
    """3x4 projection matrix P0 from a KITTI calib.txt (read here, independently of the app)."""
    for line in (seq / "calib.txt").read_text().splitlines():
        if line.startswith("P0:"):
            return np.array(line.split()[1:], float).reshape(3, 4)
    raise AssertionError("no P0 line")


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()


# ---------------------------------------------------------------- outputs on the demo


def test_demo_headless_writes_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = run_cli(["--sequence", "demo", "--headless", *FAST, "--max-frames", 30, "--out", out], capsys)
    assert code == 0, err
    assert "ate_rmse_m" in stdout

    kitti = np.loadtxt(out / "trajectory_kitti.txt")
    assert kitti.shape == (30, 12) and np.isfinite(kitti).all()
    first = kitti[0].reshape(3, 4)
    np.testing.assert_allclose(first, np.eye(4)[:3], atol=1e-6)  # demo ground truth starts at the identity
    rotations = kitti.reshape(-1, 3, 4)[:, :, :3]
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0, atol=1e-6)

    tum = np.loadtxt(out / "trajectory_tum.txt")
    assert tum.shape == (30, 8)
    assert np.all(np.diff(tum[:, 0]) > 0)
    np.testing.assert_allclose(np.linalg.norm(tum[:, 4:], axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(tum[:, 1:4], kitti[:, [3, 7, 11]], atol=1e-6)

    with (out / "stats.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 30
    assert {"active", "inliers", "status", "keyframe", "fps"} <= set(rows[0])
    assert sum(int(r["active"]) > 50 for r in rows) >= 25

    data = json.loads((out / "results.json").read_text())
    assert data["method"] == "sift" and data["source"] == "demo"
    m = data["metrics"]
    assert m["frames"] == 30 and m["skipped_frames"] == 0 and m["scale"] == "gt"
    assert m["keyframes"] >= 3
    assert m["tracking_failures"] == 0
    assert 0.0 <= m["ate_rmse_m"] < 0.5  # metres over ~3 m of path; a broken pose chain is metres off


# ---------------------------------------------------------------- real data


@needs_kitti
def test_kitti_mini_gt_scale_accuracy(tmp_path, capsys):
    seq = KITTI
    out = tmp_path / "out"
    code, _, err = run_cli(["--sequence", seq, "--headless", *FAST, "--max-frames", 15, "--scale", "gt",
                            "--out", out], capsys)
    assert code == 0, err
    m = results(out)
    assert m["frames"] == 15 and m["tracking_failures"] == 0
    assert m["ate_pct_path"] < 1.0, m  # about 0.05 % with SIFT; a regression in pose or scale is far above 1 %
    assert m["rpe_rot_deg"] < 0.5, m


@needs_kitti
def test_video_with_calib_mono(tmp_path, capsys):
    """A half-resolution mp4 made from KITTI frames + a 'fx fy cx cy' calibration line, up to scale."""
    seq = KITTI
    num = 15
    frames = [cv2.imread(str(seq / "image_0" / f"{i:06d}.png"), cv2.IMREAD_GRAYSCALE) for i in range(num)]
    full_h, full_w = frames[0].shape
    frames = [cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2), interpolation=cv2.INTER_AREA) for f in frames]
    video = tmp_path / "drive.mp4"
    write_video(video, frames)
    P0 = kitti_p0(seq)
    sx = frames[0].shape[1] / full_w  # resize keeps pixel centres: c' = (c + 0.5) s - 0.5
    sy = frames[0].shape[0] / full_h
    calib = tmp_path / "camera.txt"
    calib.write_text(f"{P0[0, 0] * sx} {P0[1, 1] * sy} {(P0[0, 2] + 0.5) * sx - 0.5} {(P0[1, 2] + 0.5) * sy - 0.5}\n")
    out = tmp_path / "out"
    code, _, err = run_cli(["--sequence", video, "--calib", calib, "--headless", *FAST, "--scale", "mono",
                            "--out", out], capsys)
    assert code == 0, err
    m = results(out)
    assert m["frames"] == num and m["scale"] == "mono" and "ate_rmse_m" not in m
    est = np.loadtxt(out / "trajectory_kitti.txt")[:, [3, 7, 11]]
    gt = np.loadtxt(seq.parent.parent / "poses" / "06.txt")[:num][:, [3, 7, 11]]
    d_est, d_gt = est[-1] - est[0], gt[-1] - gt[0]
    assert np.linalg.norm(d_est) > 0
    cos = d_est @ d_gt / (np.linalg.norm(d_est) * np.linalg.norm(d_gt))
    assert cos > 0.95, (d_est, d_gt)  # up to scale, but the direction of travel must be right


# ---------------------------------------------------------------- bad input: one line, exit 2


@pytest.fixture
def tiny_video(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.mp4"
    write_video(path, [rng.integers(0, 255, (48, 64), dtype=np.uint8) for _ in range(3)])
    return path


def test_missing_sequence_folder(tmp_path, capsys):
    missing = tmp_path / "kitti" / "sequences" / "99"
    code, _, err = run_cli(["--sequence", missing, "--headless", *FAST], capsys)
    assert_one_error_line(code, err, "not found", str(missing))


def test_video_without_calib(tiny_video, capsys):
    code, _, err = run_cli(["--sequence", tiny_video, "--headless", *FAST], capsys)
    assert_one_error_line(code, err, "--calib")


def test_calib_with_wrong_shape(tiny_video, tmp_path, capsys):
    calib = tmp_path / "bad.txt"
    calib.write_text("700 700 320\n")
    code, _, err = run_cli(["--sequence", tiny_video, "--calib", calib, "--headless", *FAST], capsys)
    assert_one_error_line(code, err, "wrong shape")


def test_unknown_sequence_name(capsys):
    code, _, err = run_cli(["--sequence", "kittii", "--headless", *FAST], capsys)
    assert_one_error_line(code, err, "unknown sequence", "kittii")


def test_webcam_that_does_not_exist(capsys):
    code, _, err = run_cli(["--webcam", 57, "--headless", *FAST], capsys)
    assert_one_error_line(code, err, "webcam 57")


def test_stereo_scale_without_stereo(capsys):
    code, _, err = run_cli(["--sequence", "demo", "--scale", "stereo", "--headless", *FAST], capsys)
    assert_one_error_line(code, err, "stereo")


def test_gt_scale_without_ground_truth(tiny_video, tmp_path, capsys):
    calib = tmp_path / "camera.txt"
    calib.write_text("60 60 31.5 23.5\n")
    code, _, err = run_cli(["--sequence", tiny_video, "--calib", calib, "--scale", "gt", "--headless", *FAST], capsys)
    assert_one_error_line(code, err, "ground-truth")


def test_viewer_without_display(monkeypatch, capsys):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("sys.platform", "linux")
    code, _, err = run_cli(["--sequence", "demo", *FAST, "--max-frames", 2], capsys)
    assert_one_error_line(code, err, "--headless", "QT_QPA_PLATFORM=offscreen", "xvfb-run")


# ---------------------------------------------------------------- damaged data: finish, never crash


@needs_kitti
def test_corrupt_image_is_skipped(tmp_path, capsys):
    seq = kitti_copy(tmp_path / "kitti", 10)
    (seq / "image_0" / "000005.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not image data" * 10)
    out = tmp_path / "out"
    code, _, err = run_cli(["--sequence", seq, "--headless", *FAST, "--out", out], capsys)
    assert code == 0, err
    m = results(out)
    assert m["skipped_frames"] == 1 and m["frames"] == 9
    indices = [int(r["index"]) for r in csv.DictReader((out / "stats.csv").open())]
    assert 5 not in indices and len(indices) == 9


@needs_kitti
def test_black_frames_reinitialise(tmp_path, capsys, caplog):
    seq = kitti_copy(tmp_path / "kitti", 10)
    h, w = cv2.imread(str(seq / "image_0" / "000000.png"), cv2.IMREAD_GRAYSCALE).shape
    for i in (4, 5, 6):
        cv2.imwrite(str(seq / "image_0" / f"{i:06d}.png"), np.zeros((h, w), np.uint8))
    out = tmp_path / "out"
    with caplog.at_level("WARNING", logger="vo_app.odometry"):
        code, _, err = run_cli(["--sequence", seq, "--headless", *FAST, "--out", out], capsys)
    assert code == 0, err
    m = results(out)
    assert m["frames"] == 10 and m["skipped_frames"] == 0
    assert m["tracking_failures"] >= 1
    assert any("tracking lost" in r.getMessage() and "re-initialising" in r.getMessage() for r in caplog.records)
    assert np.isfinite(np.loadtxt(out / "trajectory_kitti.txt")).all()
