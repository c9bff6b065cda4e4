"""Issue 12 (hardening) cases of ``traqpoint-vo``: bad values refused before the run, broken
calibration and ground truth, NaN weights, runs that tracked nothing, Ctrl-C, a webcam that stalls
and disconnects. Every failure is exit code 2 and one ``traqpoint-vo: error:`` line, no traceback.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import vo_app.sources
import vo_app.sources.webcam as webcam_module
from frontend.tracker import Tracker
from models.errors import BadInputError
from tests.conftest import DATA, KITTI06, kitti_copy
from vo_app.cli import main
from vo_app.sources import KittiSource, TumSource, open_source

KITTI = KITTI06
TUM = DATA / "tum_fr2_desk"
needs_kitti = pytest.mark.skipif(not KITTI.is_dir(), reason=f"real test data not found at {KITTI}")
FAST = ["--method", "sift", "--num-kp", "300"]


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    """Exit code 2 and a single ``traqpoint-vo: error:`` line that mentions ``fragments``, no traceback."""
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("traqpoint-vo: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if the command gets as far as opening its input."""

    def opened(*args, **kwargs):
        raise AssertionError("the input was opened: the bad value was not refused up front")

    monkeypatch.setattr(vo_app.sources, "open_source", opened)


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--num-kp", "-5"], "--num-kp"),
        (["--num-kp", "0"], "--num-kp"),
        (["--max-frames", "0"], "--max-frames"),
        (["--max-frames", "-1"], "--max-frames"),
        (["--kf-parallax", "-3"], "--kf-parallax"),
        (["--device", "banana"], "not a torch device"),
        (["--webcam", "-1"], "--webcam"),
    ],
)
def test_bad_values_are_refused_before_the_run(flags, fragment, tmp_path, capsys, no_run):
    argv = ["--headless", *FAST, "--out", tmp_path / "out", *flags]
    if "--webcam" not in flags:
        argv = ["--sequence", "demo", *argv]
    code, _, err = run_cli(argv, capsys)
    assert_one_error_line(code, err, fragment)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has CUDA")
def test_cuda_on_a_cpu_only_torch(tmp_path, capsys, no_run):
    code, _, err = run_cli(["--sequence", "demo", "--headless", "--device", "cuda", "--out", tmp_path], capsys)
    assert_one_error_line(code, err, "cuda is not available")


def test_unwritable_outputs_are_refused_before_the_run(tmp_path, capsys, no_run):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for flags, fragment in [
        (["--out", a_file], "existing file"),
        (["--out", a_file / "sub"], "cannot be written"),
        (["--out", tmp_path / "o", "--video", a_file / "v.mp4"], "--video"),
        (["--out", tmp_path / "o", "--video", tmp_path / "v.txt"], ".mp4"),
    ]:
        code, _, err = run_cli(["--sequence", "demo", "--headless", *FAST, *flags], capsys)
        assert_one_error_line(code, err, fragment)
    assert a_file.read_text() == "x"


def write_p0(seq: Path, fx: str) -> None:
    lines = (seq / "calib.txt").read_text().splitlines()
    lines = [" ".join(["P0:", fx, *line.split()[2:]]) if line.startswith("P0:") else line for line in lines]
    (seq / "calib.txt").write_text("\n".join(lines) + "\n")


@needs_kitti
@pytest.mark.parametrize("fx", ["nan", "-718.856"])
def test_kitti_calibration_with_nan_or_negative_focal(fx, tmp_path, capsys):
    seq = kitti_copy(tmp_path, 3)
    write_p0(seq, fx)
    with pytest.raises(BadInputError, match="focal lengths must be positive and finite"):
        KittiSource(seq)
    code, _, err = run_cli(["--sequence", seq, "--headless", *FAST, "--out", tmp_path / "out"], capsys)
    assert_one_error_line(code, err, "calib.txt", "focal")


def nan_row(path: Path, row: int) -> None:
    lines = path.read_text().splitlines()
    lines[row] = " ".join(["nan"] * 12)
    path.write_text("\n".join(lines) + "\n")


@needs_kitti
def test_kitti_nan_ground_truth_row_is_none_and_counted(tmp_path, caplog):
    seq = kitti_copy(tmp_path, 6)
    nan_row(tmp_path / "poses" / "06.txt", 3)
    with caplog.at_level(logging.WARNING):
        source = KittiSource(seq)
    assert any("NaN or inf" in r.getMessage() for r in caplog.records)
    assert source.frames_without_gt == 1
    poses = [f.pose for f in source]
    assert poses[3] is None and all(p is not None for i, p in enumerate(poses) if i != 3)


