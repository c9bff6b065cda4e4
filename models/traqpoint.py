"""TraqPoint extractor: network output -> keypoints, scores and descriptors (inference wrapper).

Keeps the pure networks (:mod:`models.lite`, :mod:`models.paper`) apart from pre/post-processing:
padding to the network stride, policy-logit normalisation, NMS/top-k and descriptor sampling.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Extractor
from .conventions import Features, rescale_pixels
from .image_io import rgb_to_grey
from .keypoints import SUBPIXEL_METHODS, minmax_range, refine_subpixel, select_keypoints
from .precision import Precision, autocast_context, resolve_precision
from .sampling import sample_descriptors

log = logging.getLogger(__name__)

DetectorSource = Literal["policy", "matchability"]


def network_descriptor_dim(net: nn.Module) -> int:
    """D of a pure network's dense descriptors: its ``descriptor_dim`` attribute, else ``conf["descriptor_dim"]``."""
    return int(getattr(net, "descriptor_dim", None) or getattr(net, "conf", {})["descriptor_dim"])


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
        subpixel: sub-pixel refinement of the score map's peaks: ``"quadratic"`` (``True``, the
            default: 2-D quadratic fit), ``"centroid"`` (the earlier soft-argmax) or ``False``.
        precision: network autocast, ``fp32``/``bf16``/``fp16`` or ``auto`` (see :mod:`models.precision`).
        scales: image scales to detect at (e.g. ``(1, 0.71, 0.5, 0.35)``); keypoints of every scale,
            in full-image pixels, compete for the ``num_keypoints`` budget by normalised score. One
            scale (the default) for tracking; a pyramid for wide-baseline pairs with zoom.
        two_view_threshold: the dual-softmax threshold for one two-view estimate
            (``two_view_matcher_kwargs``); ``None`` keeps the authors' 0.01 there too.
    """

    default_matcher = "dual_softmax"
    detect_first = True  # see _detects_first (False: the network's forward first, then selection)
    # the authors' settings (tau 20, P >= 0.01): for tracking and SfM, whose back-ends verify the
    # matches over many views and gain from recall; ``two_view_threshold`` replaces the threshold
    # for one two-view estimate (the lite networks: ``training.calibrate_matcher``)
    matcher_kwargs = {"temperature": 20.0, "threshold": 0.01}

    def __init__(
        self,
        net: nn.Module,
        name: str = "traqpoint-lite",
        num_keypoints: int = 2048,
        nms_radius: int = 2,
        threshold: float = 0.0,
        detector: DetectorSource = "policy",
        subpixel: bool | str = True,
        device: torch.device | str = "cpu",
        precision: Precision = "fp32",
        scales: Sequence[float] = (1.0,),
        two_view_threshold: float | None = None,
    ) -> None:
        super().__init__(num_keypoints)
        if two_view_threshold is not None:
            if not 0.0 <= two_view_threshold < 1.0:
                raise ValueError(f"two_view_threshold must be in [0, 1), got {two_view_threshold!r}")
            self.two_view_matcher_kwargs = {**self.matcher_kwargs, "threshold": float(two_view_threshold)}
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.name = name
        self.nms_radius = nms_radius
        self.threshold = threshold
        self.detector = detector
        self.subpixel = "quadratic" if subpixel is True else (subpixel or "")
        if self.subpixel and self.subpixel not in SUBPIXEL_METHODS:
            raise ValueError(f"subpixel must be True, False or one of {SUBPIXEL_METHODS}, got {subpixel!r}")
        self.descriptor_dim = network_descriptor_dim(net)
        self.pad_multiple = int(getattr(net, "pad_multiple", 32))
        self.precision = resolve_precision(precision, self.device)
        self.logit_stride = 1
        if detector == "policy" and hasattr(self.net, "with_matchability"):
            self.net.with_matchability = False  # detecting with the policy: skip the unused matchability head
        if detector == "policy" and getattr(self.net, "logit_stride", 1) > 1:
            self.net.full_res_logits = False  # select on the policy's own grid, then refine to sub-pixels
            self.logit_stride = int(self.net.logit_stride)
        self.scales = tuple(float(x) for x in scales)
        if not self.scales or any(not 0.05 <= x <= 4.0 for x in self.scales):
            raise ValueError(f"scales must be a non-empty list of factors in [0.05, 4], got {scales!r}")

    def score_map(self, out: dict[str, torch.Tensor], hw: tuple[int, int]) -> torch.Tensor:
        """Raw detection scores ``[B, 1, H, W]`` (policy logits or upsampled matchability).

        Min-max normalisation (the paper's) is monotonic per image, so NMS and top-k run on the
        raw map and only the kept scores are normalised (saves two full-map passes per frame).
        """
        if self.detector == "matchability":
            m = F.interpolate(out["matchability"], scale_factor=self.net.stride, mode="bilinear", align_corners=False)
            return m[..., : hw[0], : hw[1]].float()
        s = self.logit_stride  # a stride-s policy map covers the image with ceil(H / s) rows
        return out["logits"][..., : -(-hw[0] // s), : -(-hw[1] // s)].float()

    def _refine_head_active(self) -> bool:
        """Whether keypoints come from the network's learned sub-pixel head (lite2 with
        ``refine_dim > 0``, detecting with the policy, ``subpixel`` on) instead of a fit of the map."""
        head = getattr(self.net, "refine_head", None)
        return head is not None and self.detector == "policy" and self.logit_stride == 2 and bool(self.subpixel)

    def _net(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's outputs for ``images`` already on :attr:`device` (padded to its stride here)."""
        with autocast_context(self.device, self.precision):
            return self.net(pad_to_multiple(images, self.pad_multiple))

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, num_keypoints: int | None = None) -> list[Features]:
        """Features for ``images [B, C, H, W]``; see :class:`~models.base.Extractor`."""
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [B, 1|3, H, W], got {tuple(images.shape)}")
        images = self.network_input(images)
        k = self.num_keypoints if num_keypoints is None else num_keypoints
        if self.scales == (1.0,):
            return self._extract_scale(images, k, 1.0)
        levels = [self._extract_scale(resize_scale(images, s), k, s) for s in self.scales]
        return [merge_scales([lv[i] for lv in levels], k) for i in range(images.shape[0])]

    def network_input(self, images: torch.Tensor) -> torch.Tensor:
        """``images [B, 1|3, H, W]`` as the network takes them: grey, unless it was trained on RGB (the paper net)."""
        if images.shape[1] == 3 and not getattr(self.net, "wants_rgb", False):
            return rgb_to_grey(images)
        return images

    @torch.inference_mode()
    def dense_map(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The dense descriptors ``[B, D, H'/s, W'/s]`` of ``images [B, 1|3, H, W]`` (padded to the network's
        stride ``s`` inside) and the padded size ``(H', W')`` that :func:`sample_descriptors` needs."""
        dense = self._net(self.network_input(images).to(self.device))["descriptors"].float()
        return dense, (dense.shape[-2] * self.net.stride, dense.shape[-1] * self.net.stride)

    def _detects_first(self) -> bool:
        """Whether to select and refine keypoints *before* the descriptor backbone runs (lite2 with its
        policy: the same operations in another order, bit-identical features; the selection and the
        sub-pixel head then read an image still in cache. Measured at 640x480, 2 threads, extraction +
        matching of 20 frames, 30 paired rounds twice: 0.36 / 0.53 ms less per frame on average,
        faster in 16 and 20 of 30 rounds; at KITTI size no difference beyond the host's noise).
        A network behind a compiled or exported backend has only ``forward`` and runs it whole."""
        net = self.net
        return (self.detect_first and self.detector == "policy" and self.logit_stride == 2
                and all(hasattr(net, a) for a in ("standardised", "policy_logits", "dense_descriptors")))

    def _extract_scale(self, images: torch.Tensor, k: int | None, scale: float) -> list[Features]:
        """Single-scale extraction; keypoints in the pixels of the image ``scale`` was taken from."""
        hw = (images.shape[-2], images.shape[-1])
        images = images.to(self.device)
        if self._detects_first():
            shared = None  # the backbone runs first only for a policy that reads its features
            with autocast_context(self.device, self.precision):
                x = self.net.standardised(pad_to_multiple(images, self.pad_multiple))
                if getattr(self.net, "policy_reads_features", False):
                    shared = self.net.shared_features(x)
            out = {"logits": self.net.policy_logits(x, shared)}  # stride-2 map, fp32 (its own autocast is off)
            dense = None  # after the keypoints
        else:
            out = self._net(images)
            dense = out["descriptors"].float()
        raw = self.score_map(out, hw)
        lo, span = minmax_range(raw)
        st = self.logit_stride  # radius and border in pixels of the score map
        radius = max(1, round(self.nms_radius / st)) if self.nms_radius > 0 else 0
        kpts, vals = select_keypoints(raw, k, radius, lo + self.threshold * span, border=max(1, 4 // st))
        kpts = [self._subpixel(images[i : i + 1], raw[i], kp) for i, kp in enumerate(kpts)]
        if dense is None:
            with autocast_context(self.device, self.precision):
                dense = (self.net.dense_descriptors(x) if shared is None else self.net.descriptors_of(shared)).float()
        padded_hw = (dense.shape[-2] * self.net.stride, dense.shape[-1] * self.net.stride)
        feats = []
        for i, (kp, sc) in enumerate(zip(kpts, vals)):  # a loop over images, not keypoints
            desc = sample_descriptors(dense[i : i + 1], kp[None], padded_hw)[0]
            if scale != 1.0:  # pyramid level -> full-image pixels
                kp = rescale_pixels(kp, 1.0 / scale)
            score = (sc - lo[i]) / span[i]
            feats.append(Features(keypoints=kp.float(), scores=score.float(), descriptors=desc))
        return feats

    def _subpixel(self, image: torch.Tensor, raw: torch.Tensor, kp: torch.Tensor) -> torch.Tensor:
        """Image-pixel keypoints ``[N, 2]`` of one image's selected score-map pixels ``kp [N, 2]``."""
        if self._refine_head_active():  # lite2's learned head: stride-2 blocks -> sub-pixel image positions
            return self.net.refine_keypoints(image, kp)
        if self.subpixel:  # both fits are invariant to the min-max normalisation: raw map is fine
            kp = refine_subpixel(raw, kp, method=self.subpixel)
        return rescale_pixels(kp, self.logit_stride) if self.logit_stride != 1 else kp  # score map -> image


def resize_scale(images: torch.Tensor, scale: float) -> torch.Tensor:
    """``images`` resized by ``scale`` (antialiased bilinear when shrinking)."""
    if scale == 1.0:
        return images
    h, w = images.shape[-2:]
    size = (max(int(round(h * scale)), 8), max(int(round(w * scale)), 8))
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=scale < 1.0)


def merge_scales(levels: list[Features], k: int | None) -> Features:
    """One image's features from several scales -> the ``k`` best by (per-scale normalised) score."""
    scores = torch.cat([f["scores"] for f in levels])
    order = scores.argsort(descending=True)[:k]  # k = None keeps them all
    return Features(
        keypoints=torch.cat([f["keypoints"] for f in levels])[order],
        scores=scores[order],
        descriptors=torch.cat([f["descriptors"] for f in levels])[order],
    )
