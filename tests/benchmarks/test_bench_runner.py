"""The shared runner: method registry, result schema, table, cache, CLI errors (no real data needed)."""

from __future__ import annotations

import argparse
import json
import math

import cv2
import numpy as np
import pytest

from benchmarks import runner
from benchmarks.cache import FeatureCache
from benchmarks.images import Resize, load_image, scale_matrix, to_original
from benchmarks.methods import Method, build_methods, parse_method_names, parse_weights
from models.errors import BadInputError

KEYS = ("auc5", "pairs")


def _spec(run) -> runner.BenchmarkSpec:
    return runner.BenchmarkSpec("toy", "a toy benchmark", KEYS, run)


def test_method_names():
    assert parse_method_names(" sift,orb ,sift") == ["sift", "orb"]
    with pytest.raises(BadInputError, match="unknown method 'superpoint'; available: "):
        parse_method_names("sift,superpoint")
    with pytest.raises(BadInputError, match="no method"):
        parse_method_names(" , ")
    assert parse_weights(["traqpoint-lite=a.pt"]) == {"traqpoint-lite": "a.pt"}
    with pytest.raises(BadInputError, match="METHOD=PATH"):
        parse_weights(["a.pt"])


def test_unbuildable_method_is_skipped_with_one_line(tmp_path):
    weights = {"traqpoint-lite": str(tmp_path / "x.pt")}
    methods = build_methods(["sift", "traqpoint-lite"], num_keypoints=64, weights=weights)
    assert methods[0].extractor is not None and methods[0].skipped is None
    assert methods[1].extractor is None
    assert methods[1].skipped.startswith("MissingFileError: weight file not found") and "\n" not in methods[1].skipped


def test_result_schema_json_and_table(tmp_path):
    methods = [Method("sift", extractor=build_methods(["sift"])[0].extractor), Method("orb", skipped="Boom: no")]
    metrics = {"sift": {"auc5": float("nan"), "pairs": np.int64(3)}}
    result = runner.make_result("toy", tmp_path, {"resize": "none"}, methods, metrics, {"pairs_skipped": 1})
    assert list(result) == list(runner.TOP_KEYS)
    machine_keys = {"cpu", "vector_extensions", "cpu_capability", "threads", "gpu", "torch", "isa_caps"}
    assert set(result["machine"]) == machine_keys
    assert result["skipped"] == {"orb": "Boom: no"} and list(result["methods"]) == ["sift"]
    assert result["config"]["methods"]["sift"]["matcher"] == "ratio"
    runner.validate_result(result, KEYS)
    path = tmp_path / "out" / "r.json"
    runner.write_json(result, path)
    loaded = json.loads(path.read_text())
    assert loaded["methods"]["sift"] == {"auc5": None, "pairs": 3}
    table = runner.format_table(result, KEYS)
    assert table.splitlines()[0].split() == ["method", "auc5", "pairs"]
    assert "sift" in table and "orb" in table and "skipped: Boom: no" in table
    with pytest.raises(BadInputError, match="expected"):
        runner.validate_result({**result, "methods": {"sift": {"auc5": 1.0}}}, KEYS)


