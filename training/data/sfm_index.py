"""A reconstruction as a training index: cameras, observations, covisibility, pairs, sequences.

``scene.npz`` (no pickles) holds, for ``n`` registered images, ``P`` 3D points and ``M``
observations of them (an image's keypoint that belongs to a 3D point):

* ``names [n]`` image files of ``undistorted/images``; ``hw [n, 2]`` their ``(H, W)``;
* ``K [n, 3, 3]`` PINHOLE intrinsics in COLMAP's convention (the image's top-left *corner* is (0, 0));
* ``T_cam_world [n, 4, 4]`` world-to-camera poses;
* ``xyz [P, 3]`` points, ``error [P]`` their mean reprojection error (px);
* ``obs_image [M]``, ``obs_point [M]``, ``obs_xy [M, 2]`` observations (COLMAP convention);
* ``shared [n, n]`` 3D points seen by both images, ``covisibility [n, n]``: ``shared`` divided by
  the larger of the two images' point counts (the smaller of the two one-sided overlaps of
  D2-Net / MegaDepth's ``pair_infos``), 1 on the diagonal.

Only observations within ``max_error`` px of their point's projection enter the index
(:func:`build_index`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from models.errors import BadInputError, MissingFileError

INDEX_KEYS = ("names", "hw", "K", "T_cam_world", "xyz", "error", "obs_image", "obs_point", "obs_xy", "shared")


def covisibility(
    obs_image: np.ndarray, obs_point: np.ndarray, n_images: int, n_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Shared-point counts ``[n, n]`` and covisibility ``[n, n]`` from observations ``[M]``.

    An image observes a point at most once in COLMAP; duplicates are counted once here anyway.
    """
    incidence = np.zeros((n_images, n_points), dtype=np.float32)
    incidence[obs_image, obs_point] = 1.0
    shared = (incidence @ incidence.T).round().astype(np.int64)
    count = np.diag(shared)
    denom = np.maximum(count[:, None], count[None, :]).clip(min=1)
    covis = shared / denom
    np.fill_diagonal(covis, 1.0)
    return shared, covis.astype(np.float32)


def reprojection_error(index: dict) -> np.ndarray:
    """Distance (px) of every observation ``[M]`` to the projection of its 3D point."""
    T = index["T_cam_world"][index["obs_image"]]
    Xc = np.einsum("mij,mj->mi", T[:, :3, :3], index["xyz"][index["obs_point"]]) + T[:, :3, 3]
    p = np.einsum("mij,mj->mi", index["K"][index["obs_image"]], Xc)
    z = p[:, 2:]
    return np.linalg.norm(p[:, :2] / np.where(np.abs(z) < 1e-12, 1e-12, z) - index["obs_xy"], axis=1)


