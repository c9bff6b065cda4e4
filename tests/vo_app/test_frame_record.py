"""One frame record, :class:`frontend.frame.Frame`, flows from the source through the front-end to the odometry."""

from __future__ import annotations

import numpy as np

import models
from frontend.frame import Frame
from vo_app.pipeline import VOPipeline
from vo_app.sources import DemoSource


def test_the_source_frame_is_the_record_the_pipeline_carries():
    source = DemoSource(num_frames=6, width=320, height=240, colour=True)
    first = source[0]
    assert isinstance(first, Frame) and not first.has_features and first.path is None
    pipeline = VOPipeline(source, models.build("sift", num_keypoints=200), scale="gt", num_keypoints=200)
    steps = list(pipeline.run())
    assert [s.frame.index for s in steps] == list(range(6))
    for i, step in enumerate(steps):
        f = step.frame
        assert f.has_features and f.track_ids is not None
        # the source's fields ride along untouched: no copy of K, the ground truth, the RGB image
        assert f.K is source.K and f.pose is step.gt_pose and f.colour.shape == (240, 320, 3)
        np.testing.assert_array_equal(f.pose, source.gt_poses[i])
        np.testing.assert_array_equal(f.timestamp, i / source.fps)
