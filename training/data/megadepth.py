"""MegaDepth pairs (stage 1) and sequences (stage 2): images with depth, intrinsics and poses.

Layout (the standard one of D2-Net / LoFTR, ``ROOT`` = ``--data``)::

    ROOT/Undistorted_SfM/<scene>/images/<name>.jpg
    ROOT/phoenix/S6/zl548/MegaDepth_v1/<scene>/dense0/depths/<name>.h5    dataset "depth", 0 = unknown
    INDEX/<scene>_<lo>_<hi>.npz     scene info: a pickled dict (or .npz) of image_paths, depth_paths,
                                    intrinsics [3x3], poses [4x4 world-to-camera] (one entry per image,
                                    None for images without a reconstruction) and pair_infos
                                    [((i, j), overlap, central_matches), ...]
    INDEX/<scene>.npz               sequence index (``python -m training.make_sequences``): the same
                                    arrays plus sequence_infos [S, L] (view 0 = reference) and
                                    sequence_scores [S, L-1]

``INDEX`` is ``--scene_info``: the official ``scene_info_0.1_0.7`` for pairs, or
``sequence_indices_0.1_0.7_s5`` for sequences (pairs can also be drawn from a sequence index:
the reference with each other view). Depth files are also found in the reference
implementation's ``ROOT/depth_undistorted/<scene>/<name>.h5`` layout.

Conventions: MegaDepth intrinsics follow COLMAP (the top-left *corner* of the image is (0, 0));
items follow :mod:`models.conventions` (the *centre* of the top-left pixel is (0, 0)), so the
principal point moves by -0.5 px. Each view is resized (aspect kept) to cover ``hw`` and cropped;
the reference view is cropped at its centre, the others around the projection of the reference's
central 3D point, which keeps the crops overlapping.

Item ``i`` is drawn from a RNG seeded by ``(seed, i)`` (reproducible, resumable), like
:class:`training.data.homography.HomographyViews`: a scene uniformly, then a pair / sequence of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from models.errors import BadInputError, MissingFileError

log = logging.getLogger(__name__)

INDEX_SUFFIXES = (".npz", ".npy", ".pkl", ".pickle")
DEPTH_PREFIX = "phoenix/S6/zl548/MegaDepth_v1"


@dataclass
class Scene:
    """One scene's per-image arrays (indexed by image id) and its samples ``[M, n]`` of image ids."""

    name: str
    image_paths: np.ndarray
    depth_paths: np.ndarray
    intrinsics: np.ndarray
    poses: np.ndarray
    samples: np.ndarray


def load_index(path: str | Path) -> dict:
    """Read one scene-info / sequence-index file (pickled dict or .npz) as a dict."""
    path = Path(path)
    try:
        obj = np.load(path, allow_pickle=True)
    except Exception as err:  # noqa: BLE001 - any failure means an unreadable index file
        raise BadInputError(f"cannot read MegaDepth index file {path}: {type(err).__name__}: {err}") from None
    if isinstance(obj, np.lib.npyio.NpzFile):
        with obj:
            obj = {k: obj[k] for k in obj.files}
    elif isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
        obj = obj.item()
    if not isinstance(obj, dict):
        raise BadInputError(f"{path} is not a MegaDepth scene-info dict (got {type(obj).__name__})")
    missing = [k for k in ("image_paths", "depth_paths", "intrinsics", "poses") if k not in obj]
    if missing:
        raise BadInputError(f"{path} lacks the scene-info keys {missing}")
    return obj


def index_files(index: str | Path) -> list[Path]:
    """The index files of a folder (sorted), or ``[index]`` for a single file."""
    index = Path(index)
    if index.is_file():
        return [index]
    if not index.is_dir():
        raise MissingFileError(f"MegaDepth scene-info / sequence-index folder not found: {index}")
    files = sorted(p for p in index.iterdir() if p.suffix in INDEX_SUFFIXES)
    if not files:
        raise BadInputError(f"no scene-info files (*.npz) in {index}")
    return files


