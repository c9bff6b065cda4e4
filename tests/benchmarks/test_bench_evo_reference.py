"""Our trajectory metrics reproduce evo's own archived results for KITTI 00 (ORB-SLAM2, S-PTAM).

The archives (``../shared/data/trajectories/*_ape.zip`` / ``*_rpe.zip``) hold ``info.json`` (its
title states the settings: pose relation, alignment, delta) and ``stats.json``. We read the
settings from the title, recompute with :mod:`vo_app.trajectory` and compare every
statistic to 1e-6 relative.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from evo.tools import file_interface

from vo_app import trajectory

DATA = Path(os.environ.get("TRAQPOINT_SHARED", Path(__file__).resolve().parents[3] / "shared")) / "data"
TRAJ = DATA / "trajectories"
pytestmark = pytest.mark.skipif(not TRAJ.is_dir(), reason=f"shared test data not available: {TRAJ}")


def _archive(name: str) -> tuple[dict, dict]:
    with zipfile.ZipFile(TRAJ / f"{name}.zip") as z:
        return json.loads(z.read("info.json")), json.loads(z.read("stats.json"))


def _poses(name: str) -> np.ndarray:
    return np.array(file_interface.read_kitti_poses_file(TRAJ / name).poses_se3)


@pytest.fixture(scope="module")
def gt() -> np.ndarray:
    return _poses("KITTI_00_gt.txt")


def _assert_stats(ours: dict, theirs: dict) -> None:
    assert set(theirs) == set(trajectory.STAT_KEYS)
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, rel=1e-6), key


@pytest.mark.parametrize("method", ["orb", "sptam"])
def test_ape_matches_evo_archive(gt, method):
    info, stats = _archive(f"{method}_ape")
    assert info["ref_name"].endswith("KITTI_00_gt.txt")
    title = info["title"]
    assert title.startswith("APE w.r.t. translation part (m)")
    align = "sim3" if "Sim(3)" in title else "se3" if "SE(3)" in title else "none"
    assert align == "se3"
    est = _poses(Path(info["est_name"]).name)
    _assert_stats(trajectory.ape(gt, est, align), stats)


@pytest.mark.parametrize("method", ["orb", "sptam"])
def test_rpe_matches_evo_archive(gt, method):
    info, stats = _archive(f"{method}_rpe")
    title = info["title"]
    match = re.search(r"for delta = ([\d.]+) \((\w+)\) using (consecutive|all) pairs", title)
    assert title.startswith("RPE w.r.t. translation part (m)") and match and "(not aligned)" in title
    delta, unit, mode = float(match[1]), match[2], match[3]
    assert (delta, unit, mode) == (10.0, "m", "consecutive")
    est = _poses(Path(info["est_name"]).name)
    # The archive predates evo's current metre pairing (which also starts a pair at pose 0).
    _assert_stats(trajectory.rpe(gt, est, "trans", delta=delta, unit=unit, pairing="legacy"), stats)
    current = trajectory.rpe(gt, est, "trans", delta=delta, unit=unit)
    assert current["rmse"] != pytest.approx(stats["rmse"], rel=1e-6)


def test_kitti_metrics_on_kitti00_orb(gt):
    est = _poses("KITTI_00_ORB.txt")
    m = trajectory.kitti_metrics(gt, est, align="se3")
    _, ape_stats = _archive("orb_ape")
    assert m["ate_rmse_m"] == pytest.approx(ape_stats["rmse"], rel=1e-6)
    assert m["ate_pct_path"] == pytest.approx(ape_stats["rmse"] / trajectory.path_length(gt) * 100)
    assert 3700 < trajectory.path_length(gt) < 3800  # KITTI 00 is 3.7 km
    # The ORB-SLAM2 paper (Mur-Artal & Tardos 2017, table II) reports 0.70 % and 0.25 deg / 100 m on 00.
    assert m["t_err_pct"] == pytest.approx(0.70, abs=0.005)
    assert m["r_err_deg_per_100m"] == pytest.approx(0.25, abs=0.005)
    assert 0 < m["rpe_trans_m"] < 0.1 and 0 < m["rpe_rot_deg"] < 1
