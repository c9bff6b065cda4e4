"""Homography-warped views of real photographs: pairs (stage 1) and 5-view sequences (stage 2).

Each view is the photograph seen through a random homography ``H_view_src`` (source pixels ->
view pixels) plus independent photometric noise, so correspondences between any two views are
exact: ``H_j_i = H_j_src @ inv(H_i_src)``. Sample ``i`` of a dataset is generated from a RNG
seeded by ``(seed, i)``, which makes runs reproducible and resumable at any step.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass
class WarpConfig:
    """Ranges of the random homography and photometric augmentation."""

    scale: tuple[float, float] = (0.75, 1.35)  # zoom of a view relative to the crop
    rotation_deg: float = 20.0  # in-plane rotation range (+-)
    perspective: float = 0.12  # corner jitter as a fraction of the view size
    translation: float = 0.12  # shift as a fraction of the view size
    brightness: float = 0.25
    contrast: float = 0.3
    blur_prob: float = 0.3
    noise_std: float = 6.0  # grey levels


def random_homography(
    rng: np.random.Generator,
    src_hw: tuple[int, int],
    out_hw: tuple[int, int],
    cfg: WarpConfig,
    centre: np.ndarray | None = None,
) -> np.ndarray:
    """A homography mapping a region of the source image onto an ``out_hw`` view."""
    h, w = out_hw
    sh, sw = src_hw
    if centre is None:
        centre = np.array([sw / 2, sh / 2])
    base = min(sh / h, sw / w) * 0.9  # source pixels per view pixel so the view fits
    s = base / rng.uniform(*cfg.scale)
    a = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64) - [w / 2, h / 2]
    corners += rng.uniform(-cfg.perspective, cfg.perspective, size=(4, 2)) * [w, h]
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = corners @ rot.T * s + centre + rng.uniform(-cfg.translation, cfg.translation, 2) * [sw, sh]
    dst = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64) - 0.5
    return cv2.getPerspectiveTransform(src.astype(np.float32), dst.astype(np.float32)).astype(np.float64)


def photometric(rng: np.random.Generator, img: np.ndarray, cfg: WarpConfig) -> np.ndarray:
    """Brightness, contrast, optional blur and Gaussian noise on a uint8 image."""
    out = img.astype(np.float32)
    out = (out - out.mean()) * (1 + rng.uniform(-cfg.contrast, cfg.contrast)) + out.mean()
    out += rng.uniform(-cfg.brightness, cfg.brightness) * 255
    if rng.random() < cfg.blur_prob:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    out += rng.normal(0, rng.uniform(0, cfg.noise_std), out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def render_views(
    rng: np.random.Generator, src: np.ndarray, n: int, out_hw: tuple[int, int], cfg: WarpConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` views ``[n, H, W]`` uint8 of one photograph, their ``H_view_src`` ``[n, 3, 3]`` and
    validity masks ``[n, H, W]`` (pixels that see the photograph, not the black border)."""
    sh, sw = src.shape
    centre = np.array([sw / 2, sh / 2]) + rng.uniform(-0.15, 0.15, 2) * [sw, sh]
    hs = np.stack([random_homography(rng, (sh, sw), out_hw, cfg, centre) for _ in range(n)])
    views = np.stack(
        [
            photometric(
                rng,
                cv2.warpPerspective(src, H, out_hw[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT),
                cfg,
            )
            for H in hs
        ]
    )
    ones = np.full(src.shape, 255, np.uint8)
    masks = np.stack([cv2.warpPerspective(ones, H, out_hw[::-1], flags=cv2.INTER_NEAREST) > 0 for H in hs])
    return views, hs, masks


class HomographyViews(Dataset):
    """Item ``i``: ``images [n, 1, H, W]`` in [0, 1], ``H [n, 3, 3]`` (view <- source), ``valid [n, 1, H, W]``,
    ``source`` (``[]`` int64: the photograph's index in ``pool``, e.g. for :mod:`training.teacher`).

    ``n = 2`` for stage-1 pairs, ``n = 5`` for stage-2 sequences. ``length`` is virtual: items are
    generated on the fly from ``(seed, i)``.
    """

    def __init__(
        self,
        pool: list[np.ndarray],
        n_views: int,
        hw: tuple[int, int],
        length: int,
        seed: int = 0,
        cfg: WarpConfig | None = None,
    ) -> None:
        if not pool:
            raise ValueError("empty image pool")
        self.pool, self.n, self.hw, self.length, self.seed = pool, n_views, hw, length, seed
        self.cfg = cfg or WarpConfig()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        index = int(rng.integers(len(self.pool)))
        views, hs, masks = render_views(rng, self.pool[index], self.n, self.hw, self.cfg)
        return {
            "images": torch.from_numpy(views)[:, None].float() / 255.0,
            "H": torch.from_numpy(hs).float(),
            "valid": torch.from_numpy(masks)[:, None],
            "source": torch.tensor(index),
        }