def test_cli_unknown_method_exit_2(capsys):
    code = runner.run_cli(_spec(lambda args: pytest.fail("must not run")), ["--methods", "sift,nope"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: unknown method 'nope'") and "\n" not in err


def test_cli_runs_prints_and_writes(tmp_path, capsys):
    def run(args: argparse.Namespace) -> runner.Outcome:
        methods = runner.methods_from_args(args)
        metrics = {m.name: {"auc5": 12.5, "pairs": 2} for m in methods if m.extractor is not None}
        return runner.Outcome(runner.make_result("toy", "here", {}, methods, metrics))

    argv = ["--methods", "orb,traqpoint-lite", "--weights", f"traqpoint-lite={tmp_path / 'no.pt'}"]
    code = runner.run_cli(_spec(run), [*argv, "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert code == 0 and "12.50" in out and "traqpoint-lite  skipped: MissingFileError" in out
    assert json.loads((tmp_path / "r.json").read_text())["methods"] == {"orb": {"auc5": 12.5, "pairs": 2}}


def test_cache_is_reused_and_keyed_by_settings(tmp_path):
    img = np.zeros((120, 160), np.uint8)
    cv2.circle(img, (80, 60), 30, 255, -1)
    cv2.rectangle(img, (10, 10), (40, 50), 128, -1)
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), img)
    sift = build_methods(["sift"], num_keypoints=50)[0]
    cache = FeatureCache(tmp_path / "cache", "toy")
    cache.export(sift, [path], Resize())
    first = cache.get(sift, path, Resize())
    assert cache.extracted == 1 and len(first.keypoints) > 0
    again = FeatureCache(tmp_path / "cache", "toy")
    again.export(sift, [path], Resize())
    assert again.extracted == 0 and again.reused == 1
    np.testing.assert_array_equal(again.get(sift, path, Resize()).descriptors, first.descriptors)
    # other settings -> other entries
    other = build_methods(["sift"], num_keypoints=20)[0]
    assert other.cache_key != sift.cache_key
    assert cache.path(sift, path, Resize("long", 80)) != cache.path(sift, path, Resize())
    half = cache.get(sift, path, Resize("long", 80))
    assert half.size == (80, 60) and half.scale == (0.5, 0.5) and half.original_size == (160, 120)
    tmp = FeatureCache(None, "toy")
    root = tmp.root
    tmp.get(sift, path, Resize())
    tmp.close()
    assert not root.exists()


def test_zero_keypoints_flow_through(tmp_path):
    path = tmp_path / "blank.png"
    cv2.imwrite(str(path), np.zeros((64, 64), np.uint8))
    sift = build_methods(["sift"])[0]
    cache = FeatureCache(tmp_path / "cache", "toy")
    cache.get(sift, path, Resize())
    feats = FeatureCache(tmp_path / "cache", "toy").get(sift, path, Resize())  # read back from the cache
    assert feats.keypoints.shape == (0, 2) and feats.descriptors.shape == (0, 128)
    assert sift.match(feats.descriptors, feats.descriptors).shape == (0, 2)


def test_resize_and_scale_conventions(tmp_path):
    assert Resize("long", 1200).target(1600, 1067) == (1200, 800)
    assert Resize("short", 480).target(1024, 768) == (640, 480)
    assert Resize("exact", width=640, height=480).target(1296, 968) == (640, 480)
    with pytest.raises(BadInputError):
        Resize("long", 0)
    # pixel centres: the centre of the top-left pixel of the original maps to that of the resized one
    S = scale_matrix(0.5, 0.5)
    assert S @ np.array([-0.5, -0.5, 1]) == pytest.approx([-0.5, -0.5, 1])
    assert S @ np.array([1.5, 1.5, 1]) == pytest.approx([0.5, 0.5, 1])
    pts = np.array([[0.5, 0.5], [10.0, 3.0]])
    assert to_original(pts, (0.5, 0.5)) == pytest.approx(np.array([[1.5, 1.5], [20.5, 6.5]]))
    missing = tmp_path / "nope.png"
    with pytest.raises(FileNotFoundError, match="image not found"):
        load_image(missing)


def test_to_jsonable():
    assert runner.to_jsonable({"a": [np.float32(1.5), math.inf], "b": np.arange(2)}) == {"a": [1.5, None], "b": [0, 1]}


def test_two_view_threshold_flag_reaches_the_dual_softmax_methods_only():
    parser = runner.make_parser(_spec(lambda args: None))
    args = parser.parse_args(["--methods", "traqpoint-lite,orb", "--weights", "traqpoint-lite=random",
                              "--two-view-threshold", "0.3"])
    runner.check_common_args(args)
    lite, orb = runner.methods_from_args(args)
    assert lite.two_view_matcher_kwargs["threshold"] == 0.3 and lite.matcher_kwargs["threshold"] == 0.01
    assert orb.two_view_matcher_kwargs == orb.matcher_kwargs == {}
    assert lite.describe()["two_view_matcher_kwargs"]["threshold"] == 0.3
    default = runner.methods_from_args(parser.parse_args(["--methods", "traqpoint-lite", "--weights",
                                                          "traqpoint-lite=random"]))[0]
    assert default.two_view_matcher_kwargs["threshold"] == 0.2  # models.factory.LITE_TWO_VIEW_THRESHOLD
    for bad in ("1.5", "-0.1"):
        with pytest.raises(BadInputError, match="two-view-threshold"):
            runner.check_common_args(parser.parse_args(["--two-view-threshold", bad]))
