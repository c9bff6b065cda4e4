"""Pairs (stage 1) and sequences (stage 2) from cached pycolmap reconstructions.

The cache is written by ``python -m training.data.reconstruct --out CACHE`` (``CACHE/<scene>/
scene.npz`` + ``undistorted/images``, see :mod:`training.data.sfm_index`). Pairs are image pairs
whose shared-point covisibility lies in ``overlap``; a sequence is a reference image and
``n - 1`` partners each in that range with the reference (:func:`sfm_index.select_sequences`).

Each view is resized (aspect kept) to cover ``hw`` and cropped: the reference at its centre, the
others around the projection of the median 3D point the reference's crop sees (as
:class:`training.data.megadepth.MegaDepthViews` does). An item holds the keys of a depth item
of :func:`training.warping.warp_item` plus the sparse ground truth:

* ``images [n, 1, H, W]`` in [0, 1], ``K [n, 3, 3]`` (pixel-centre convention of
  :mod:`models.conventions`), ``T_cam_world [n, 4, 4]``;
* ``depth [n, H, W]``: the views' depth from their 3D points (:mod:`training.data.sfm_depth`),
  0 = unknown;
* ``tracks [n, M, 2]``, ``track_valid [n, M]``: the reference's observed 3D points (at most one
  per ``cell`` px cell of each view, at most ``max_tracks``, zero-padded) at their observed
  keypoint in every view that observes them inside its crop. ``tracks[:, m]`` are one 3D
  point's keypoints: exact sparse correspondences for stage 1; ``track_point [M]`` is that
  point's row of the scene's ``xyz`` (-1 = padding).

Item ``i`` is drawn from a RNG seeded by ``(seed, i)``: a scene uniformly, then one of its samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from models.errors import BadInputError, MissingFileError
from training.data.megadepth import adjust_intrinsics
from training.data.sfm_depth import DepthConfig, depth_map
from training.data.sfm_heldout import refuse_evaluation_paths
from training.data.sfm_index import load_index, select_pairs, select_sequences

log = logging.getLogger(__name__)


@dataclass
class SfMConfig:
    """Sample selection and ground-truth settings of :class:`SfMViews`."""

    overlap: tuple[float, float] = (0.1, 0.7)  # covisibility range of a pair / of each view with the reference
    min_shared: int = 30  # 3D points a pair must share
    per_head: int = 8  # sequences per reference image
    max_tracks: int = 1024  # padded length of the sparse correspondence lists
    cell: int = 8  # at most one track per cell (px) of each view
    min_tracks: int = 16  # correspondences a sample needs inside the crops, else it is redrawn
    max_redraws: int = 20  # redraws in a row before giving up
    depth: DepthConfig = field(default_factory=DepthConfig)


@dataclass
class SfMScene:
    """One reconstruction: its index arrays, image folder and samples ``[S, n]`` of image ids."""

    name: str
    image_dir: Path
    index: dict
    samples: np.ndarray
    obs_start: np.ndarray  # [n + 1] observations of image k: obs_order[obs_start[k]:obs_start[k + 1]]
    obs_order: np.ndarray


def scene_files(cache: str | Path) -> list[Path]:
    """``scene.npz`` files of a cache folder (``CACHE/<scene>/scene.npz``) or of one scene folder."""
    cache = Path(cache)
    if (cache / "scene.npz").is_file():
        return [cache / "scene.npz"]
    if not cache.is_dir():
        raise MissingFileError(
            f"SfM cache not found: {cache} (build it: `python -m training.data.reconstruct --out {cache}`)"
        )
    files = sorted(cache.glob("*/scene.npz"))
    if not files:
        raise BadInputError(
            f"no reconstructed scenes (*/scene.npz) in {cache}: run `python -m training.data.reconstruct --out {cache}`"
        )
    return files


def view_transform(hw0: tuple[int, int], hw: tuple[int, int], centre: tuple[float, float] | None):
    """Scale ``(sx, sy)``, resized size ``(nh, nw)`` and crop offset ``(x0, y0)`` that fit an
    ``hw0`` image to cover ``hw`` with the crop around ``centre`` (COLMAP pixels; None = image centre)."""
    h, w = hw
    h0, w0 = hw0
    s = max(h / h0, w / w0)
    nh, nw = max(h, round(h0 * s)), max(w, round(w0 * s))
    sx, sy = nw / w0, nh / h0
    cx, cy = (w0 / 2, h0 / 2) if centre is None else centre
    x0 = int(np.clip(round(cx * sx - w / 2), 0, nw - w))
    y0 = int(np.clip(round(cy * sy - h / 2), 0, nh - h))
    return (sx, sy), (nh, nw), (x0, y0)


def to_crop(xy: np.ndarray, scale: tuple[float, float], offset: tuple[int, int]) -> np.ndarray:
    """COLMAP pixels ``[m, 2]`` of the full image -> pixel-centre coordinates of the crop."""
    return xy * np.asarray(scale) - 0.5 - np.asarray(offset)


def inside(xy: np.ndarray, hw: tuple[int, int], margin: float = 0.0) -> np.ndarray:
    """Points ``[m, 2]`` inside an ``hw`` image (pixel-centre convention), ``margin`` px beyond its border allowed."""
    h, w = hw
    return (
        (xy[:, 0] >= -0.5 - margin)
        & (xy[:, 0] <= w - 0.5 + margin)
        & (xy[:, 1] >= -0.5 - margin)
        & (xy[:, 1] <= h - 0.5 + margin)
    )


def one_per_cell(xy: np.ndarray, valid: np.ndarray, cell: int) -> np.ndarray:
    """``valid`` with all but the first valid point of each ``cell`` px cell cleared."""
    keep = np.zeros_like(valid)
    idx = np.nonzero(valid)[0]
    if len(idx):
        c = np.floor((xy[idx] + 0.5) / cell).astype(np.int64)
        _, first = np.unique(c[:, 1] * 1_000_003 + c[:, 0], return_index=True)
        keep[idx[first]] = True
    return keep


class SfMViews(Dataset):
    """Item ``i``: ``n_views`` views of one reconstructed scene (keys in the module docstring).

    Args:
        cache: reconstruction cache folder (or one scene folder) of ``training.data.reconstruct``.
        n_views: 2 for stage-1 pairs, ``L`` for stage-2 sequences.
        hw: ``(H, W)`` of every view.
        length: virtual length; items are generated from ``(seed, i)``.
        seed: base seed (also of the sequence selection).
        cfg: selection / ground-truth settings.
        scenes: only these scene names (default: every scene of the cache).
    """

    def __init__(
        self,
        cache: str | Path,
        n_views: int,
        hw: tuple[int, int],
        length: int,
        seed: int = 0,
        cfg: SfMConfig | None = None,
        scenes: list[str] | None = None,
    ) -> None:
        if n_views < 2:
            raise BadInputError(f"n_views must be >= 2, got {n_views}")
        self.n, self.hw, self.length, self.seed = n_views, tuple(hw), length, seed
        self.cfg = cfg or SfMConfig()
        self.redrawn = 0  # samples redrawn for too few correspondences (per process)
        files = scene_files(cache)
        if scenes is not None:
            files = [f for f in files if f.parent.name in set(scenes)]
            if not files:
                raise BadInputError(f"none of the scenes {scenes} is in the SfM cache {cache}")
        self.scenes = [s for k, f in enumerate(files) if (s := self._load(f, k)) is not None]
        if not self.scenes:
            kind = "pairs" if n_views == 2 else f"{n_views}-view sequences"
            raise BadInputError(f"no {kind} with covisibility in {self.cfg.overlap} in the SfM cache {cache}")
        log.info(
            "SfM: %d scenes, %d samples of %d views (%s)",
            len(self.scenes),
            sum(len(s.samples) for s in self.scenes),
            n_views,
            ", ".join(f"{s.name} {len(s.samples)}" for s in self.scenes),
        )

    def _load(self, path: Path, k: int) -> SfMScene | None:
        index = load_index(path)
        refuse_evaluation_paths([str(index["source"]), path.parent], "SfM scene")
        image_dir = path.parent / "undistorted" / "images"
        if not image_dir.is_dir():
            raise MissingFileError(f"SfM scene images not found: {image_dir}")
        covis, shared, cfg = index["covisibility"], index["shared"], self.cfg
        if self.n == 2:
            samples = select_pairs(covis, shared, cfg.overlap, cfg.min_shared)
        else:
            rng = np.random.default_rng([self.seed, k])
            samples = select_sequences(covis, shared, self.n, cfg.overlap, cfg.min_shared, cfg.per_head, rng)
        if len(samples) == 0:
            log.info("SfM scene %s: no usable %d-view samples", path.parent.name, self.n)
            return None
        order = np.argsort(index["obs_image"], kind="stable")
        start = np.searchsorted(index["obs_image"][order], np.arange(len(index["names"]) + 1))
        return SfMScene(path.parent.name, image_dir, index, samples, start, order)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        for _ in range(self.cfg.max_redraws + 1):
            scene = self.scenes[rng.integers(len(self.scenes))]
            ids = scene.samples[rng.integers(len(scene.samples))].copy()
            if self.n == 2 and rng.random() < 0.5:
                ids = ids[::-1].copy()  # either image may be the reference of a pair
            item = self.item(scene, ids, rng)
            if int((item["track_valid"][0] & item["track_valid"][1:].any(0)).sum()) >= self.cfg.min_tracks:
                return item
            self.redrawn += 1
            log.debug("SfM sample %s %s: too few correspondences in the crops, redrawn", scene.name, ids.tolist())
        raise BadInputError(
            f"{self.cfg.max_redraws + 1} SfM samples in a row had fewer than {self.cfg.min_tracks} "
            f"correspondences inside {self.hw} crops; lower min_tracks or use a larger training_res"
        )

    def observations(self, scene: SfMScene, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Point ids ``[m]`` and COLMAP pixels ``[m, 2]`` observed by image ``k``."""
        sel = scene.obs_order[scene.obs_start[k] : scene.obs_start[k + 1]]
        return scene.index["obs_point"][sel], scene.index["obs_xy"][sel].astype(np.float64)

    def item(self, scene: SfMScene, ids: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """The views ``ids`` of ``scene`` (view 0 = reference) as a training item."""
        ix, cfg, hw = scene.index, self.cfg, self.hw
        xyz = ix["xyz"]
        images, depths, Ks, Ts, tracks, valid = [], [], [], [], [], []
        ref_points, X_centre = None, None
        for v, k in enumerate(ids):
            K0, T = ix["K"][k], ix["T_cam_world"][k]
            centre = None
            if X_centre is not None:
                Xc = T[:3, :3] @ X_centre + T[:3, 3]
                if Xc[2] > 1e-6:
                    p = K0 @ (Xc / Xc[2])
                    centre = (float(p[0]), float(p[1]))
            scale, (nh, nw), offset = view_transform(tuple(ix["hw"][k]), hw, centre)
            pid, xy = self.observations(scene, k)
            xy_crop = to_crop(xy, scale, offset)
            if v == 0:
                seen = inside(xy_crop, hw)
                ref_points = pid[seen][rng.permutation(int(seen.sum()))]
                if len(ref_points):
                    X_centre = np.median(xyz[ref_points], axis=0)
            # this view's keypoint of each reference point (-1 = not observed by this view)
            lut = np.full(len(xyz), -1, dtype=np.int64)
            lut[pid] = np.arange(len(pid))
            j = lut[ref_points]
            pts = np.zeros((len(ref_points), 2))
            pts[j >= 0] = xy_crop[j[j >= 0]]
            ok = (j >= 0) & inside(pts, hw)
            tracks.append(pts)
            valid.append(ok)
            # depth from every 3D point this view observes (a border band too, so the crop edges are covered)
            near = inside(xy_crop, hw, cfg.depth.max_edge)
            z = (xyz[pid[near]] @ T[:3, :3].T + T[:3, 3])[:, 2]
            depths.append(depth_map(xy_crop[near], z, hw, cfg.depth))
            images.append(self.read(scene, k, (nh, nw), offset))
            Ks.append(adjust_intrinsics(K0, scale, offset))
            Ts.append(T)
        tracks_a, valid_a, point_a = self.thin(np.stack(tracks), np.stack(valid), ref_points)
        return {
            "images": torch.from_numpy(np.stack(images))[:, None].float() / 255.0,
            "depth": torch.from_numpy(np.stack(depths)).float(),
            "K": torch.from_numpy(np.stack(Ks)).float(),
            "T_cam_world": torch.from_numpy(np.stack(Ts)).float(),
            "tracks": torch.from_numpy(tracks_a).float(),
            "track_valid": torch.from_numpy(valid_a),
            "track_point": torch.from_numpy(point_a),
        }

    def thin(
        self, tracks: np.ndarray, valid: np.ndarray, points: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One track per cell of each view, those seen in another view first, padded to ``max_tracks``;
        also returns the tracks' 3D point ids (-1 = padding)."""
        valid[0] = one_per_cell(tracks[0], valid[0], self.cfg.cell)
        for v in range(1, len(tracks)):
            valid[v] = one_per_cell(tracks[v], valid[v] & valid[0], self.cfg.cell)
        keep = np.nonzero(valid[0])[0]
        seen_elsewhere = valid[1:, keep].any(0)
        keep = np.concatenate([keep[seen_elsewhere], keep[~seen_elsewhere]])[: self.cfg.max_tracks]
        m = self.cfg.max_tracks
        out_t = np.zeros((len(tracks), m, 2), dtype=np.float32)
        out_v = np.zeros((len(tracks), m), dtype=bool)
        out_t[:, : len(keep)] = tracks[:, keep]
        out_v[:, : len(keep)] = valid[:, keep]
        out_p = np.full(m, -1, dtype=np.int64)
        out_p[: len(keep)] = points[keep]
        return out_t, out_v, out_p

    def read(self, scene: SfMScene, k: int, size_hw: tuple[int, int], offset: tuple[int, int]) -> np.ndarray:
        """Image ``k`` grey, resized to ``size_hw`` and cropped to ``hw`` at ``offset``."""
        path = scene.image_dir / str(scene.index["names"][k])
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise MissingFileError(f"SfM scene image missing or unreadable: {path}")
        nh, nw = size_hw
        interp = cv2.INTER_AREA if nh < img.shape[0] else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
        x0, y0 = offset
        h, w = self.hw
        return img[y0 : y0 + h, x0 : x0 + w]
