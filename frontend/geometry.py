"""Geometric verification of matches and the occupancy grid that keeps new tracks spread out.

Both work on numpy arrays of pixel coordinates (conventions of :mod:`models.conventions`) and
are vectorised: no Python loop visits a keypoint.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_FUNDAMENTAL_MATCHES = 8  # the 8-point minimal set of USAC's final fit


def verify_fundamental(
    pts0: np.ndarray,
    pts1: np.ndarray,
    threshold: float = 1.0,
    confidence: float = 0.999,
    max_iters: int = 2000,
) -> tuple[np.ndarray, bool]:
    """Inlier mask ``[K]`` of matched points ``[K, 2]`` under a MAGSAC++ fundamental matrix.

    Returns ``(mask, verified)``. With fewer than 8 matches no model can be fitted: every match
    is kept and ``verified`` is False. When MAGSAC finds no model, no match is kept.
    """
    k = len(pts0)
    if k < MIN_FUNDAMENTAL_MATCHES:
        return np.ones(k, dtype=bool), False
    p0 = np.ascontiguousarray(pts0, dtype=np.float64)
    p1 = np.ascontiguousarray(pts1, dtype=np.float64)
    try:
        f, mask = cv2.findFundamentalMat(p0, p1, cv2.USAC_MAGSAC, threshold, confidence, max_iters)
    except cv2.error:
        # Degenerate geometry (no translation, planar scene): F is undefined, a homography is not.
        try:
            f, mask = cv2.findHomography(
                p0, p1, cv2.USAC_MAGSAC, 2 * threshold, maxIters=max_iters, confidence=confidence
            )
        except cv2.error:
            f, mask = None, None
    if f is None or mask is None:
        return np.zeros(k, dtype=bool), True
    return mask.ravel().astype(bool), True


def grid_cells(xy: np.ndarray, image_hw: tuple[int, int], cell: int) -> tuple[np.ndarray, int]:
    """Flat cell index ``[N]`` of pixel coordinates ``[N, 2]`` on a ``cell``-pixel grid, and the cell count."""
    h, w = image_hw
    gh, gw = -(-h // cell), -(-w // cell)
    # +0.5: the image spans [-0.5, W - 0.5] (pixel centres are integers), so cell 0 starts at -0.5.
    cx = np.clip(np.floor((xy[:, 0] + 0.5) / cell), 0, gw - 1).astype(np.int64)
    cy = np.clip(np.floor((xy[:, 1] + 0.5) / cell), 0, gh - 1).astype(np.int64)
    return cy * gw + cx, gh * gw


def select_uniform(
    cand_xy: np.ndarray,
    cand_scores: np.ndarray,
    occupied_xy: np.ndarray,
    image_hw: tuple[int, int],
    cell: int,
    max_per_cell: int,
) -> np.ndarray:
    """Which candidates ``[N]`` may start a track: per grid cell, the best-scored ones up to the free room.

    A cell's room is ``max_per_cell`` minus its active tracks (``occupied_xy``), so new tracks
    go where tracks are missing. ``cell <= 0`` disables the rule (every candidate is kept).
    """
    n = len(cand_xy)
    if cell <= 0 or n == 0:
        return np.ones(n, dtype=bool)
    cand_cell, num_cells = grid_cells(cand_xy, image_hw, cell)
    occupied, _ = grid_cells(occupied_xy, image_hw, cell)
    room = max_per_cell - np.bincount(occupied, minlength=num_cells)
    order = np.lexsort((-cand_scores, cand_cell))  # by cell, best score first within a cell
    sorted_cells = cand_cell[order]
    rank = np.arange(n) - np.searchsorted(sorted_cells, sorted_cells, side="left")  # rank within its cell
    keep = np.zeros(n, dtype=bool)
    keep[order] = rank < room[sorted_cells]
    return keep