def test_tum_frames_without_associated_ground_truth(tmp_path, caplog):
    if not TUM.is_dir():
        pytest.skip(f"real test data not found at {TUM}")
    seq = tmp_path / TUM.name
    shutil.copytree(TUM, seq)
    stamps = [float(line.split()[0]) for line in (seq / "rgb.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    cut = stamps[-4] - 0.1  # the ground truth ends before the last 4 images
    gt = [line for line in (seq / "groundtruth.txt").read_text().splitlines()
          if line.startswith("#") or float(line.split()[0]) < cut]
    (seq / "groundtruth.txt").write_text("\n".join(gt) + "\n")
    with caplog.at_level(logging.WARNING):
        source = TumSource(seq)
    assert any("have no ground truth" in r.getMessage() for r in caplog.records)
    assert source.frames_without_gt == 4
    assert [source.pose_at(i) is None for i in range(len(source))] == [False] * (len(source) - 4) + [True] * 4


def test_ground_truth_that_fits_no_frame(tmp_path, capsys, no_run_after_open):
    """A groundtruth.txt whose times match no image: --scale gt is refused, the default falls back to mono."""
    if not TUM.is_dir():
        pytest.skip(f"real test data not found at {TUM}")
    seq = tmp_path / TUM.name
    shutil.copytree(TUM, seq)
    (seq / "groundtruth.txt").write_text("1.0 0 0 0 0 0 0 1\n2.0 0 0 0 0 0 0 1\n")
    code, _, err = run_cli(["--sequence", seq, "--headless", *FAST, "--scale", "gt", "--out", tmp_path / "o"], capsys)
    assert_one_error_line(code, err, "none of the 20 frames", "--scale mono")
    code, _, err = run_cli(["--sequence", seq, "--headless", *FAST, "--out", tmp_path / "o"], capsys)
    assert code == 1 and "pipeline built" in err  # the stand-in pipeline below stops the run here
    assert no_run_after_open["scale"] == "mono"


@pytest.fixture
def no_run_after_open(monkeypatch):
    """Record the scale the pipeline is built with, then stop before anything runs."""
    import vo_app.pipeline

    seen = {}

    def built(source, extractor, scale, **kwargs):
        seen["scale"] = scale
        raise AssertionError("pipeline built")

    monkeypatch.setattr(vo_app.pipeline, "VOPipeline", built)
    return seen


@needs_kitti
def test_gt_scale_run_over_a_frame_without_ground_truth(tmp_path, capsys):
    """--scale gt over a NaN ground-truth row: the run finishes and results.json counts the frame."""
    seq = kitti_copy(tmp_path, 8)
    nan_row(tmp_path / "poses" / "06.txt", 4)
    out = tmp_path / "out"
    code, _, err = run_cli(["--sequence", seq, "--headless", *FAST, "--scale", "gt", "--out", out], capsys)
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    assert result["metrics"]["frames_without_gt"] == 1 and result["metrics"]["frames"] == 8
    assert np.isfinite(np.loadtxt(out / "trajectory_kitti.txt")).all()


def test_nan_weights_are_refused(tmp_path, capsys):
    from models.weights_io import PACKAGE_WEIGHTS

    state = torch.load(PACKAGE_WEIGHTS / "traqpoint_lite.pt", map_location="cpu", weights_only=False)
    state = state.get("model", state)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               tmp_path / "nan.pt")
    code, _, err = run_cli(["--sequence", "demo", "--headless", "--weights", tmp_path / "nan.pt",
                            "--out", tmp_path / "out"], capsys)
    assert_one_error_line(code, err, "nan.pt", "NaN")


def blank_folder(folder: Path, n: int = 4) -> Path:
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((96, 128), 90, np.uint8))
    return folder


def test_a_run_without_any_keypoint_fails_after_writing(tmp_path, capsys):
    folder = blank_folder(tmp_path / "blank")
    (tmp_path / "k.txt").write_text("100 100 63.5 47.5")
    out = tmp_path / "out"
    code, _, err = run_cli(["--sequence", folder, "--calib", tmp_path / "k.txt", "--headless", *FAST, "--out", out],
                           capsys)
    assert_one_error_line(code, err, "no keypoint", "--weights")
    assert json.loads((out / "results.json").read_text())["metrics"]["frames_without_keypoints"] == 4


