"""Keyframes: the record, the sliding window the bundle adjustment works on, and the policy.

A frame becomes a keyframe (:meth:`KeyframePolicy.reason`, first rule that fires wins):

- ``parallax``: the median rotation-compensated parallax to the last keyframe (pixels left
  after undoing the relative rotation with the infinite homography ``K R K^-1``) reaches
  ``kf_parallax``; a pure rotation therefore never makes a keyframe without baseline. The
  odometry's default is DSO's translational-flow rule (Engel et al., TPAMI 2018): 0.04 x
  (width + height) px, so the threshold scales with the image (64 px at KITTI's 1226x370, 45 px
  at 640x480);
- ``few_points``: fewer than ``kf_min_points`` map points are tracked (the map needs points);
- ``tracked``: fewer than ``kf_min_tracked`` of the map points the last keyframe saw are still
  tracked;
- ``interval``: ``kf_max_interval`` frames since the last keyframe.

No keyframe is taken within ``kf_min_interval`` frames of the last one unless tracking is
about to fail (``few_points``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass
class Keyframe:
    """A keyframe: frame ``index``, ``pose`` T_world_cam, sorted track ``ids [N]`` and their ``keypoints [N, 2]``."""

    index: int
    pose: np.ndarray
    ids: np.ndarray
    keypoints: np.ndarray
    reason: str
    gt_pose: np.ndarray | None = None
    map_points: int = 0  # map points it observed when it was taken


class KeyframeWindow:
    """The last ``size`` keyframes, oldest first (older ones leave: bounded memory)."""

    def __init__(self, size: int) -> None:
        self.frames: deque[Keyframe] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self):
        return iter(self.frames)

    def add(self, kf: Keyframe) -> Keyframe | None:
        """Append ``kf``; return the keyframe that left the window, if any."""
        left = self.frames[0] if len(self.frames) == self.frames.maxlen else None
        self.frames.append(kf)
        return left

    @property
    def last(self) -> Keyframe | None:
        return self.frames[-1] if self.frames else None

    def clear(self) -> None:
        self.frames.clear()


@dataclass
class KeyframePolicy:
    """The keyframe rules of the module docstring (thresholds in pixels, fractions and frames)."""

    kf_parallax: float = 30.0
    kf_min_tracked: float = 0.3
    kf_min_points: int = 60
    kf_max_interval: int = 10
    kf_min_interval: int = 1

    def reason(self, since_last: int, parallax_px: float, tracked_fraction: float, tracked_points: int) -> str | None:
        """Why the current frame should be a keyframe, or ``None``."""
        if tracked_points < self.kf_min_points:
            return "few_points"
        if since_last < self.kf_min_interval:
            return None
        if parallax_px >= self.kf_parallax:
            return "parallax"
        if tracked_fraction < self.kf_min_tracked:
            return "tracked"
        if since_last >= self.kf_max_interval:
            return "interval"
        return None
