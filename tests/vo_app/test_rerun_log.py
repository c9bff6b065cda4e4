"""``--rerun``: the demo run logged to a Rerun ``.rrd`` that reads back (skipped without rerun-sdk)."""

from __future__ import annotations

import numpy as np
import pytest

import models
from models.errors import TraqPointError
from vo_app import rerun_log
from vo_app.pipeline import VOPipeline
from vo_app.sources import open_source


def test_trail_segments_and_colours():
    hist = np.array([[[np.nan, np.nan], [1, 1], [2, 2]], [[0, 0], [np.nan, np.nan], [5, 5]]], np.float32)
    segs, rows = rerun_log.trail_segments(hist)
    assert segs.shape == (1, 2, 2) and rows.tolist() == [0]  # the gap of track 1 draws nothing
    colours = rerun_log.age_rgb(np.array([1, 30]))
    assert colours.shape == (2, 3) and colours[0, 2] > colours[0, 0] and colours[1, 0] > colours[1, 2]  # blue, red


def test_missing_sdk_is_one_clear_error(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_rerun(name, *args, **kwargs):
        if name == "rerun":
            raise ImportError("No module named 'rerun'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_rerun)
    with pytest.raises(TraqPointError, match=r"traqpoint-vo\[rerun\]"):
        rerun_log.import_rerun()


def test_demo_run_to_rrd(tmp_path):
    pytest.importorskip("rerun", reason='optional: pip install "traqpoint-vo[rerun]"')
    from rerun.chunk import RrdReader

    pipeline = VOPipeline(
        open_source("demo"), models.build("sift", num_keypoints=300), scale="gt", num_keypoints=300, max_frames=12
    )
    path = tmp_path / "run.rrd"
    wrapped = rerun_log.RerunPipeline(pipeline, path)
    steps = list(wrapped.run())
    assert len(steps) == 12 and wrapped.source is pipeline.source  # the rest is the pipeline's
    assert path.stat().st_size > 10_000
    chunks = list(RrdReader(path).stream())
    entities = {c.entity_path for c in chunks}
    for entity in ("/world/camera", "/world/camera/image", "/world/camera/image/tracks", "/world/trajectory",
                   "/world/ground_truth", "/stats/fps"):
        assert entity in entities, sorted(entities)
    frames = sum(c.num_rows for c in chunks if c.entity_path == "/world/camera" and not c.is_static)
    assert frames == 12
