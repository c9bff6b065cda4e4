"""Front-end speed benchmark: a short real run (schema, sane numbers, batch sweep) and bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks import frontend_speed, runner
from models.errors import BadInputError

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TRAQPOINT_SHARED", REPO.parent / "shared")) / "data"
SEQ06 = DATA / "kitti_mini" / "sequences" / "06"
needs_data = pytest.mark.skipif(not SEQ06.is_dir(), reason=f"shared test data not available: {SEQ06}")


def _error(capsys, argv: list[str]) -> str:
    assert frontend_speed.main(["--threads", "1", "--methods", "orb", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@needs_data
def test_five_frames_orb_sift(tmp_path, capsys):
    out_json, out_png = tmp_path / "speed.json", tmp_path / "speed.png"
    argv = ["--data", str(SEQ06), "--methods", "orb,sift", "--num-kp", "512", "--frames", "5", "--warmup", "1"]
    argv += ["--batch", "1,2", "--threads", "1", "--json", str(out_json), "--plot", str(out_png)]
    assert frontend_speed.main(argv) == 0
    printed = capsys.readouterr().out
    assert "per-frame profile" in printed and "fps_frontend" in printed
    result = json.loads(out_json.read_text())
    runner.validate_result(result, frontend_speed.KEYS)
    assert list(result["methods"]) == ["orb", "sift"] and result["config"]["frames"] == 5
    for name, m in result["methods"].items():
        assert m["fps_extract"] > 0 and 0 < m["fps_frontend"] <= m["fps_extract"]
        assert 0 < m["latency_ms_p50"] <= m["latency_ms_p95"]
        assert 0 < m["keypoints_mean"] <= 512 and m["aktl"] >= 1.0
        prof = result["profile"][name]
        assert set(prof) == set(frontend_speed.PROFILE_KEYS) and min(prof.values()) >= 0
        parts = prof["extract_ms"] + prof["match_ms"] + prof["verify_ms"] + prof["update_ms"]
        assert parts <= prof["total_ms"] * 1.01
        assert result["config"]["methods"][name]["backend"] == "opencv"
        sweep = result["batches"][name]
        assert list(sweep) == ["1", "2"] and all(r["naive"] > 0 and r["pipelined"] > 0 for r in sweep.values())
    assert result["methods"]["sift"]["aktl"] > 1.2  # consecutive KITTI frames: tracks do continue
    assert out_png.stat().st_size > 10_000


def test_bad_data(tmp_path, capsys):
    assert "sequence not found" in _error(capsys, ["--data", str(tmp_path / "nowhere")])
    assert "no images" in _error(capsys, ["--data", str(tmp_path)])
    import cv2

    cv2.imwrite(str(tmp_path / "only.png"), np.zeros((32, 32), np.uint8))
    assert "at least 2 images" in _error(capsys, ["--data", str(tmp_path)])


def test_unavailable_precision_is_one_clear_error(tmp_path, capsys):
    assert "fp16 is a GPU precision" in _error(capsys, ["--data", "demo", "--precision", "fp16"])


def test_every_vo_sequence_form_is_data(capsys, tmp_path):
    """The rendered demo (no files at all) through the same resolver as traqpoint-vo; precision per method."""
    out_json = tmp_path / "demo.json"
    argv = ["--data", "demo", "--methods", "orb,traqpoint-lite", "--num-kp", "128", "--frames", "3", "--warmup", "0"]
    argv += ["--threads", "1", "--precision", "fp32", "--weights", "traqpoint-lite=random", "--json", str(out_json)]
    assert frontend_speed.main(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads(out_json.read_text())
    assert result["config"]["source"].startswith("demo") and result["config"]["image_size"] == "640x480"
    assert result["config"]["precision_requested"] == "fp32"
    methods = result["config"]["methods"]
    assert methods["orb"]["precision"] == "n/a" and methods["traqpoint-lite"]["precision"] == "fp32"
    machine = result["machine"]
    assert machine["vector_extensions"] == runner.machine_info()["vector_extensions"] and machine["threads"] == 1
    line = [ln for ln in printed.splitlines() if ln.startswith("machine: ")]
    assert len(line) == 2 and line[-1].endswith("precision orb=n/a traqpoint-lite=fp32")  # under both tables
    assert "| 1 threads |" in line[-1]


def test_rounds_repeat_each_method_and_pool_their_frames(capsys, tmp_path, monkeypatch):
    order = []
    real = frontend_speed.latency_pass

    def spy(extractor, frames, num_kp):
        order.append(extractor.name)
        return real(extractor, frames, num_kp)

    monkeypatch.setattr(frontend_speed, "latency_pass", spy)
    out_json = tmp_path / "rounds.json"
    argv = ["--data", "demo", "--methods", "orb,sift", "--num-kp", "64", "--frames", "3", "--warmup", "0",
            "--rounds", "2", "--threads", "1", "--json", str(out_json)]
    assert frontend_speed.main(argv) == 0
    assert order == ["orb", "orb", "sift", "sift"]  # --order sequential (the default): back to back
    result = json.loads(out_json.read_text())
    assert result["config"]["order"] == "sequential"
    assert result["config"]["rounds"] == 2 and len(result["fps_frontend_rounds"]["orb"]) == 2
    rounds = result["fps_frontend_rounds"]["sift"]
    # pooled over both rounds of 2 timed frames: between the slower and the faster round
    assert min(rounds) - 1e-9 <= result["methods"]["sift"]["fps_frontend"] <= max(rounds) + 1e-9
    assert "fps_frontend per round: orb " in capsys.readouterr().out
    assert "--rounds >= 1" in _error(capsys, ["--data", "demo", "--rounds", "0"])
    order.clear()
    assert frontend_speed.main([*argv, "--order", "interleaved"]) == 0
    assert order == ["orb", "sift", "orb", "sift"]  # round by round
    assert json.loads(out_json.read_text())["config"]["order"] == "interleaved"


@needs_data
def test_tum_folder_is_data(capsys):
    tum = DATA / "tum_fr2_desk"
    if not (tum / "rgb.txt").is_file():
        pytest.skip(f"shared TUM sequence not available: {tum}")
    assert frontend_speed.main(["--data", str(tum), "--methods", "orb", "--frames", "2", "--warmup", "0"]) == 0
    assert "frontend_speed on" in capsys.readouterr().out


def test_bad_flags(tmp_path, capsys):
    assert "--frames" in _error(capsys, ["--data", str(tmp_path), "--frames", "1"])
    assert "--batch" in _error(capsys, ["--data", str(tmp_path), "--batch", "1,x"])
    assert "unknown method" in _error(capsys, ["--data", str(tmp_path), "--methods", "orb,superpoint"])


def test_parse_batches():
    assert frontend_speed.parse_batches(None, "cpu") == []
    assert frontend_speed.parse_batches(None, "cuda") == [1, 8, 32]
    assert frontend_speed.parse_batches("4, 1,4", "cpu") == [4, 1]
    with pytest.raises(BadInputError):
        frontend_speed.parse_batches("0", "cpu")
