"""Track quality against exact ground truth: localisation error, drift with age, coverage.

Observations are what a tracker put out: one row per keypoint that carries a track id, as
``track [M]``, ``frame [M]`` (sequence index), ``xy [M, 2]`` pixels. A track's *anchor* is its first
observation; its 3D point is the anchor pixel back-projected at the exact depth there. Every later
observation (age >= 1 frames) is compared with the reprojection of that point into its frame:

- ``loc_err_px_p50`` / ``loc_err_px_p90``: median / 90th percentile of that distance over all
  later observations whose reprojection is visible (in the image, not occluded);
- ``drift_px``: the median error at age :data:`DRIFT_AGE` frames (how far a track has wandered off
  its 3D point 10 frames after it started; tracks that never reach that age do not count);
- the error by age bin (:data:`AGE_BINS`) shows the whole curve;
- ``coverage``: per frame, the fraction of cells of a 16 x 16 grid over the image holding at least
  one *continued* track (a keypoint matched to the previous frame), averaged over the frames after
  the first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRIFT_AGE = 10  # frames
AGE_BINS = ((1, 1), (2, 3), (4, 7), (8, 15), (16, 31), (32, 10**9))  # inclusive age ranges
COVERAGE_GRID = 16
OCCLUSION_TOLERANCE = 0.02  # relative depth difference above which a reprojection counts as occluded


@dataclass
class Observations:
    """Tracked keypoints of a run: ``track [M]`` int64, ``frame [M]`` int64, ``xy [M, 2]`` float64."""

    track: np.ndarray
    frame: np.ndarray
    xy: np.ndarray

    @classmethod
    def concat(cls, parts: list[tuple[np.ndarray, int, np.ndarray]]) -> Observations:
        """From per-frame ``(track_ids [N], frame index, keypoints [N, 2])``; ids < 0 are dropped."""
        ids = [np.asarray(t, dtype=np.int64) for t, _, _ in parts]
        keep = [t >= 0 for t in ids]
        track = np.concatenate([t[k] for t, k in zip(ids, keep)]) if parts else np.zeros(0, np.int64)
        frame = (
            np.concatenate([np.full(int(k.sum()), f, np.int64) for k, (_, f, _) in zip(keep, parts)])
            if parts
            else track
        )
        xy = (
            np.concatenate([np.asarray(p, np.float64).reshape(-1, 2)[k] for k, (_, _, p) in zip(keep, parts)])
            if parts
            else np.zeros((0, 2))
        )
        return cls(track, frame, xy)

    def anchors(self) -> tuple[np.ndarray, np.ndarray]:
        """Row of each observation's anchor ``[M]`` and the age of each observation in frames ``[M]``."""
        order = np.lexsort((self.frame, self.track))
        first = np.ones(len(order), dtype=bool)
        first[1:] = self.track[order][1:] != self.track[order][:-1]
        anchor_sorted = order[np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))]
        anchor = np.empty_like(order)
        anchor[order] = anchor_sorted
        return anchor, self.frame - self.frame[anchor]


@dataclass
class TrackErrors:
    """Per observation: ``age [M]``, ``error [M]`` px (NaN for anchors and unscorable ones), ``visible [M]``."""

    age: np.ndarray
    error: np.ndarray
    visible: np.ndarray


def reprojection_errors(obs: Observations, depth_fn, project_fn, backproject_fn, image_size) -> TrackErrors:
    """Errors of every observation against its anchor's reprojection.

    Args:
        obs: the tracked keypoints.
        depth_fn: ``(frame, pixels [N, 2]) -> depth [N]`` (inf where no surface), exact.
        project_fn: ``(frames [N], points [N, 3]) -> (pixels [N, 2], depth [N])``.
        backproject_fn: ``(frame, pixels [N, 2], depth [N]) -> points [N, 3]``.
        image_size: ``(width, height)``.
    """
    anchor, age = obs.anchors()
    is_anchor = age == 0
    points = np.full((len(obs.track), 3), np.nan)
    for f in np.unique(obs.frame[is_anchor]):  # one ray cast per frame, vectorised over its anchors
        rows = np.flatnonzero(is_anchor & (obs.frame == f))
        depth = depth_fn(int(f), obs.xy[rows])
        ok = np.isfinite(depth)
        points[rows[ok]] = backproject_fn(int(f), obs.xy[rows[ok]], depth[ok])
    later = np.flatnonzero(~is_anchor & np.isfinite(points[anchor, 0]))
    error = np.full(len(obs.track), np.nan)
    visible = np.zeros(len(obs.track), dtype=bool)
    if len(later):
        pix, z = project_fn(obs.frame[later], points[anchor[later]])
        w, h = image_size
        inside = (z > 0) & (pix[:, 0] >= -0.5) & (pix[:, 0] <= w - 0.5) & (pix[:, 1] >= -0.5) & (pix[:, 1] <= h - 0.5)
        seen = np.zeros(len(later), dtype=bool)
        for f in np.unique(obs.frame[later[inside]]):
            sel = np.flatnonzero(inside & (obs.frame[later] == f))
            surface = depth_fn(int(f), pix[sel])
            seen[sel] = np.abs(surface - z[sel]) <= OCCLUSION_TOLERANCE * z[sel]
        visible[later] = seen
        error[later[seen]] = np.linalg.norm(obs.xy[later[seen]] - pix[seen], axis=1)
    return TrackErrors(age=age, error=error, visible=visible)


def error_summary(errors: TrackErrors) -> dict:
    """``loc_err_px_p50``, ``loc_err_px_p90``, ``drift_px`` and the by-age curve (``None`` without data)."""
    ok = np.isfinite(errors.error)
    e = errors.error[ok]
    at_drift = errors.error[ok & (errors.age == DRIFT_AGE)]
    curve = {}
    for lo, hi in AGE_BINS:
        sel = errors.error[ok & (errors.age >= lo) & (errors.age <= hi)]
        label = f"{lo}" if lo == hi else (f"{lo}+" if hi >= 10**9 else f"{lo}-{hi}")
        curve[label] = {
            "p50": float(np.median(sel)) if len(sel) else None,
            "p90": float(np.percentile(sel, 90)) if len(sel) else None,
            "over_3px": float(np.mean(sel > 3)) if len(sel) else None,
            "n": int(len(sel)),
        }
    return {
        "loc_err_px_p50": float(np.median(e)) if len(e) else None,
        "loc_err_px_p90": float(np.percentile(e, 90)) if len(e) else None,
        "drift_px": float(np.median(at_drift)) if len(at_drift) else None,
        "by_age": curve,
        "scored": int(ok.sum()),
        "not_visible": int((~errors.visible & (errors.age > 0)).sum()),
    }


def coverage(xy: np.ndarray, image_size: tuple[int, int], grid: int = COVERAGE_GRID) -> float:
    """Fraction of the ``grid x grid`` cells over a ``(width, height)`` image holding a point of ``xy [N, 2]``."""
    if len(xy) == 0:
        return 0.0
    w, h = image_size
    cx = np.clip(((xy[:, 0] + 0.5) * grid / w).astype(np.int64), 0, grid - 1)
    cy = np.clip(((xy[:, 1] + 0.5) * grid / h).astype(np.int64), 0, grid - 1)
    return len(np.unique(cy * grid + cx)) / grid**2
