"""Front-end: batched feature extraction (engine) and keypoint tracking (tracker).

``Frame`` is the record that travels through it (conventions in :mod:`models.conventions`);
:class:`ExtractionEngine` fills in keypoints, scores and descriptors, :class:`Tracker` the
track ids and per-frame statistics.
"""

from .engine import ExtractionEngine
from .frame import Frame
from .tracker import FrameStats, Tracker, TrackResult, Tracks

__all__ = ["ExtractionEngine", "Frame", "FrameStats", "Tracker", "TrackResult", "Tracks"]
