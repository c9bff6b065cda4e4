"""Keypoints of one extractor, descriptors of another network (a diagnostic extractor).

``DescribedBy(detector, describer)`` keeps ``detector``'s keypoints and scores and samples the
descriptors at those keypoints from ``describer``'s dense descriptor map. It separates what a
detector contributes to a tracking or matching result from what its descriptor contributes
(``python -m benchmarks.tracking --describe-with METHOD``). The describer must be a TraqPoint
extractor, since those have a dense map to sample; the matcher and its settings are the
describer's.
"""

from __future__ import annotations

import torch

from .base import Extractor
from .conventions import Features
from .errors import BadInputError
from .sampling import sample_descriptors
from .traqpoint import TraqPoint


class DescribedBy(Extractor):
    """``detector``'s keypoints ``[N, 2]`` and scores ``[N]`` with ``describer``'s descriptors ``[N, D]``."""

    def __init__(self, detector: Extractor, describer: Extractor) -> None:
        if not isinstance(describer, TraqPoint) or describer.scales != (1.0,):
            raise BadInputError(f"--describe-with needs a single-scale TraqPoint network (a dense descriptor "
                                f"map), got {getattr(describer, 'name', type(describer).__name__)}")
        super().__init__(detector.num_keypoints)
        self.detector, self.describer = detector, describer
        self.name = f"{detector.name}+{describer.name}-desc"
        self.device = describer.device
        self.precision = getattr(detector, "precision", describer.precision)  # what the tables report
        self.descriptor_dim = describer.descriptor_dim
        self.default_matcher = describer.default_matcher
        self.matcher_kwargs = describer.matcher_kwargs
        self.two_view_matcher_kwargs = describer.two_view_matcher_kwargs
        self.track_refine = getattr(detector, "track_refine", "lk")  # the tracker refines the detector's points

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, num_keypoints: int | None = None) -> list[Features]:
        """Features for ``images [B, C, H, W]``; see :class:`~models.base.Extractor`."""
        feats = self.detector.extract(images, num_keypoints)
        dense, padded_hw = self.describer.dense_map(images)
        out = []
        for i, f in enumerate(feats):  # a loop over images, not keypoints
            kp = f["keypoints"].to(dense.device).float()
            desc = sample_descriptors(dense[i : i + 1], kp[None], padded_hw)[0]
            out.append(Features(keypoints=f["keypoints"], scores=f["scores"], descriptors=desc))
        return out