def build_index(model_dir: str | Path, scene: str, source: str | Path, max_error: float = 2.0) -> dict:
    """The index dict of an (undistorted, PINHOLE) COLMAP model folder.

    Observations farther than ``max_error`` px from their point's projection (or behind the
    camera) are dropped, then points left with fewer than two observations; ``error`` is the
    mean reprojection error of a point's kept observations.
    """
    import pycolmap

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise MissingFileError(f"COLMAP model folder not found: {model_dir}")
    rec = pycolmap.Reconstruction(model_dir)
    ids = sorted(rec.reg_image_ids())
    if len(ids) < 2:
        raise BadInputError(f"{model_dir}: {len(ids)} registered images, a training scene needs 2")
    point_ids = np.array(sorted(rec.points3D), dtype=np.int64)
    xyz = np.array([rec.points3D[p].xyz for p in point_ids], dtype=np.float64).reshape(-1, 3)
    row = np.full(int(point_ids.max(initial=0)) + 1, -1, dtype=np.int64)
    row[point_ids] = np.arange(len(point_ids))
    names, hw, Ks, Ts, obs = [], [], [], [], []
    for k, image_id in enumerate(ids):  # a loop over images; their observations are arrays
        image = rec.images[image_id]
        cam = rec.cameras[image.camera_id]
        if cam.model_name not in ("PINHOLE", "SIMPLE_PINHOLE"):
            raise BadInputError(f"{model_dir}: camera {cam.model_name} of {image.name} is not undistorted")
        names.append(image.name)
        hw.append((cam.height, cam.width))
        Ks.append(cam.calibration_matrix())
        T = np.eye(4)
        T[:3] = image.cam_from_world().matrix()
        Ts.append(T)
        pts = [(p.point3D_id, *p.xy) for p in image.points2D if p.has_point3D()]
        if pts:
            arr = np.array(pts, dtype=np.float64)
            obs.append((np.full(len(arr), k), row[arr[:, 0].astype(np.int64)], arr[:, 1:]))
    if not obs:
        raise BadInputError(f"{model_dir}: no image observes a 3D point")
    index = {
        "K": np.stack(Ks).astype(np.float64),
        "T_cam_world": np.stack(Ts).astype(np.float64),
        "xyz": xyz,
        "obs_image": np.concatenate([o[0] for o in obs]).astype(np.int64),
        "obs_point": np.concatenate([o[1] for o in obs]).astype(np.int64),
        "obs_xy": np.concatenate([o[2] for o in obs]),
    }
    err = reprojection_error(index)
    T = index["T_cam_world"][index["obs_image"]]
    z = np.einsum("mj,mj->m", T[:, 2, :3], xyz[index["obs_point"]]) + T[:, 2, 3]
    ok = (err <= max_error) & (z > 0)
    count = np.bincount(index["obs_point"][ok], minlength=len(xyz))
    ok &= count[index["obs_point"]] >= 2
    keep = count >= 2
    compact = np.cumsum(keep) - 1
    obs_image, obs_point = index["obs_image"][ok].astype(np.int32), compact[index["obs_point"][ok]].astype(np.int32)
    mean_err = np.bincount(obs_point, weights=err[ok], minlength=int(keep.sum())) / count[keep]
    shared, _ = covisibility(obs_image, obs_point, len(ids), int(keep.sum()))
    return {
        "scene": np.array(scene),
        "source": np.array(str(source)),
        "names": np.array(names),
        "hw": np.array(hw, dtype=np.int32),
        "K": index["K"],
        "T_cam_world": index["T_cam_world"],
        "xyz": xyz[keep],
        "error": mean_err.astype(np.float32),
        "obs_image": obs_image,
        "obs_point": obs_point,
        "obs_xy": index["obs_xy"][ok].astype(np.float32),
        "shared": shared.astype(np.int32),
    }


def save_index(path: str | Path, index: dict) -> None:
    """Write ``scene.npz`` (compressed, no pickles)."""
    np.savez_compressed(path, **index)


def load_index(path: str | Path) -> dict:
    """Read ``scene.npz``; adds ``covisibility`` computed from ``shared``."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"SfM scene index not found: {path} (run `python -m training.data.reconstruct`)")
    try:
        with np.load(path, allow_pickle=False) as f:
            index = {k: f[k] for k in f.files}
    except (OSError, ValueError) as err:
        raise BadInputError(f"cannot read SfM scene index {path}: {err}") from None
    missing = [k for k in INDEX_KEYS if k not in index]
    if missing:
        raise BadInputError(f"{path} lacks the SfM index keys {missing}")
    shared = index["shared"].astype(np.float64)
    count = np.diag(shared)
    covis = shared / np.maximum(count[:, None], count[None, :]).clip(min=1)
    np.fill_diagonal(covis, 1.0)
    index["covisibility"] = covis.astype(np.float32)
    return index


def select_pairs(covis: np.ndarray, shared: np.ndarray, overlap: tuple[float, float], min_shared: int) -> np.ndarray:
    """Image pairs ``[M, 2]`` (``i < j``) with covisibility in ``overlap`` and >= ``min_shared`` points."""
    lo, hi = overlap
    ok = (covis >= lo) & (covis <= hi) & (shared >= min_shared)
    i, j = np.nonzero(np.triu(ok, 1))
    return np.stack([i, j], 1).astype(np.int64)


def select_sequences(
    covis: np.ndarray,
    shared: np.ndarray,
    seq_len: int,
    overlap: tuple[float, float],
    min_shared: int,
    per_head: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Sequences ``[S, seq_len]``: a reference (view 0) and ``seq_len - 1`` distinct partners, each
    with covisibility in ``overlap`` with the reference (as :mod:`training.make_sequences` does for
    MegaDepth). Each image with enough partners heads up to ``per_head`` distinct sequences."""
    lo, hi = overlap
    ok = (covis >= lo) & (covis <= hi) & (shared >= min_shared)
    np.fill_diagonal(ok, False)
    seqs = []
    for head in np.nonzero(ok.sum(1) >= seq_len - 1)[0]:  # a loop over images, not points
        cand = np.nonzero(ok[head])[0]
        seen: set[frozenset] = set()
        for _ in range(per_head):
            pick = rng.choice(cand, seq_len - 1, replace=False)
            if frozenset(pick.tolist()) in seen:
                continue
            seen.add(frozenset(pick.tolist()))
            seqs.append([head, *pick])
    return np.asarray(seqs, dtype=np.int64).reshape(-1, seq_len)
