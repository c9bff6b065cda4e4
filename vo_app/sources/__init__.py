"""Frame sources of the VO app: datasets, video, image folders, webcams and the built-in demo.

``open_source(spec)`` picks one from a ``--sequence`` value; every source yields
:class:`frontend.frame.Frame` records and exposes ``K``,
``image_size`` (width, height), ``num_frames`` (None when live), ``gt_poses`` (``[N, 4, 4]``
T_world_cam or None), ``name`` and ``skipped``.
"""

from .base import IndexedSource, Source
from .calib import Calibration, load_calib
from .demo import DemoSource
from .euroc import EurocSource
from .folder import ImageFolderSource
from .kitti import KittiSource
from .resolve import ACCEPTED, open_source
from .tum import TumSource
from .video import VideoSource
from .webcam import WebcamSource

__all__ = [
    "ACCEPTED", "Calibration", "DemoSource", "EurocSource", "ImageFolderSource", "IndexedSource", "KittiSource",
    "Source", "TumSource", "VideoSource", "WebcamSource", "load_calib", "open_source",
]
