"""Real-data smoke test: SIFT tracks through the first frames of KITTI 06 (shared data)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import models
from frontend.demo import folder_frames
from frontend.engine import ExtractionEngine
from frontend.tracker import Tracker

REPO = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("TRAQPOINT_SHARED", REPO.parent / "shared")) / "data"
KITTI06 = DATA / "kitti_mini" / "sequences" / "06"


@pytest.mark.slow
def test_sift_tracks_on_kitti06():
    if not (KITTI06 / "image_0").is_dir():
        pytest.skip(f"shared test data not available: {KITTI06 / 'image_0'} (set TRAQPOINT_SHARED)")
    sift = models.build("sift", num_keypoints=1024)
    tracker = Tracker(sift)
    for frame in ExtractionEngine(sift, batch_size=2, num_threads=None).run(folder_frames(KITTI06, 10)):
        result = tracker.track(frame)
    assert result.frame.K is not None and result.frame.timestamp == pytest.approx(0.9350305, abs=1e-6)
    stats = tracker.stats[1:]
    inliers = np.array([s.inliers for s in stats])
    # measured: AKTL 1.570, 349-425 inliers of 368-442 mutual ratio-test matches per frame pair
    assert tracker.aktl > 1.5
    assert inliers.min() > 250
    assert all(s.verified and s.inliers / s.matches > 0.85 for s in stats)
    assert len(result.frame.track_ids) == 1024 and tracker.stats[-1].active > 300