def test_ctrl_c_writes_partial_outputs_and_exits_130(tmp_path, capsys, monkeypatch):
    track = Tracker.track
    calls = {"n": 0}

    def interrupted_track(self, frame):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return track(self, frame)

    monkeypatch.setattr(Tracker, "track", interrupted_track)
    out = tmp_path / "out"
    code, _, err = run_cli(["--sequence", "demo", "--headless", *FAST, "--max-frames", 40, "--out", out], capsys)
    assert code == 130 and "interrupted after 5 frames" in err and "Traceback" not in err
    result = json.loads((out / "results.json").read_text())
    assert result["partial"] is True and result["ended"] == "interrupted (Ctrl-C)"
    assert result["metrics"]["frames"] == 5 and len(np.loadtxt(out / "trajectory_kitti.txt")) == 5


def test_an_error_mid_run_keeps_the_frames_done(tmp_path, capsys, monkeypatch):
    track, calls = Tracker.track, {"n": 0}

    def failing_track(self, frame):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("boom")
        return track(self, frame)

    monkeypatch.setattr(Tracker, "track", failing_track)
    out = tmp_path / "out"
    code, _, err = run_cli(["--sequence", "demo", "--headless", *FAST, "--max-frames", 40, "--out", out], capsys)
    lines = [line for line in err.splitlines() if line.startswith("traqpoint-vo: error:")]
    assert code == 1 and len(lines) == 1 and "RuntimeError: boom" in lines[0] and "Traceback" not in err
    result = json.loads((out / "results.json").read_text())
    assert result["partial"] is True and result["ended"] == "error: boom" and result["metrics"]["frames"] == 5


class StallingCapture:
    """A camera that delivers textured frames moving right, stalls, delivers again, then is unplugged."""

    script = [("frames", 6), ("stall", 0.3), ("frames", 6), ("gone", None)]

    def __init__(self, index):
        rng = np.random.default_rng(0)
        self.base = cv2.GaussianBlur(rng.integers(0, 256, (120, 220), dtype=np.uint8), (5, 5), 1.5)
        self.step, self.left, self.stall_until, self.shift = 0, 6, None, 0
        self.released = False

    def isOpened(self):  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop):
        return {cv2.CAP_PROP_FRAME_WIDTH: 160.0, cv2.CAP_PROP_FRAME_HEIGHT: 120.0}.get(prop, 0.0)

    def set(self, prop, value):
        return True

    def read(self):
        import time

        kind, arg = self.script[self.step]
        if kind == "frames":
            self.shift += 2
            self.left -= 1
            if self.left == 0:
                self.step += 1
                self.left = self.script[self.step][1] if self.script[self.step][0] == "frames" else 0
            return True, cv2.cvtColor(self.base[:, self.shift: self.shift + 160].copy(), cv2.COLOR_GRAY2BGR)
        if kind == "stall":
            self.stall_until = self.stall_until or time.monotonic() + arg
            if time.monotonic() >= self.stall_until:
                self.step += 1
                self.left = self.script[self.step][1]
            return False, None
        return False, None  # unplugged for good

    def release(self):
        self.released = True


def test_webcam_that_stalls_then_disconnects(tmp_path, capsys, monkeypatch, caplog):
    """Deliverable 5: the app reports the stall and the disconnection, writes its outputs, exits 0."""
    monkeypatch.setattr(webcam_module.cv2, "VideoCapture", StallingCapture)
    (tmp_path / "cam.txt").write_text("150 150 79.5 59.5")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        code, stdout, err = run_cli(["--webcam", 0, "--calib", tmp_path / "cam.txt", "--headless", *FAST,
                                     "--out", out], capsys)
    assert code == 0, err
    messages = [r.getMessage() for r in caplog.records]
    assert any("frames resumed" in m for m in messages) and any("camera disconnected" in m for m in messages)
    result = json.loads((out / "results.json").read_text())
    assert result["source"] == "webcam:0" and result["stalls"] == 1 and "camera disconnected" in result["ended"]
    assert result["metrics"]["frames"] == 12 and len(np.loadtxt(out / "trajectory_kitti.txt")) == 12
    assert (out / "stats.csv").is_file() and "outputs written" in stdout


def test_open_source_webcam_counts_wrong_size_frames(monkeypatch):
    class Resizing(StallingCapture):
        def read(self):
            ok, frame = super().read()
            return (ok, cv2.resize(frame, (80, 60))) if ok and self.shift == 4 else (ok, frame)

    monkeypatch.setattr(webcam_module.cv2, "VideoCapture", Resizing)
    source = open_source("webcam:0", allow_guess=True, stall_s=0.5)
    frames = list(source)
    assert len(frames) == 11 and source.skipped == 1 and source.stalls == 1 and source.stop_reason