def pair_samples(info: dict, overlap: tuple[float, float]) -> np.ndarray:
    """Image-id pairs ``[M, 2]`` whose overlap lies in ``overlap`` (both images reconstructed)."""
    lo, hi = overlap
    paths = info["image_paths"]
    if "pair_infos" in info:
        pairs = [tuple(int(k) for k in p[0]) for p in info["pair_infos"] if lo <= float(p[1]) <= hi]
    elif "sequence_infos" in info:  # reference with each other view of every sequence
        seqs = np.asarray(info["sequence_infos"])
        pairs = [(int(s[0]), int(t)) for s in seqs for t in s[1:]]
    else:
        pairs = []
    pairs = [p for p in pairs if paths[p[0]] is not None and paths[p[1]] is not None]
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def sequence_samples(info: dict, n_views: int, path: Path) -> np.ndarray:
    """The first ``n_views`` ids of each sequence ``[S, n_views]`` of a sequence index."""
    if "sequence_infos" not in info:
        raise BadInputError(
            f"{path} has no sequence_infos: build {n_views}-view sequences with "
            f"`python -m training.make_sequences --scene_info DIR --out DIR --seq_len {n_views}`"
        )
    seqs = np.asarray(info["sequence_infos"], dtype=np.int64).reshape(len(info["sequence_infos"]), -1)
    if len(seqs) and seqs.shape[1] < n_views:
        raise BadInputError(f"{path} holds sequences of {seqs.shape[1]} views, {n_views} are needed")
    return seqs[:, :n_views]


def adjust_intrinsics(K: np.ndarray, scale: tuple[float, float], offset: tuple[int, int]) -> np.ndarray:
    """COLMAP ``K`` of an image resized by ``(sx, sy)`` and cropped at ``(x0, y0)``, in pixel-centre convention."""
    sx, sy = scale
    x0, y0 = offset
    out = np.array(K, dtype=np.float64)
    out[0] *= sx
    out[1] *= sy
    out[0, 2] -= x0 + 0.5
    out[1, 2] -= y0 + 0.5
    return out


