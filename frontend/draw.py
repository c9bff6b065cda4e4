"""Drawing keypoint tracks as trails coloured by age (OpenCV, batched: one call per colour).

Colours run along the turbo colour map from blue (a new track) to red (``max_age`` frames or
older). Untracked keypoints are grey dots.
"""

from __future__ import annotations

import cv2
import numpy as np

from .tracker import Tracks

SHIFT = 4  # fractional bits for cv2 drawing: keypoints are sub-pixel
NUM_COLOURS = 16
UNTRACKED = (160, 160, 160)


def age_colours(num: int = NUM_COLOURS) -> np.ndarray:
    """``[num, 3]`` BGR colours from young (blue) to old (red)."""
    ramp = np.linspace(0, 255, num).astype(np.uint8)[:, None]
    return cv2.applyColorMap(ramp, cv2.COLORMAP_TURBO)[:, 0]


def to_bgr(image: np.ndarray) -> np.ndarray:
    """A writable BGR ``uint8`` copy of a grey or RGB image."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image, cv2.COLOR_RGB2BGR)


def draw_dots(canvas: np.ndarray, xy: np.ndarray, colours: np.ndarray, radius: int = 1) -> None:
    """Paint ``(2r+1)^2`` squares at ``xy [N, 2]`` with ``colours [N, 3]`` by fancy indexing (no loop)."""
    if len(xy) == 0:
        return
    h, w = canvas.shape[:2]
    r = np.arange(-radius, radius + 1)
    dy, dx = (a.reshape(-1) for a in np.meshgrid(r, r, indexing="ij"))
    px = np.rint(xy[:, 0]).astype(np.int64)[:, None] + dx
    py = np.rint(xy[:, 1]).astype(np.int64)[:, None] + dy
    inside = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    col = np.broadcast_to(colours[:, None], (*px.shape, 3))
    canvas[py[inside], px[inside]] = col[inside]


def draw_tracks(
    image: np.ndarray, tracks: Tracks | None, keypoints: np.ndarray | None = None, max_age: int = 10
) -> np.ndarray:
    """Render ``tracks`` (with their ``history``) over ``image``; returns a new BGR image.

    Args:
        image: ``H x W`` grey or ``H x W x 3`` RGB ``uint8``.
        tracks: active tracks of the frame (``history [T, L, 2]`` gives the trail).
        keypoints: all keypoints ``[N, 2]`` of the frame; those not in a track are drawn grey.
        max_age: track length that gets the last (red) colour.
    """
    canvas = to_bgr(image)
    if keypoints is not None and len(keypoints):
        draw_dots(canvas, keypoints, np.tile(np.array(UNTRACKED, np.uint8), (len(keypoints), 1)), radius=0)
    if tracks is None or len(tracks) == 0:
        return canvas
    palette = age_colours()
    level = (np.minimum(tracks.length - 1, max_age) * (len(palette) - 1) // max(max_age, 1)).astype(np.int64)
    hist = tracks.history
    if hist.shape[1] >= 2:
        valid = ~np.isnan(hist[..., 0])
        ok = valid[:, :-1] & valid[:, 1:]  # segment between consecutive observed positions
        segs = np.stack([hist[:, :-1][ok], hist[:, 1:][ok]], axis=1)  # [S, 2, 2]
        seg_level = np.broadcast_to(level[:, None], ok.shape)[ok]
        fixed = np.rint(segs * (1 << SHIFT)).astype(np.int32)
        for lv in np.unique(seg_level):
            colour = tuple(int(c) for c in palette[lv])
            cv2.polylines(canvas, fixed[seg_level == lv], False, colour, 1, cv2.LINE_AA, SHIFT)
    draw_dots(canvas, tracks.keypoints, palette[level], radius=1)
    return canvas
