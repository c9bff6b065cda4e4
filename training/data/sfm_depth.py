"""Per-image depth maps from the sparse depth of a reconstruction's 3D points.

``interpolated``: the points' pixels are Delaunay-triangulated and the depth inside each triangle
is interpolated linearly in inverse depth (exact for a planar facet seen in perspective). A
triangle is kept only when it is small (longest edge <= ``max_edge`` px) and its three depths
agree (max / min <= ``max_ratio``), so no surface is invented across a depth discontinuity or an
empty region; elsewhere the depth is 0 (unknown), as in MegaDepth's depth maps.
``sparse``: each point's depth at its nearest pixel only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial import Delaunay, QhullError


@dataclass
class DepthConfig:
    """How sparse point depths become a depth map (pixels of the training view)."""

    mode: Literal["interpolated", "sparse"] = "interpolated"
    max_edge: float = 48.0  # longest triangle edge (px) that is still interpolated
    max_ratio: float = 1.1  # largest depth ratio within a triangle


def splat_depth(xy: np.ndarray, z: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Depth ``[H, W]`` with each point's ``z`` at its nearest pixel (the nearest point wins), 0 elsewhere.

    ``xy [m, 2]`` pixel-centre coordinates, ``z [m]`` depths.
    """
    h, w = hw
    depth = np.zeros((h, w), dtype=np.float32)
    ij = np.round(xy).astype(np.int64)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h) & (z > 0)
    order = np.argsort(-z[ok])  # far first: nearer points overwrite
    depth[ij[ok][order, 1], ij[ok][order, 0]] = z[ok][order]
    return depth


def interpolate_depth(xy: np.ndarray, z: np.ndarray, hw: tuple[int, int], cfg: DepthConfig) -> np.ndarray:
    """Depth ``[H, W]`` float32 (0 = unknown) from points ``xy [m, 2]`` (pixel centres) of depth ``z [m]``."""
    keep = z > 0
    xy, z = xy[keep].astype(np.float64), z[keep].astype(np.float64)
    if len(z) < 3:
        return splat_depth(xy, z, hw)
    try:
        tri = Delaunay(xy)
    except QhullError:  # all points on a line: nothing to interpolate
        return splat_depth(xy, z, hw)
    v = tri.simplices  # [T, 3]
    corners = xy[v]  # [T, 3, 2]
    edges = np.linalg.norm(corners - np.roll(corners, 1, axis=1), axis=-1).max(1)
    zt = z[v]
    good = (edges <= cfg.max_edge) & (zt.max(1) <= cfg.max_ratio * zt.min(1))
    return rasterise(corners[good], zt[good], hw)


def rasterise(corners: np.ndarray, zt: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Depth ``[H, W]`` of triangles ``corners [T, 3, 2]`` (pixel centres) with vertex depths ``zt [T, 3]``.

    Each pixel centre inside a triangle gets the linear interpolation of inverse depth; candidates
    are the pixels of each triangle's bounding box (all triangles at once, no loop).
    """
    h, w = hw
    out = np.zeros(h * w, dtype=np.float32)
    if len(corners) == 0:
        return out.reshape(h, w)
    lo = np.clip(np.ceil(corners.min(1)), 0, [w, h]).astype(np.int64)  # [T, 2]
    hi = np.clip(np.floor(corners.max(1)), -1, [w - 1, h - 1]).astype(np.int64)
    size = np.maximum(hi - lo + 1, 0)  # [T, 2] (bw, bh)
    count = size[:, 0] * size[:, 1]
    tri = np.repeat(np.arange(len(corners)), count)
    local = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    px = lo[tri, 0] + local % size[tri, 0].clip(min=1)
    py = lo[tri, 1] + local // size[tri, 0].clip(min=1)
    a = corners[:, 0]
    edge = np.stack([corners[:, 1] - a, corners[:, 2] - a], -1)  # [T, 2, 2] columns b - a, c - a
    det = edge[:, 0, 0] * edge[:, 1, 1] - edge[:, 0, 1] * edge[:, 1, 0]
    ok_tri = np.abs(det) > 1e-9
    det = np.where(ok_tri, det, 1.0)
    inv = np.stack([np.stack([edge[:, 1, 1], -edge[:, 0, 1]], -1), np.stack([-edge[:, 1, 0], edge[:, 0, 0]], -1)], 1)
    inv = inv / det[:, None, None]  # [T, 2, 2]
    d = np.stack([px, py], 1) - a[tri]
    uv = np.einsum("kij,kj->ki", inv[tri], d)
    eps = 1e-9
    hit = ok_tri[tri] & (uv[:, 0] >= -eps) & (uv[:, 1] >= -eps) & (uv.sum(1) <= 1 + eps)
    bary = np.concatenate([1 - uv.sum(1, keepdims=True), uv], 1)[hit]  # weights of vertices a, b, c
    inv_z = (bary / zt[tri[hit]]).sum(1)
    out[py[hit] * w + px[hit]] = (1.0 / np.maximum(inv_z, 1e-12)).astype(np.float32)
    return out.reshape(h, w)


def depth_map(xy: np.ndarray, z: np.ndarray, hw: tuple[int, int], cfg: DepthConfig) -> np.ndarray:
    """The depth map of :class:`DepthConfig` ``cfg.mode`` (see the module docstring)."""
    if cfg.mode == "sparse":
        return splat_depth(xy, z, hw)
    return interpolate_depth(xy, z, hw, cfg)
