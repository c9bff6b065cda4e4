"""Geometric verification of matches (from :mod:`models.geometry`) and the occupancy grid that keeps
new tracks spread out.

Both work on numpy arrays of pixel coordinates (conventions of :mod:`models.conventions`) and
are vectorised: no Python loop visits a keypoint.
"""

from __future__ import annotations

import numpy as np

from models.geometry import MIN_FUNDAMENTAL_MATCHES, check_verify_method, verify_fundamental  # noqa: F401 - re-exported


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
