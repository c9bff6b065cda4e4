"""ALIKE extractor: the :class:`~models.alike_net.ALNet` network behind the common interface.

Inference follows the paper's soft detection (DKD): zero-pad the image to a multiple of 32, NMS
(radius 2) on the sigmoid score map, score threshold and top-k, then a sub-pixel offset per
keypoint that is the softmax-weighted (temperature 0.1) mean position within the NMS window. The
descriptor is the bilinear interpolation of the per-pixel L2-normalised dense descriptor map at
that position, normalised again, computed at the keypoints only (see :meth:`ALNet.describe`).
Input is RGB; grey is treated as RGB with three equal channels. Coordinates follow
:mod:`models.conventions` (centre of the top-left pixel = ``(0, 0)``), as ALIKE's own output
does. Everything after the network is vectorised over the batch and the keypoints.

Difference from the reference code: NMS is this project's single-pass
:func:`~models.keypoints.select_keypoints` (a peak must be the maximum of its window) instead of
ALIKE's iterative variant, which also re-admits some peaks next to suppressed areas; scores are
those of the NMS peak rather than re-interpolated at the refined position.

Weights: the released ``alike-{t,s,n,l}.pth`` of Shiaoming/ALIKE (BSD-3-Clause), kept in
``../shared/weights/alike`` and never committed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from .alike_net import ALIKE_CONFIGS, ALNet, gather_pixels
from .base import Extractor
from .conventions import Features
from .errors import BadInputError
from .keypoints import select_keypoints
from .weights_io import load_checkpoint, load_into

WEIGHTS_HINT = (
    "ALIKE weights come from github.com/Shiaoming/ALIKE (models/alike-*.pth); expected in ../shared/weights/alike"
)


def pad_zeros(images: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pad ``[B, C, H, W]`` on the right/bottom to multiples of ``multiple`` (as ALIKE does)."""
    h, w = images.shape[-2:]
    return F.pad(images, (0, (-w) % multiple, 0, (-h) % multiple))


