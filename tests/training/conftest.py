"""Fixtures of the training tests: a folder of small real photographs and a synthetic MegaDepth scene."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # train_helpers and megadepth_synth, next to this file

from megadepth_synth import SynthScene, write_scene  # noqa: E402
from train_helpers import real_photos  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions: a second thread only adds contention on a shared CPU (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """Three photographs, long side 320 px (real ones when the shared data is there, else noise)."""
    out = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    sources = real_photos(3)
    for k in range(3):
        img = cv2.imread(str(sources[k])) if k < len(sources) else None
        if img is None:
            img = cv2.GaussianBlur(rng.integers(0, 256, (240, 320)).astype(np.uint8), (5, 5), 0)
        scale = 320 / max(img.shape[:2])
        cv2.imwrite(str(out / f"photo{k}.jpg"), cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
    return out


@pytest.fixture(scope="session")
def synth_scene(tmp_path_factory) -> SynthScene:
    """The synthetic MegaDepth scene of :mod:`megadepth_synth` (read-only for the tests)."""
    return write_scene(tmp_path_factory.mktemp("megadepth") / "root", real_photos(2))
