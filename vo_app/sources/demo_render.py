"""A small rasteriser for textured planar scenes, built on ``cv2.warpPerspective``.

A scene is a list of :class:`Quad` (a textured rectangle in 3D) drawn in painter's order
(the caller orders them: ground, then enclosing walls, then objects far to near; each quad
is back-face culled). Per quad and frame:

1. corners go to the camera frame; the polygon is clipped to the near plane and the view
   frustum (Sutherland-Hodgman), so nothing behind the camera is ever projected;
2. the polygon is cut into depth slabs; each slab picks a mip level of the texture from its
   texel-per-pixel density (distance and obliquity), which keeps far and grazing surfaces
   free of aliasing, and bounds the texture window a slab needs (~ the image width);
3. each slab is one ``warpPerspective`` of a periodic (mirror-tiled) texture into its
   bounding box, copied into the canvas under the polygon's mask.

Poses are ``T_world_cam`` (camera-to-world), camera x right, y down, z forward.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


class Quad:
    """A textured rectangle: points ``origin + a * u + b * v``, ``a in [0, size[0]]``, ``b in [0, size[1]]`` (m).

    ``u`` and ``v`` are orthonormal world vectors: the texture's right and down directions as
    seen by a viewer in front of the quad, so the visible side is the one ``v x u`` points to
    (the other side is culled). ``tex_offset`` (metres) shifts the texture so that copies of
    one texture do not look alike; ``gain`` scales its brightness (shading). Corners and normal
    are computed once.
    """

    __slots__ = ("origin", "u", "v", "size", "material", "tex_offset", "gain", "normal", "corners")

    def __init__(self, origin, u, v, size: tuple[float, float], material: str,
                 tex_offset: tuple[float, float] = (0.0, 0.0), gain: float = 1.0) -> None:
        self.origin, self.u, self.v = (np.asarray(x, dtype=np.float64) for x in (origin, u, v))
        self.size, self.material, self.tex_offset = (float(size[0]), float(size[1])), material, tex_offset
        self.gain = gain
        self.normal = np.cross(self.v, self.u)
        a, b = self.size
        self.corners = np.stack([self.origin, self.origin + a * self.u, self.origin + a * self.u + b * self.v,
                                 self.origin + b * self.v])


class Material:
    """A periodic texture (mirror-tiled, so seamless) with a mip pyramid and tiled copies."""

    def __init__(self, texture: np.ndarray, px_per_m: float) -> None:
        top = np.concatenate([texture, texture[:, ::-1]], 1)
        period = np.concatenate([top, top[::-1]], 0)
        self.levels = [period]
        while min(self.levels[-1].shape[:2]) >= 16:
            self.levels.append(cv2.pyrDown(self.levels[-1]))
        self.px_per_m = px_per_m
        self._tiled: dict[int, np.ndarray] = {}

    def tiled(self, level: int, need_w: int, need_h: int) -> np.ndarray:
        """Level ``level`` repeated to at least ``need_w x need_h`` texels (cached, grown on demand)."""
        have = self._tiled.get(level)
        if have is None or have.shape[1] < need_w or have.shape[0] < need_h:
            base = self.levels[level]
            reps = (math.ceil(max(need_h, have.shape[0] if have is not None else 0) / base.shape[0]) + 1,
                    math.ceil(max(need_w, have.shape[1] if have is not None else 0) / base.shape[1]) + 1)
            have = np.tile(base, reps + (1,) * (base.ndim - 2))
            self._tiled[level] = have
        return have

    def scale(self, level: int) -> tuple[float, float]:
        """Texels per metre along (u, v) at ``level`` (exact, from the level's size)."""
        h0, w0 = self.levels[0].shape[:2]
        h, w = self.levels[level].shape[:2]
        return self.px_per_m * w / w0, self.px_per_m * h / h0


def clip_polygon(poly: np.ndarray, normal: np.ndarray, offset: float) -> np.ndarray:
    """Keep the part of a convex polygon ``[n, 3]`` where ``normal . X >= offset``."""
    if len(poly) == 0:
        return poly
    d = poly @ normal - offset
    if (d >= 0).all():
        return poly
    out = []
    for i in range(len(poly)):
        j = (i + 1) % len(poly)
        if d[i] >= 0:
            out.append(poly[i])
        if (d[i] >= 0) != (d[j] >= 0):
            out.append(poly[i] + (poly[j] - poly[i]) * (d[i] / (d[i] - d[j])))
    return np.array(out).reshape(-1, 3)


class Renderer:
    """Draws quads for a pinhole camera ``K`` into ``width x height`` images (grey or RGB)."""

    near = 0.1  # metres
    slab_ratio = 2.0  # far / near depth of one slab (one mip level each)

    def __init__(self, K: np.ndarray, size: tuple[int, int], materials: dict[str, Material],
                 background: np.ndarray) -> None:
        self.K, self.size, self.materials, self.background = K, size, materials, background
        w, h = size
        cx, cy, m = K[0, 2], K[1, 2], 2.0  # frustum planes with a 2-pixel margin
        self.frustum = [
            (np.array([0.0, 0.0, 1.0]), self.near),
            (np.array([K[0, 0], 0.0, cx + m]), 0.0), (np.array([-K[0, 0], 0.0, w - 1 - cx + m]), 0.0),
            (np.array([0.0, K[1, 1], cy + m]), 0.0), (np.array([0.0, -K[1, 1], h - 1 - cy + m]), 0.0),
        ]
        self.focal = math.sqrt(K[0, 0] * K[1, 1])

    def render(self, T_world_cam: np.ndarray, quads: list[Quad]) -> np.ndarray:
        """Image of ``quads`` (already in painter's order) seen from ``T_world_cam``."""
        canvas = self.background.copy()
        R_cw = T_world_cam[:3, :3].T
        t_cw = -R_cw @ T_world_cam[:3, 3]
        centre = T_world_cam[:3, 3]
        # Vectorised culling first: back faces, and quads wholly outside one frustum plane.
        normals = np.stack([q.normal for q in quads])
        origins = np.stack([q.origin for q in quads])
        corners = np.stack([q.corners for q in quads]) @ R_cw.T + t_cw  # [Q, 4, 3] camera frame
        keep = np.einsum("qi,qi->q", normals, centre - origins) > 0
        planes = np.stack([n for n, _ in self.frustum])
        offsets = np.array([o for _, o in self.frustum])
        side = corners @ planes.T - offsets  # [Q, 4, P] >= 0 inside
        keep &= ~(side < 0).all(1).any(1)
        for q in np.flatnonzero(keep):
            poly = corners[q]
            if (side[q] < 0).any():
                for normal, offset in self.frustum:
                    poly = clip_polygon(poly, normal, offset)
            if len(poly) >= 3:
                self._draw(canvas, quads[q], poly, R_cw, t_cw)
        return canvas

    def _draw(self, canvas: np.ndarray, quad: Quad, poly: np.ndarray, R_cw: np.ndarray, t_cw: np.ndarray) -> None:
        """Draw one clipped polygon of ``quad``, slab by slab."""
        z = poly[:, 2]
        k0 = math.floor(math.log(z.min(), self.slab_ratio))
        k1 = math.floor(math.log(z.max(), self.slab_ratio))
        n_cam = R_cw @ quad.normal
        for k in range(k0, k1 + 1):
            piece = poly
            if k > k0:  # overlap slabs by 1% so that their edges leave no crack
                piece = clip_polygon(piece, np.array([0.0, 0.0, 1.0]), self.slab_ratio**k * 0.99)
            if k < k1:
                piece = clip_polygon(piece, np.array([0.0, 0.0, -1.0]), -(self.slab_ratio ** (k + 1)))
            if len(piece) >= 3:
                self._draw_piece(canvas, quad, piece, self._level(quad, piece, n_cam), R_cw, t_cw)

    def _level(self, quad: Quad, piece: np.ndarray, n_cam: np.ndarray) -> int:
        """Mip level from texels per pixel at the piece centre: rho * r / (f * sqrt(cos(incidence)))."""
        material = self.materials[quad.material]
        c = piece.mean(0)
        r = float(np.linalg.norm(c))
        cos_inc = max(abs(float(n_cam @ c)) / r, 0.05)
        density = material.px_per_m * r / (self.focal * math.sqrt(cos_inc))
        return int(np.clip(math.floor(math.log2(max(density, 1e-6)) + 0.3), 0, len(material.levels) - 1))

    def _draw_piece(self, canvas, quad: Quad, piece: np.ndarray, level: int, R_cw, t_cw) -> None:
        w, h = self.size
        pix = piece @ self.K.T
        pix = pix[:, :2] / pix[:, 2:3]
        lo, hi = pix.min(0), pix.max(0)
        x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
        x1, y1 = min(int(hi[0]) + 2, w), min(int(hi[1]) + 2, h)
        if x1 <= x0 or y1 <= y0:
            return
        material = self.materials[quad.material]
        su, sv = material.scale(level)
        ph, pw = material.levels[level].shape[:2]
        # Texel coordinates of the piece, to place it inside one window of the tiled texture.
        rel = (piece - t_cw) @ R_cw - quad.origin
        s = (rel @ quad.u + quad.tex_offset[0]) * su
        t = (rel @ quad.v + quad.tex_offset[1]) * sv
        shift_s = math.floor((s.min() - 4) / pw) * pw  # >= 4 texels of margin for edge pixels
        shift_t = math.floor((t.min() - 4) / ph) * ph
        texture = material.tiled(level, math.ceil(s.max() - shift_s) + 4, math.ceil(t.max() - shift_t) + 4)
        # window texel (s', t') -> metres (a, b) on the quad -> camera frame -> pixels of the bounding box
        tex_to_ab = np.array([[1 / su, 0, shift_s / su - quad.tex_offset[0]],
                              [0, 1 / sv, shift_t / sv - quad.tex_offset[1]], [0, 0, 1]])
        plane = np.stack([R_cw @ quad.u, R_cw @ quad.v, R_cw @ quad.origin + t_cw], 1)
        K = self.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        H = K @ plane @ tex_to_ab
        size = (x1 - x0, y1 - y0)
        warped = cv2.warpPerspective(texture, H, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        if quad.gain != 1.0:
            warped = cv2.convertScaleAbs(warped, alpha=quad.gain)
        mask = np.zeros((size[1], size[0]), np.uint8)
        cv2.fillConvexPoly(mask, np.round((pix - (x0, y0)) * 16).astype(np.int32), 1, cv2.LINE_8, 4)
        cv2.copyTo(warped, mask, canvas[y0:y1, x0:x1])