def fit_view(
    image: np.ndarray, depth: np.ndarray, K: np.ndarray, hw: tuple[int, int], centre: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize ``image``/``depth`` (aspect kept) to cover ``hw``, crop ``hw`` around ``centre``.

    ``centre`` is ``(x, y)`` in original pixels (default: the image centre); ``K`` is MegaDepth's
    (COLMAP convention). Returns the ``uint8`` image, the depth (nearest-resized, 0 = unknown)
    and ``K`` of the crop in the pixel-centre convention of :mod:`models.conventions`.
    """
    h, w = hw
    h0, w0 = image.shape[:2]
    if depth.shape != image.shape[:2]:  # never in MegaDepth; keep the geometry of the image
        depth = cv2.resize(depth, (w0, h0), interpolation=cv2.INTER_NEAREST_EXACT)
    s = max(h / h0, w / w0)
    nh, nw = max(h, round(h0 * s)), max(w, round(w0 * s))
    sx, sy = nw / w0, nh / h0
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, (nw, nh), interpolation=interp)
    # EXACT: the source pixel containing each target pixel centre (plain NEAREST is off by up to 1/2 px)
    depth = cv2.resize(depth, (nw, nh), interpolation=cv2.INTER_NEAREST_EXACT)
    cx, cy = (w0 / 2, h0 / 2) if centre is None else centre
    x0 = int(np.clip(round(cx * sx - w / 2), 0, nw - w))
    y0 = int(np.clip(round(cy * sy - h / 2), 0, nh - h))
    K = adjust_intrinsics(K, (sx, sy), (x0, y0))
    return image[y0 : y0 + h, x0 : x0 + w], depth[y0 : y0 + h, x0 : x0 + w], K


def central_point(depth: np.ndarray, K: np.ndarray, T_cam_world: np.ndarray) -> np.ndarray | None:
    """World point seen at the image centre (median known depth of the central 10 %), or None."""
    h, w = depth.shape
    win = depth[int(h * 0.45) : int(h * 0.55) + 1, int(w * 0.45) : int(w * 0.55) + 1]
    z = win[win > 0]
    if len(z) == 0:
        return None
    X_cam = np.linalg.solve(K, np.array([w / 2, h / 2, 1.0])) * float(np.median(z))
    return np.linalg.solve(T_cam_world, np.append(X_cam, 1.0))[:3]


def project(X_world: np.ndarray | None, K: np.ndarray, T_cam_world: np.ndarray) -> tuple[float, float] | None:
    """Pixel (COLMAP convention) of a world point, or None when it is behind the camera."""
    if X_world is None:
        return None
    X = T_cam_world[:3, :3] @ X_world + T_cam_world[:3, 3]
    if X[2] <= 1e-6:
        return None
    p = K @ (X / X[2])
    return float(p[0]), float(p[1])


def read_image(path: Path) -> np.ndarray:
    """Grey ``uint8`` image; a missing file is a :class:`MissingFileError`."""
    if not path.is_file():
        raise MissingFileError(f"MegaDepth image not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise BadInputError(f"cannot decode MegaDepth image: {path}")
    return img


def read_depth(path: Path) -> np.ndarray:
    """Depth map ``float32 [H, W]`` from a MegaDepth h5 file (dataset ``depth``)."""
    try:
        with h5py.File(path, "r") as f:
            depth = np.asarray(f["depth"], dtype=np.float32)
    except (OSError, KeyError) as err:
        raise BadInputError(f"cannot read MegaDepth depth file {path}: {err}") from None
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0).astype(np.float32)


class MegaDepthViews(Dataset):
    """Item ``i``: ``images [n, 1, H, W]`` in [0, 1], ``depth [n, H, W]`` (0 = unknown),
    ``K [n, 3, 3]`` and ``T_cam_world [n, 4, 4]`` (float32), the keys of :func:`training.warping.warp_item`.

    Args:
        root: MegaDepth root (holds ``Undistorted_SfM/`` and ``phoenix/``).
        scene_info: folder (or one file) of scene-info files (pairs) or sequence indices.
        n_views: 2 for stage-1 pairs, ``L`` for stage-2 sequences (needs a sequence index).
        hw: ``(H, W)`` of every view.
        length: virtual length; items are generated from ``(seed, i)``.
        seed: base seed.
        overlap: accepted overlap range of pairs (the official filter is 0.1-0.7).
        max_missing: depth files missing in a row before giving up; a missing depth costs one
            resample (with a warning, counted in ``self.skipped``, per process: each data-loader
            worker counts its own), a missing image is an error.
    """

    def __init__(
        self,
        root: str | Path,
        scene_info: str | Path | None,
        n_views: int,
        hw: tuple[int, int],
        length: int,
        seed: int = 0,
        overlap: tuple[float, float] = (0.1, 0.7),
        max_missing: int = 20,
    ) -> None:
        if n_views < 2:
            raise BadInputError(f"n_views must be >= 2, got {n_views}")
        if not scene_info:
            raise BadInputError(
                "--scene_info is required with --data_kind megadepth "
                "(e.g. ROOT/scene_info_0.1_0.7 or ROOT/sequence_indices_0.1_0.7_s5)"
            )
        self.root = Path(root)
        if not self.root.is_dir():
            raise MissingFileError(f"MegaDepth root not found: {self.root}")
        self.n, self.hw, self.length, self.seed = n_views, tuple(hw), length, seed
        self.max_missing, self.skipped = max_missing, 0
        self.scenes = self._load_scenes(index_files(scene_info), overlap)
        self._probe()

    def _load_scenes(self, files: list[Path], overlap: tuple[float, float]) -> list[Scene]:
        scenes = []
        for path in files:
            info = load_index(path)
            samples = pair_samples(info, overlap) if self.n == 2 else sequence_samples(info, self.n, path)
            if len(samples) == 0:
                log.info("MegaDepth index %s: no usable %d-view samples", path.name, self.n)
                continue
            scenes.append(
                Scene(
                    path.stem,
                    *(np.asarray(info[k], dtype=object) for k in ("image_paths", "depth_paths", "intrinsics", "poses")),
                    samples,
                )
            )
        if not scenes:
            kind = f"pairs with overlap in {overlap[0]}-{overlap[1]}" if self.n == 2 else f"{self.n}-view sequences"
            raise BadInputError(f"no {kind} in the MegaDepth index files: {files[0].parent}")
        log.info(
            "MegaDepth: %d scenes, %d samples of %d views", len(scenes), sum(len(s.samples) for s in scenes), self.n
        )
        return scenes

    def _probe(self) -> None:
        """Fail at once (not inside the data loader) when the root does not hold the indexed files."""
        scene = self.scenes[0]
        first = int(scene.samples[0, 0])
        image = self.root / scene.image_paths[first]
        if not image.is_file():
            raise MissingFileError(
                f"MegaDepth image not found: {image} (is {self.root} the MegaDepth root holding Undistorted_SfM/?)"
            )
        ids = np.unique(scene.samples[:16])
        if not any(self.depth_path(scene, int(k)).is_file() for k in ids):
            raise MissingFileError(
                f"MegaDepth depth file not found: {self.depth_path(scene, first)} (no depth "
                f"for {len(ids)} images of scene {scene.name}; is {self.root} the MegaDepth root?)"
            )

    def depth_path(self, scene: Scene, k: int) -> Path:
        """Depth file of image ``k``: the indexed path, else the ``depth_undistorted`` layout."""
        rel = str(scene.depth_paths[k])
        path = self.root / rel
        if not path.is_file() and rel.startswith(DEPTH_PREFIX):
            parts = rel.split("/")
            alt = self.root / "depth_undistorted" / parts[4] / parts[-1]
            if alt.is_file():
                return alt
        return path

    def __len__(self) -> int:
        return self.length

    def _draw(self, rng: np.random.Generator) -> tuple[Scene, np.ndarray]:
        scene = self.scenes[rng.integers(len(self.scenes))]
        ids = scene.samples[rng.integers(len(scene.samples))].copy()
        if self.n == 2 and rng.random() < 0.5:
            ids = ids[::-1].copy()  # either image may be the reference of a pair
        return scene, ids

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i])
        for _ in range(self.max_missing + 1):
            scene, ids = self._draw(rng)
            depth_files = [self.depth_path(scene, int(k)) for k in ids]
            missing = [p for p in depth_files if not p.is_file()]
            if not missing:
                return self._item(scene, ids, depth_files)
            self.skipped += 1
            log.warning("MegaDepth depth file missing, sample skipped (%d so far): %s", self.skipped, missing[0])
        raise MissingFileError(
            f"MegaDepth depth file not found: {missing[0]} ({self.max_missing + 1} samples "
            "in a row had missing depth files)"
        )

    def _item(self, scene: Scene, ids: np.ndarray, depth_files: list[Path]) -> dict[str, torch.Tensor]:
        raw = []
        for k, depth_file in zip(ids, depth_files):
            K = np.asarray(scene.intrinsics[k], dtype=np.float64)
            T = np.asarray(scene.poses[k], dtype=np.float64)
            raw.append((read_image(self.root / scene.image_paths[k]), read_depth(depth_file), K, T))
        X = central_point(raw[0][1], raw[0][2], raw[0][3])
        views = [
            fit_view(img, depth, K, self.hw, None if v == 0 else project(X, K, T))
            for v, (img, depth, K, T) in enumerate(raw)
        ]
        return {
            "images": torch.from_numpy(np.stack([v[0] for v in views]))[:, None].float() / 255.0,
            "depth": torch.from_numpy(np.stack([v[1] for v in views])).float(),
            "K": torch.from_numpy(np.stack([v[2] for v in views])).float(),
            "T_cam_world": torch.from_numpy(np.stack([r[3] for r in raw])).float(),
        }
