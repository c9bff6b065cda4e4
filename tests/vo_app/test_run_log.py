"""Bounded run records: stats rows spooled to disk round-trip, map points stay under their cap."""

from __future__ import annotations

import numpy as np

from vo_app.run_log import PointStore, StatsLog


def test_stats_log_round_trip_and_appends_after_a_partial_read(tmp_path):
    log = StatsLog()
    assert not log and len(log) == 0
    rows = [{"index": i, "fps": i / 3, "keyframe": i % 2 == 0, "status": "ok", "parallax_px": 1e-5 * i}
            for i in range(50)]
    for row in rows[:30]:
        log.append(row)
    reader = iter(log)
    assert next(reader) == rows[0]  # a reader left half-way must not disturb later appends
    for row in rows[30:]:
        log.append(row)
    assert len(log) == 50 and list(log) == rows and next(reader) == rows[1]
    log.write_csv(tmp_path / "stats.csv")
    lines = (tmp_path / "stats.csv").read_text().splitlines()
    assert lines[0] == "index,fps,keyframe,status,parallax_px" and len(lines) == 51


def test_point_store_is_bounded_and_keeps_the_extent():
    store = PointStore(max_points=1000)
    rng = np.random.default_rng(0)
    for k in range(40):
        store.append(rng.uniform(0, 1, (250, 3)) + [k, 0, 0])  # the map grows along x
    points = store.array()
    assert 500 <= len(store) == len(points) <= 1000
    assert points[:, 0].min() < 1 and points[:, 0].max() > 39  # thinned uniformly, not truncated
    counts = np.histogram(points[:, 0], bins=4, range=(0, 40))[0]
    assert counts.min() > 0.6 * counts.max()
    assert PointStore().array().shape == (0, 3)
