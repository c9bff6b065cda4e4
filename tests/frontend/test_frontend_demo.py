"""The demo CLI renders a video and prints its statistics; drawing is batched and safe."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from frontend.demo import main
from frontend.draw import draw_tracks
from frontend.tracker import Tracks


def shifted_images(folder, n: int = 4) -> None:
    rng = np.random.default_rng(0)
    base = cv2.GaussianBlur(rng.integers(0, 256, (120, 200), dtype=np.uint8), (3, 3), 1)
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:06d}.png"), np.roll(base, 2 * i, axis=1))


def test_demo_writes_a_video_and_prints_stats(tmp_path, capsys):
    shifted_images(tmp_path / "seq")
    out = tmp_path / "tracks.mp4"
    assert main([str(tmp_path / "seq"), "--method", "orb", "--num-keypoints", "200", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "frames 4" in text and "AKTL" in text and "FPS" in text
    video = cv2.VideoCapture(str(out))
    count = 0
    while video.read()[0]:
        count += 1
    assert count == 4


def test_demo_reports_missing_input_clearly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--method", "orb"]) == 2
    assert "no images" in capsys.readouterr().err


@pytest.mark.parametrize("trail", [1, 5])
def test_draw_tracks_handles_empty_and_partial_trails(trail):
    grey = np.zeros((40, 60), np.uint8)
    assert draw_tracks(grey, None).shape == (40, 60, 3)
    assert draw_tracks(grey, Tracks.empty(8, trail), np.zeros((0, 2), np.float32)).shape == (40, 60, 3)
    hist = np.full((2, trail, 2), np.nan, np.float32)
    hist[0, -2:] = [[10, 10], [20, 15]] if trail > 1 else [[20, 15]]
    hist[1, -1] = [70, 5]  # outside the image: must be clipped, not crash
    tracks = Tracks(np.arange(2), np.zeros(2, np.int64), np.array([3, 1]), hist[:, -1], np.zeros((2, 8)), hist)
    canvas = draw_tracks(grey, tracks)
    assert canvas[15, 20].any() and canvas.sum() > 0
