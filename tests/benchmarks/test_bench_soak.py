"""The soak benchmark on a few small demo frames: rows streamed, outputs written, verdict computed."""

from __future__ import annotations

import csv
import json

import pytest

from benchmarks import soak


def test_short_soak_streams_rows_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "soak"
    argv = ["--frames", "9", "--every", "3", "--method", "sift", "--num-kp", "200", "--width", "160",
            "--height", "120", "--threads", "1", "--out", str(out)]
    code = soak.main(argv)
    captured = capsys.readouterr()
    assert code in (0, 1), captured.err
    with (out / "soak.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["frames"]) for r in rows] == [3, 6, 9] and set(soak.FIELDS) == set(rows[0])
    assert all(float(r["rss_mb"]) > 50 and float(r["fps_window"]) > 0 and float(r["fps_cpu"]) > 0 for r in rows)
    assert int(rows[-1]["rows_logged"]) == 9 and float(rows[0]["rss_growth_mb"]) == 0.0
    result = json.loads((out / "soak.json").read_text())
    verdict = result["verdict"]
    assert code == (0 if verdict["memory_flat"] and verdict["fps_steady"] else 1)
    assert result["config"]["method"] == "sift" and result["rows"][-1]["frames"] == 9
    assert result["wall_clock"]["fps_measure"] == "fps_window" and verdict["fps_measure"] == "fps_cpu"
    assert (out / "trajectory_kitti.txt").is_file() and (out / "stats.csv").is_file()
    assert "RSS growth" in captured.out


def rows(rss: list[float], fps: list[float]) -> list[dict]:
    return [{"frames": 500 * (i + 1), "rss_growth_mb": r - rss[0], "fps_cpu": f} for i, (r, f) in
            enumerate(zip(rss, fps))]


def test_verdict():
    flat = soak.verdict(rows([300, 310, 312, 311, 313, 312, 314, 315, 313], [9, 20, 21, 19, 20, 20, 21, 19, 20]),
                        50, 0.8)
    assert flat["memory_flat"] and flat["fps_steady"] and flat["rss_growth_mb"] == 15
    leak = soak.verdict(rows([300, 320, 340, 360, 380], [20] * 5), 50, 0.8)
    assert not leak["memory_flat"] and leak["rss_growth_mb"] == 80
    decay = soak.verdict(rows([300] * 9, [20, 20, 20, 18, 16, 14, 12, 10, 8]), 50, 0.8)
    assert decay["memory_flat"] and not decay["fps_steady"] and decay["fps_ratio"] < 0.8


@pytest.mark.parametrize(("flags", "fragment"), [
    (["--frames", "0"], "--frames"),
    (["--frames", "10", "--every", "20"], "--every"),
    (["--device", "banana"], "not a torch device"),
    (["--min-fps-ratio", "0"], "--min-fps-ratio"),
])
def test_bad_flags(flags, fragment, tmp_path, capsys):
    assert soak.main([*flags, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and fragment in err and "\n" not in err
