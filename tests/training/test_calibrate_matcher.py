"""The two-view matcher calibration (training/calibrate_matcher.py) and where its threshold applies."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models
from benchmarks.methods import Method
from frontend.tracker import Tracker
from models.errors import BadInputError
from models.factory import LITE_TWO_VIEW_THRESHOLD
from tests.conftest import shared_path
from training.calibrate_matcher import EDGES, bayes_threshold, binned_precision, main, parse_ranges


def test_binned_precision_counts_and_rates():
    prob = np.array([0.005, 0.15, 0.16, 0.9, 1.0])
    right = np.array([False, False, True, True, True])
    counts, prec = binned_precision(prob, right)
    assert counts.sum() == 5 and len(counts) == len(EDGES) - 1
    k15 = EDGES.index(0.15)
    assert counts[0] == 1 and prec[0] == 0.0
    assert counts[k15] == 2 and prec[k15] == 0.5  # 0.15 <= P < 0.2
    assert counts[-1] == 2 and prec[-1] == 1.0  # P = 1 falls in the top bin
    assert np.isnan(prec[1])  # an empty bin has no precision


def test_bayes_threshold_is_the_edge_above_the_last_losing_bin():
    edges = (0.0, 0.1, 0.2, 0.5, 1.0001)
    counts = np.array([100, 100, 100, 100])
    assert bayes_threshold(edges, counts, np.array([0.1, 0.4, 0.6, 0.9])) == 0.2
    assert bayes_threshold(edges, counts, np.array([0.6, 0.4, 0.6, 0.9])) == 0.2  # a lucky low bin does not count
    assert bayes_threshold(edges, counts, np.array([0.6, 0.7, 0.8, 0.9])) == 0.0
    assert bayes_threshold(edges, counts, np.array([0.1, 0.2, 0.3, 0.4])) is None
    # a bin with too few matches is trusted neither way
    assert bayes_threshold(edges, np.array([100, 100, 3, 100]), np.array([0.1, 0.4, 0.0, 0.9]), min_count=50) == 0.2
    assert bayes_threshold(edges, np.zeros(4, int), np.full(4, np.nan)) is None


def test_parse_ranges_and_bad_values():
    assert parse_ranges("0.75:1.35,0.5:2") == [(0.75, 1.35), (0.5, 2.0)]
    for bad in ("0.5", "a:b", "2:1", "0:1"):
        with pytest.raises(BadInputError):
            parse_ranges(bad)


def test_cli_bad_input_is_one_error(tmp_path, capsys):
    assert main(["--pairs", "0"]) == 1
    assert main(["--recipe", str(tmp_path / "missing.yaml")]) == 1
    assert main(["--ranges", "2:1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)


def test_cli_bad_recipes_and_methods_are_one_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1\n")
    empty = tmp_path / "empty.yaml"
    empty.write_text("temperature: 20.0\n")
    assert main(["--recipe", str(bad), "--weights", "random"]) == 1
    assert main(["--recipe", str(empty), "--weights", "random"]) == 1
    assert main(["--method", "orb"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[0] for line in err] == ["error"] * 3
    assert "not valid YAML" in err[0] and "no 'data' list" in err[1] and "dual-softmax" in err[2]


def test_cli_refuses_an_evaluation_set(tmp_path, capsys):
    strecha = shared_path("strecha")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: [{strecha}]\ntemperature: 20.0\n")
    assert main(["--recipe", str(recipe), "--pairs", "1"]) == 1
    assert "evaluation" in capsys.readouterr().err


def test_cli_end_to_end_on_training_photos(tmp_path):
    shared_path("images")
    out = tmp_path / "cal.json"
    rc = main(["--weights", "random", "--pairs", "2", "--size", "96", "128", "--num-kp", "64",
               "--ranges", "0.9:1.1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    (rng,) = res["ranges"]
    assert rng["warp_scale"] == [0.9, 1.1] and len(rng["bins"]) == len(EDGES) - 1
    assert sum(b["matches"] for b in rng["bins"]) > 0
    assert res["temperature"] == 20.0
    assert res["recommended_threshold"] is None or 0.0 <= res["recommended_threshold"] < 1.0


def _ambiguous_pair():
    """Descriptors where each row has eight near-equal candidates: row softmax ~1/8, so every
    mutual match has 0.01 <= P < 0.2."""
    g = torch.Generator().manual_seed(0)
    base = F.normalize(torch.randn(8, 16, generator=g), dim=1)
    d1 = F.normalize(base.repeat(8, 1) + 0.005 * torch.randn(64, 16, generator=g), dim=1)
    return base, d1


def test_lite_two_view_threshold_applies_to_pairs_only():
    ext = models.build("traqpoint-lite", weights="random")
    assert ext.matcher_settings() == {"temperature": 20.0, "threshold": 0.01}
    assert ext.matcher_settings(two_view=True) == {"temperature": 20.0, "threshold": LITE_TWO_VIEW_THRESHOLD}
    assert Tracker(ext).matcher_kwargs["threshold"] == 0.01  # tracking keeps the authors' recall
    d0, d1 = _ambiguous_pair()
    method = Method("traqpoint-lite", extractor=ext)
    loose = method.match(d0.numpy(), d1.numpy())
    strict = method.match(d0.numpy(), d1.numpy(), two_view=True)
    assert len(loose) == 8 and len(strict) == 0
    assert method.describe()["two_view_matcher_kwargs"]["threshold"] == LITE_TWO_VIEW_THRESHOLD


def test_two_view_threshold_option():
    ext = models.build("traqpoint-lite", weights="random", two_view_threshold=0.05)
    assert ext.matcher_settings(two_view=True)["threshold"] == 0.05
    with pytest.raises(ValueError, match="two_view_threshold"):
        models.build("traqpoint-lite", weights="random", two_view_threshold=1.5)
    sift = models.build("sift")
    assert sift.matcher_settings(two_view=True) == sift.matcher_settings() == {"ratio": 0.8}
