"""Issue 12 cases of ``python -m frontend.demo``: bad input is exit code 2 and one ``error:`` line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from frontend import demo
from frontend.demo import main
from frontend.tracker import Tracker


def textured(folder: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (120, 220), dtype=np.uint8), (3, 3), 1)
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:06d}.png"), base[:, 2 * i: 2 * i + 200])
    return folder


def one_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture
def no_build(monkeypatch):
    def built(*args, **kwargs):
        raise AssertionError("a network was built: the bad value was not refused up front")

    monkeypatch.setattr(demo.models, "build", built)


def test_missing_folder_and_file_instead_of_folder(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--method", "orb"]) == 2
    one_error(capsys, "not found", "nope")
    (tmp_path / "a_file").write_text("x")
    assert main([str(tmp_path / "a_file"), "--method", "orb"]) == 2
    one_error(capsys, "not a folder")


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--max-frames", "0"], "--max-frames"),
        (["--max-frames", "-1"], "--max-frames"),
        (["--num-keypoints", "0"], "--num-keypoints"),
        (["--batch-size", "0"], "--batch-size"),
        (["--threads", "0"], "--threads"),
        (["--fps", "0"], "--fps"),
        (["--device", "banana"], "not a torch device"),
        (["--out", "tracks.gif"], ".mp4"),
    ],
)
def test_bad_values_are_refused_before_the_run(flags, fragment, tmp_path, capsys, no_build):
    seq = textured(tmp_path / "seq")
    assert main([str(seq), "--method", "orb", *flags]) == 2
    one_error(capsys, fragment)


def test_unwritable_video_is_refused_before_the_run(tmp_path, capsys, no_build):
    seq = textured(tmp_path / "seq")
    (tmp_path / "a_file").write_text("x")
    assert main([str(seq), "--method", "orb", "--out", str(tmp_path / "a_file" / "t.mp4")]) == 2
    one_error(capsys, "--out")


@pytest.mark.parametrize("fx", ["nan", "-700", "seven"])
def test_kitti_calibration_with_bad_p0(fx, tmp_path, capsys, no_build):
    seq = textured(tmp_path / "seq")
    (seq / "calib.txt").write_text(f"P0: {fx} 0 100 0 0 700 60 0 0 0 1 0\n")
    assert main([str(seq), "--method", "orb"]) == 2
    one_error(capsys, "calib.txt")


def test_nan_weights_are_refused(tmp_path, capsys):
    from models.weights_io import PACKAGE_WEIGHTS

    state = torch.load(PACKAGE_WEIGHTS / "traqpoint_lite.pt", map_location="cpu", weights_only=False)
    state = state.get("model", state)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
               tmp_path / "nan.pt")
    seq = textured(tmp_path / "seq")
    assert main([str(seq), "--weights", str(tmp_path / "nan.pt")]) == 2
    one_error(capsys, "nan.pt", "NaN")


def test_no_keypoint_on_any_frame_is_a_failure(tmp_path, capsys):
    seq = tmp_path / "blank"
    seq.mkdir()
    for i in range(3):
        cv2.imwrite(str(seq / f"{i}.png"), np.full((100, 140), 80, np.uint8))
    assert main([str(seq), "--method", "orb"]) == 2
    one_error(capsys, "no keypoint", "--weights")


def test_unreadable_image_is_skipped_and_counted(tmp_path, capsys):
    seq = textured(tmp_path / "seq")
    (seq / "000002.png").write_bytes(b"not a png")
    assert main([str(seq), "--method", "orb"]) == 0
    captured = capsys.readouterr()
    assert "frames 3" in captured.out and "1 skipped frames" in captured.err


def test_ctrl_c_keeps_the_video_and_exits_130(tmp_path, capsys, monkeypatch):
    seq = textured(tmp_path / "seq", n=6)
    track, calls = Tracker.track, {"n": 0}

    def interrupted(self, frame):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return track(self, frame)

    monkeypatch.setattr(Tracker, "track", interrupted)
    out = tmp_path / "t.mp4"
    assert main([str(seq), "--method", "orb", "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "frames 3" in captured.out and "interrupted after 3 frames" in captured.err
    video, count = cv2.VideoCapture(str(out)), 0
    while video.read()[0]:
        count += 1
    assert count == 3
