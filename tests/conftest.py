"""Shared test fixtures: location of ../shared data and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TRAQPOINT_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def randomised(cls: type[torch.nn.Module], **conf: object) -> torch.nn.Module:
    """``cls(**conf)`` in eval mode, seeded, with BatchNorm statistics that are not the identity (so
    folding them into the convolutions has work to do)."""
    torch.manual_seed(0)
    net = cls(**conf).eval()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def textured(h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    """A smooth random texture (blurred noise), uint8 ``h x w``: every patch has gradients for LK."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``img`` translated by ``(dx, dy)`` px (content at x moves to x + dx), cubic, reflected border."""
    M = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(img, M, img.shape[::-1], flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)


KITTI06 = DATA / "kitti_mini" / "sequences" / "06"


def kitti_copy(tmp: Path, num: int) -> Path:
    """First ``num`` frames of KITTI-mini 06 copied into ``tmp`` in KITTI layout; returns the sequence folder."""
    import shutil

    seq = tmp / "sequences" / "06"
    (seq / "image_0").mkdir(parents=True)
    for i in range(num):
        shutil.copy(KITTI06 / "image_0" / f"{i:06d}.png", seq / "image_0" / f"{i:06d}.png")
    shutil.copy(KITTI06 / "calib.txt", seq / "calib.txt")
    (seq / "times.txt").write_text("\n".join((KITTI06 / "times.txt").read_text().splitlines()[:num]) + "\n")
    (tmp / "poses").mkdir()
    poses = (KITTI06.parent.parent / "poses" / "06.txt").read_text().splitlines()[:num]
    (tmp / "poses" / "06.txt").write_text("\n".join(poses) + "\n")
    return seq


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not available: {path} (set TRAQPOINT_SHARED to the shared folder)")
    return path


@pytest.fixture
def kitti_pair():
    """Two consecutive real KITTI 06 frames (12, 13) as uint8 grey arrays."""
    import cv2

    folder = shared_path("kitti06_frames")
    return tuple(cv2.imread(str(folder / f"kitti06-{i}.png"), cv2.IMREAD_GRAYSCALE) for i in (12, 13))


@pytest.fixture
def churchill():
    """The real churchill homography sequence folder (``1.ppm``..``6.ppm``, ``H_1_k``)."""
    return shared_path("homography", "churchill")
