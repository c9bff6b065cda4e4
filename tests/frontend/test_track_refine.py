"""LK refinement of continued tracks: sub-pixel recovery on a known shift, the shift limit, images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from frontend.track_refine import grey_uint8, refine_lk
from models.image_io import to_grey
from tests.conftest import shifted, textured


def test_recovers_a_sub_pixel_shift_from_rounded_detections():
    prev = textured()
    cur = shifted(prev, 0.3, -0.6)
    g = np.stack(np.meshgrid(np.arange(30, 131, 20), np.arange(30, 91, 20)), -1).reshape(-1, 2).astype(np.float32)
    truth = g + np.float32([0.3, -0.6])
    detections = np.round(truth)  # a detector on the pixel grid: up to 0.5 px off
    xy, ok = refine_lk(prev, cur, g, detections)
    assert ok.all()
    assert np.abs(detections - truth).max() > 0.35  # the detections really are off
    assert np.abs(xy - truth).max() < 0.1  # measured 0.06 (cubic warp against LK's bilinear patches)


def test_a_move_beyond_max_shift_keeps_the_detection():
    prev = textured(seed=1)
    cur = shifted(prev, 1.5, 0.0)
    p0 = np.float32([[80, 60]])
    xy, ok = refine_lk(prev, cur, p0, p0 + np.float32([[1.0, 0.0]]), max_shift=0.2)  # LK wants 0.5 px
    assert not ok[0] and np.allclose(xy, [[81, 60]])
    xy, ok = refine_lk(prev, cur, p0, p0 + np.float32([[1.0, 0.0]]), max_shift=2.0)
    assert ok[0] and abs(xy[0, 0] - 81.5) < 0.05
    empty, none = refine_lk(prev, cur, np.zeros((0, 2)), np.zeros((0, 2)))
    assert empty.shape == (0, 2) and none.shape == (0,)


@pytest.mark.parametrize(
    "image",
    [np.full((8, 10), 7, np.uint8), np.full((8, 10, 3), 7, np.uint8), torch.full((8, 10), 7, dtype=torch.uint8),
     torch.full((1, 8, 10), 7 / 255.0), torch.full((3, 8, 10), 7 / 255.0), np.full((8, 10), 7 / 255.0),
     np.full((8, 10), 7, np.uint16)],
)
def test_grey_uint8_takes_every_frame_layout(image):
    g = grey_uint8(image)
    assert g.shape == (8, 10) and g.dtype == np.uint8 and (g == 7).all()


def test_grey_uint8_is_the_engines_conversion():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    assert np.array_equal(grey_uint8(rgb), to_grey(rgb))
    assert np.array_equal(grey_uint8(torch.from_numpy(rgb).permute(2, 0, 1)), to_grey(rgb))
