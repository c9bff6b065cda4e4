"""The local map: 3D points keyed by the tracker's track ids.

A map point is the world position of one track (:mod:`frontend.tracker`): the track id is the
data association, so a frame's 2D-3D correspondences are the keypoints whose track id is in the
map (one sorted-array intersection, no matching). Track ids are never reused and a track never
resumes once it ends, so a point whose track has ended can only still serve the bundle adjustment
of the keyframes that observed it; :meth:`LocalMap.cull` drops it once fewer than two keyframes
of the window observe it, which bounds the map by the tracks alive over the window.

Arrays: ``ids [M]`` int64 sorted ascending, ``xyz [M, 3]`` float64 world coordinates,
``born [M]`` index of the keyframe frame that created the point.
"""

from __future__ import annotations

import numpy as np


class LocalMap:
    """Sorted, vectorised storage of map points (see the module docstring)."""

    def __init__(self) -> None:
        self.ids = np.zeros(0, np.int64)
        self.xyz = np.zeros((0, 3))
        self.born = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``(in ids, in the map)`` of the ids that are map points; ``ids`` need not be sorted."""
        _, query_rows, map_rows = np.intersect1d(ids, self.ids, assume_unique=True, return_indices=True)
        return query_rows, map_rows

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Boolean mask ``[len(ids)]``: which ids are map points."""
        return np.isin(ids, self.ids, assume_unique=True)

    def add(self, ids: np.ndarray, xyz: np.ndarray, frame: int) -> int:
        """Insert new points (ids already in the map are ignored); return how many were added."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        xyz = np.asarray(xyz, np.float64).reshape(-1, 3)
        new = ~self.contains(ids) & np.isfinite(xyz).all(1)
        if not new.any():
            return 0
        all_ids = np.concatenate([self.ids, ids[new]])
        order = np.argsort(all_ids, kind="stable")
        self.ids = all_ids[order]
        self.xyz = np.concatenate([self.xyz, xyz[new]])[order]
        self.born = np.concatenate([self.born, np.full(int(new.sum()), frame, np.int64)])[order]
        return int(new.sum())

    def keep(self, mask: np.ndarray) -> int:
        """Keep the rows where ``mask`` is true; return how many were removed."""
        removed = int((~mask).sum())
        self.ids, self.xyz, self.born = self.ids[mask], self.xyz[mask], self.born[mask]
        return removed

    def remove_ids(self, ids: np.ndarray) -> int:
        """Remove these ids (unknown ones are ignored); return how many were removed."""
        return self.keep(~np.isin(self.ids, ids))

    def cull(self, alive_ids: np.ndarray, window_ids: list[np.ndarray]) -> int:
        """Drop points neither tracked now (``alive_ids``) nor observed by >= 2 keyframes of the window.

        ``window_ids``: the sorted track ids of each keyframe in the window. Returns the count removed.
        """
        seen = np.zeros(len(self.ids), np.int64)
        for ids in window_ids:
            seen += np.isin(self.ids, ids, assume_unique=True)
        return self.keep(np.isin(self.ids, alive_ids) | (seen >= 2))

    def transform(self, scale: float, R: np.ndarray, t: np.ndarray) -> None:
        """Apply ``x -> scale * R x + t`` to every point (a similarity of the whole local map)."""
        self.xyz = scale * self.xyz @ np.asarray(R).T + np.asarray(t).reshape(1, 3)
