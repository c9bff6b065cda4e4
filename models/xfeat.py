"""XFeat extractor: :class:`~models.xfeat_net.XFeatNet` behind the common interface (method ``xfeat``).

Inference follows the authors' ``XFeat.detectAndCompute`` (verlab/accelerated_features,
``modules/xfeat.py``, Apache-2.0):

1. bilinear resize to the largest multiple of 32 not above the input size (not padding);
2. softmax over each 8x8 cell's 65 logits, dustbin dropped, pixel-shuffled to a full-resolution
   heatmap;
3. NMS: a pixel is kept when it is the maximum of its 5x5 window and its heatmap value exceeds
   0.05 (their ``MaxPool2d(5, stride=1, padding=2)`` test);
4. score = heatmap at the pixel x reliability map bilinearly interpolated there; top-k by score;
5. descriptor = the per-pixel L2-normalised 64-D map interpolated bicubically at the keypoint
   (their ``InterpolateSparse2d('bicubic')``), normalised again;
6. keypoints rescaled to the input image.

Matching is mutual nearest neighbour on cosine similarity with ``min_similarity = 0.82``: the
default of the authors' ``XFeat.match(feats1, feats2, min_cossim=0.82)`` and the value their
``realtime_demo.py`` passes, the use closest to tracking. Their ``match_xfeat`` convenience, which
their ScanNet/MegaDepth evaluation scripts (``modules/eval/``) call, passes ``min_cossim=-1``, i.e.
no threshold; set ``matcher_kwargs = {}`` on the extractor for that protocol (on churchill 1->k,
2048 keypoints: MMA@3 59.8 % with 0.82, 54.7 % without).

Differences from the reference code, all from this project's :mod:`models.conventions` (pixel
centres at integer coordinates): interpolation maps pixel ``x`` to ``(x + 0.5) / W`` of the map
(the authors use ``x / (W - 1)`` with ``align_corners=False``, a shift of up to half a stride-8
cell near the right/bottom border) and samples the border by replication rather than zeros; the
rescale to the input is ``(x + 0.5) * W / W' - 0.5`` instead of ``x * W / W'``. Everything after
the network is vectorised over the batch and the keypoints (one loop over images for top-k).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from .base import Extractor
from .conventions import Features, rescale_pixels
from .keypoints import nms_mask, select_keypoints
from .sampling import sample_descriptors
from .xfeat_net import XFeatNet, cell_heatmap
from .xfeat_weights import load_xfeat_net


def resize_to_multiple(images: torch.Tensor, multiple: int = 32) -> tuple[torch.Tensor, float, float]:
    """Bilinearly resize ``[B, C, H, W]`` to ``(H // m * m, W // m * m)`` (at least ``m``).

    Returns the resized images and the scale factors ``(sx, sy) = (W / W', H / H')`` from the
    resized image back to the input. Sizes already divisible by ``multiple`` are left untouched.
    """
    h, w = images.shape[-2:]
    h2, w2 = max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple)
    if (h2, w2) != (h, w):
        images = F.interpolate(images, (h2, w2), mode="bilinear", align_corners=False)
    return images, w / w2, h / h2


class XFeat(Extractor):
    """XFeat keypoints and 64-D descriptors (Potje et al., CVPR 2024).

    Args:
        net: an :class:`~models.xfeat_net.XFeatNet` with loaded weights.
        num_keypoints: default top-k (authors: 4096; ``None`` keeps every NMS peak).
        detection_threshold: minimum heatmap probability of a keypoint (authors: 0.05).
        nms_radius: NMS window radius (authors: 5x5 window, radius 2).
        descriptor_mode: interpolation of the descriptor map (authors: ``"bicubic"``).
        device: torch device.
    """

    name = "xfeat"
    descriptor_dim = XFeatNet.descriptor_dim
    default_matcher = "mnn"
    matcher_kwargs: dict = {"min_similarity": 0.82}

    def __init__(
        self,
        net: XFeatNet,
        num_keypoints: int | None = 4096,
        detection_threshold: float = 0.05,
        nms_radius: int = 2,
        descriptor_mode: Literal["bicubic", "bilinear"] = "bicubic",
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(num_keypoints)  # type: ignore[arg-type]
        self.device = torch.device(device)
        # BatchNorm is already folded; channels-last weights let oneDNN keep NHWC end to end
        self.net = net.to(self.device).eval().to(memory_format=torch.channels_last)
        self.detection_threshold = detection_threshold
        self.nms_radius = nms_radius
        self.descriptor_mode = descriptor_mode

    def score_map(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """``heatmap * reliability`` at NMS peaks above the threshold, 0 elsewhere -> ``[B, 1, H', W']``."""
        heat = cell_heatmap(out["keypoint_logits"])
        keep = nms_mask(heat, self.nms_radius) & (heat > self.detection_threshold)
        # bilinear upsampling with align_corners=False = interpolation at integer pixel centres
        reliability = F.interpolate(out["reliability"].float(), heat.shape[-2:], mode="bilinear", align_corners=False)
        return torch.where(keep, heat * reliability, torch.zeros_like(heat))

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, num_keypoints: int | None = None) -> list[Features]:
        """Features for ``images [B, C, H, W]`` (C = 1 grey or 3 RGB, float in [0, 1]).

        Returns one dict per image: ``keypoints [N, 2]`` pixels of the input image, ``scores [N]``
        (heatmap x reliability, strongest first), ``descriptors [N, 64]`` L2-normalised.
        """
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [B, 1|3, H, W], got {tuple(images.shape)}")
        x, sx, sy = resize_to_multiple(images.to(self.device, torch.float32), XFeatNet.pad_multiple)
        out = self.net(x)
        scores = self.score_map(out)
        k = self.num_keypoints if num_keypoints is None else num_keypoints
        kpts, vals = select_keypoints(scores, k, radius=0, threshold=0.0, border=0)  # peaks already chosen
        counts = [len(v) for v in vals]
        padded = pad_sequence(kpts, batch_first=True)  # [B, max N, 2]
        dense = F.normalize(out["descriptors"].float(), dim=1)
        desc = sample_descriptors(dense, padded, tuple(x.shape[-2:]), mode=self.descriptor_mode)
        scale = padded.new_tensor([sx, sy])
        return [
            Features(keypoints=rescale_pixels(kp, scale), scores=sc.float(), descriptors=d[:n])
            for kp, sc, d, n in zip(kpts, vals, desc, counts)
        ]


def build_xfeat(weights: str | Path, device: torch.device | str = "cpu", **kwargs: object) -> XFeat:
    """Build ``xfeat`` from the authors' ``xfeat.onnx``.

    Raises:
        MissingFileError: ``weights`` does not exist (the message says where the file comes from).
        BadInputError: a file that is not XFeat's ONNX graph.
    """
    return XFeat(load_xfeat_net(weights), device=device, **kwargs)  # type: ignore[arg-type]
