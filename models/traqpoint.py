"""TraqPoint extractor: network output -> keypoints, scores and descriptors (inference wrapper).

Keeps the pure networks (:mod:`models.lite`, :mod:`models.paper`) apart from pre/post-processing:
padding to the network stride, policy-logit normalisation, NMS/top-k and descriptor sampling.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Extractor
from .conventions import Features
from .image_io import rgb_to_grey
from .keypoints import minmax_normalise, refine_subpixel, select_keypoints
from .sampling import sample_descriptors

log = logging.getLogger(__name__)

DetectorSource = Literal["policy", "matchability"]


def pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad ``[B, C, H, W]`` on the right/bottom so H and W are multiples of ``multiple``."""
    h, w = images.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return images
    return F.pad(images, (0, pw, 0, ph), mode="replicate")


class TraqPoint(Extractor):
    """Describe-then-detect extractor around a network returning descriptors/matchability/logits.

    Args:
        net: a pure network (``LiteNet`` or ``PaperNet``) in eval mode.
        name: method name shown in tables.
        num_keypoints: default top-k.
        nms_radius: NMS radius in pixels (paper: 2).
        threshold: minimum min-max normalised score.
        detector: ``"policy"`` (stage-2 logits) or ``"matchability"`` (stage-1 map, upsampled),
            the latter used to measure what stage 2 adds.
        subpixel: refine keypoints by a local soft-argmax of the score map.
    """

    default_matcher = "dual_softmax"
    matcher_kwargs = {"temperature": 20.0, "threshold": 0.01}

    def __init__(
        self,
        net: nn.Module,
        name: str = "traqpoint-lite",
        num_keypoints: int = 2048,
        nms_radius: int = 2,
        threshold: float = 0.0,
        detector: DetectorSource = "policy",
        subpixel: bool = True,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(num_keypoints)
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.name = name
        self.nms_radius = nms_radius
        self.threshold = threshold
        self.detector = detector
        self.subpixel = subpixel
        self.descriptor_dim = int(getattr(net, "descriptor_dim", None) or net.conf["descriptor_dim"])
        self.pad_multiple = int(getattr(net, "pad_multiple", 32))

    def score_map(self, out: dict[str, torch.Tensor], hw: tuple[int, int]) -> torch.Tensor:
        """Normalised detection scores ``[B, 1, H, W]`` from the network output."""
        if self.detector == "matchability":
            m = F.interpolate(out["matchability"], scale_factor=self.net.stride, mode="bilinear", align_corners=False)
            return minmax_normalise(m[..., : hw[0], : hw[1]])
        return minmax_normalise(out["logits"][..., : hw[0], : hw[1]].float())

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, num_keypoints: int | None = None) -> list[Features]:
        """Features for ``images [B, C, H, W]``; see :class:`~models.base.Extractor`."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [B, 1|3, H, W], got {tuple(images.shape)}")
        if images.shape[1] == 3 and not getattr(self.net, "wants_rgb", False):  # the paper net was trained on RGB
            images = rgb_to_grey(images)
        hw = (images.shape[-2], images.shape[-1])
        out = self.net(pad_to_multiple(images.to(self.device), self.pad_multiple))
        scores = self.score_map(out, hw)
        k = self.num_keypoints if num_keypoints is None else num_keypoints
        kpts, vals = select_keypoints(scores, k, self.nms_radius, self.threshold)
        feats = []
        padded_hw = (out["descriptors"].shape[-2] * self.net.stride, out["descriptors"].shape[-1] * self.net.stride)
        for i, (kp, sc) in enumerate(zip(kpts, vals)):
            if self.subpixel:
                kp = refine_subpixel(scores[i], kp)
            desc = sample_descriptors(out["descriptors"][i : i + 1].float(), kp[None], padded_hw)[0]
            feats.append(Features(keypoints=kp.float(), scores=sc.float(), descriptors=desc))
        return feats
