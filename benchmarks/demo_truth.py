"""Exact geometry of the built-in demo (:class:`vo_app.sources.demo.DemoSource`): depth by ray casting.

The demo scene is a set of textured planar rectangles (:class:`vo_app.sources.demo_render.Quad`),
so the surface seen at a pixel is found exactly by intersecting the pixel's ray with every quad:
the nearest front-facing hit inside its rectangle. This is what the renderer paints there (it
draws back-face-culled quads in painter's order, far to near) up to the rasteriser's edge
anti-aliasing, without rendering anything. Pixel convention (:mod:`models.conventions`): the
centre of the top-left pixel is ``(0, 0)``; poses are ``T_world_cam``; depth is the camera-frame
``z`` in metres.
"""

from __future__ import annotations

import numpy as np

from vo_app.sources.demo import DemoSource

NEAR = 0.1  # metres: the renderer's near plane


def quad_arrays(source: DemoSource, centre: np.ndarray) -> dict[str, np.ndarray]:
    """The scene's quads as arrays: ``origin, u, v, normal [Q, 3]`` and ``size [Q, 2]``."""
    quads = source.scene.quads(centre)
    return {
        "origin": np.stack([q.origin for q in quads]),
        "u": np.stack([q.u for q in quads]),
        "v": np.stack([q.v for q in quads]),
        "normal": np.stack([q.normal for q in quads]),
        "size": np.array([q.size for q in quads]),
    }


def depth_at(source: DemoSource, index: int, pixels: np.ndarray) -> np.ndarray:
    """Depth ``[N]`` (camera ``z``, m) of the surface seen at ``pixels [N, 2]`` in frame ``index``; inf = sky.

    Example:
        >>> src = DemoSource(num_frames=1)
        >>> float(depth_at(src, 0, np.array([[319.5, 470.0]]))[0]) < 10  # the ground below the horizon
        True
    """
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    pose = np.asarray(source.gt_poses[index])
    R, c = pose[:3, :3], pose[:3, 3]
    K = np.asarray(source.K)
    rays = np.c_[(pixels - K[:2, 2]) / K[[0, 1], [0, 1]], np.ones(len(pixels))] @ R.T  # [N, 3], z_cam = 1
    q = quad_arrays(source, c)
    front = np.einsum("qi,qi->q", q["normal"], c - q["origin"]) > 0  # the renderer culls back faces
    denom = rays @ q["normal"].T  # [N, Q]
    with np.errstate(divide="ignore", invalid="ignore"):  # rays parallel to a quad: inf, dropped below
        lam = np.einsum("qi,qi->q", q["normal"], q["origin"] - c)[None] / denom  # = depth along z_cam
        hit = c[None, None] + lam[..., None] * rays[:, None]  # [N, Q, 3]
        rel = hit - q["origin"][None]
        a, b = np.einsum("nqi,qi->nq", rel, q["u"]), np.einsum("nqi,qi->nq", rel, q["v"])
    inside = (a >= 0) & (a <= q["size"][None, :, 0]) & (b >= 0) & (b <= q["size"][None, :, 1])
    valid = front[None] & inside & np.isfinite(lam) & (lam > NEAR)
    return np.where(valid, lam, np.inf).min(axis=1) if len(q["origin"]) else np.full(len(pixels), np.inf)


def backproject(source: DemoSource, index: int, pixels: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """World points ``[N, 3]`` of ``pixels [N, 2]`` at ``depth [N]`` in frame ``index``."""
    pose = np.asarray(source.gt_poses[index])
    K = np.asarray(source.K)
    cam = np.c_[(pixels - K[:2, 2]) / K[[0, 1], [0, 1]], np.ones(len(pixels))] * depth[:, None]
    return cam @ pose[:3, :3].T + pose[:3, 3]


def project(source: DemoSource, index: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[N, 2]`` and depths ``[N]`` of world ``points [N, 3]``, point ``k`` in frame ``index[k]``."""
    poses = np.asarray(source.gt_poses)[np.asarray(index)]  # [N, 4, 4]
    cam = np.einsum("nji,nj->ni", poses[:, :3, :3], points - poses[:, :3, 3])  # R^T (X - c)
    K = np.asarray(source.K)
    z = cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        pix = cam[:, :2] / z[:, None] * K[[0, 1], [0, 1]] + K[:2, 2]
    return pix, z