def window_offsets(radius: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Offsets ``[(2r+1)^2, 2]`` as ``(dx, dy)`` of a square window, row-major (dy outer)."""
    r = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([dx.reshape(-1), dy.reshape(-1)], dim=-1)


def soft_refine(
    scores: torch.Tensor, batch: torch.Tensor, xy: torch.Tensor, radius: int = 2, temperature: float = 0.1
) -> torch.Tensor:
    """DKD sub-pixel refinement of integer keypoints ``xy [N, 2]`` on ``scores [B, 1, H, W]``.

    The offset is ``sum_i softmax(s_i / T) * d_i`` over the ``(2r+1)^2`` window offsets ``d_i``;
    a sharp peak (scores in [0, 1], T = 0.1) stays put, a ridge shifts towards its mass.
    """
    if xy.shape[0] == 0:
        return xy
    off = window_offsets(radius, scores.device, scores.dtype)  # [K, 2]
    ixy = xy.long()[:, None, :] + off.long()[None]  # [N, K, 2]
    patch = gather_pixels(scores, batch[:, None].expand_as(ixy[..., 0]), ixy[..., 0], ixy[..., 1])[..., 0]
    weights = torch.softmax(patch / temperature, dim=1)  # [N, K]
    return xy + weights @ off


def describe_normalised(net: ALNet, levels: list[torch.Tensor], batch: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Descriptors ``[N, D]`` at real positions ``xy [N, 2]``, L2-normalised.

    ALIKE normalises the dense map per pixel and then interpolates bilinearly; this computes the
    four neighbouring pixels' descriptors only, normalises them and blends them the same way.
    """
    if xy.shape[0] == 0:
        return xy.new_zeros(0, net.descriptor_dim)
    x0y0 = xy.floor()
    frac = xy - x0y0
    corners = torch.stack([x0y0 + x0y0.new_tensor(d) for d in ((0, 0), (1, 0), (0, 1), (1, 1))])  # [4, N, 2]
    raw = net.describe(levels, batch.repeat(4), corners.reshape(-1, 2).long())
    desc = F.normalize(raw, dim=-1).view(4, -1, raw.shape[-1])
    fx, fy = frac[:, 0:1], frac[:, 1:2]
    blend = (desc[0] * (1 - fx) + desc[1] * fx) * (1 - fy) + (desc[2] * (1 - fx) + desc[3] * fx) * fy
    return F.normalize(blend, dim=-1)


class ALIKE(Extractor):
    """ALIKE keypoints and descriptors (``alike-t``, ``alike-n``, ...).

    Args:
        net: an :class:`~models.alike_net.ALNet` with loaded weights.
        name: method name shown in tables.
        num_keypoints: default top-k (``None`` keeps every NMS peak above the threshold).
        score_threshold: minimum sigmoid score of a keypoint; also what makes a textureless
            image give few or no keypoints.
        nms_radius: NMS and refinement window radius (2 for every released variant).
        subpixel: apply the soft (DKD) sub-pixel refinement.
        temperature: softmax temperature of the refinement (ALIKE: 0.1).
        device: torch device.
    """

    default_matcher = "mnn"
    matcher_kwargs: dict = {}

    def __init__(
        self,
        net: ALNet,
        name: str = "alike",
        num_keypoints: int | None = 2048,
        score_threshold: float = 0.1,
        nms_radius: int = 2,
        subpixel: bool = True,
        temperature: float = 0.1,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(num_keypoints)  # type: ignore[arg-type]
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self.name = name
        self.descriptor_dim = net.descriptor_dim
        self.score_threshold = score_threshold
        self.nms_radius = nms_radius
        self.subpixel = subpixel
        self.temperature = temperature

    @torch.inference_mode()
    def extract(self, images: torch.Tensor, num_keypoints: int | None = None) -> list[Features]:
        """Features for ``images [B, C, H, W]`` (C = 1 grey or 3 RGB, float in [0, 1]).

        Returns one dict per image: ``keypoints [N, 2]`` pixels, ``scores [N]`` (sigmoid score of
        the NMS peak, strongest first), ``descriptors [N, D]`` L2-normalised.
        """
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"images must be [B, 1|3, H, W], got {tuple(images.shape)}")
        b, _, h, w = images.shape
        images = images.to(self.device, torch.float32)  # grey stays 1-channel: ALNet folds it exactly
        levels = self.net.encode(pad_zeros(images, self.net.pad_multiple))
        scores = self.net.score_map(levels)[..., :h, :w]
        k = self.num_keypoints if num_keypoints is None else num_keypoints
        # border = r + 1 keeps every refinement window inside the image (ALIKE drops r + 1 rows too)
        kpts, vals = select_keypoints(scores, k, self.nms_radius, self.score_threshold, border=self.nms_radius + 1)
        counts = [len(v) for v in vals]
        xy = torch.cat(kpts).float()
        batch = torch.repeat_interleave(torch.arange(b, device=xy.device), torch.tensor(counts, device=xy.device))
        if self.subpixel:
            xy = soft_refine(scores.float(), batch, xy, self.nms_radius, self.temperature)
        desc = describe_normalised(self.net, levels, batch, xy)
        return [
            Features(keypoints=kp, scores=sc.float(), descriptors=d)
            for kp, sc, d in zip(xy.split(counts), vals, desc.split(counts))
        ]


def build_alike(variant: str, weights: str | Path, device: torch.device | str = "cpu", **kwargs: object) -> ALIKE:
    """Build ``alike-<variant>`` (``t``, ``s``, ``n`` or ``l``) from its released weight file.

    Raises:
        MissingFileError: ``weights`` does not exist (the message says where ALIKE weights come from).
        BadInputError: unknown variant, or a file that is not this variant's state dict.
    """
    if variant not in ALIKE_CONFIGS:
        raise BadInputError(f"unknown ALIKE variant {variant!r}; choose from {sorted(ALIKE_CONFIGS)}")
    config = ALIKE_CONFIGS[variant]
    net = ALNet(config)
    load_into(net, load_checkpoint(weights, WEIGHTS_HINT), str(weights))
    kwargs.setdefault("nms_radius", config.radius)
    return ALIKE(net, name=f"alike-{variant}", device=device, **kwargs)  # type: ignore[arg-type]
