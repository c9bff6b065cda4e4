"""ALIKE network (Zhao et al., TMM 2022): pure network, image in, dense maps (or maps at points) out.

An independent re-implementation whose module and parameter names follow the released
checkpoints of Shiaoming/ALIKE (BSD-3-Clause), so ``alike-{t,s,n,l}.pth`` load strictly.
Keypoint selection, sub-pixel refinement and descriptor sampling live in :mod:`models.alike`.

Architecture: four encoder blocks at strides 1, 2, 8 and 32 (max-pooling between them), each
reduced to ``dim / 4`` channels by a 1x1 convolution, upsampled to full resolution
(bilinear, ``align_corners=True`` as in training), concatenated, and a 1x1 head giving
``dim`` descriptor channels plus one score channel (sigmoid). The larger variant inserts an
extra 1x1 convolution + ReLU before that head (``single_head=False``). Besides the dense
``forward``, :class:`ALNet` offers an exactly equivalent sparse path (score map + descriptors at
chosen pixels) that skips the ``(D + 1) x H x W`` head output: 2-3x faster on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(frozen=True)
class AlikeConfig:
    """Widths of one released ALIKE variant."""

    c1: int  # channels of block 1 (full resolution)
    c2: int  # channels of block 2 (stride 2)
    c3: int  # channels of block 3 (stride 8)
    c4: int  # channels of block 4 (stride 32); equal to ``dim`` in every release
    dim: int  # descriptor size D
    single_head: bool  # False adds ``convhead1`` (1x1 conv + ReLU) before the output head
    radius: int = 2  # NMS / soft-detection radius the variant was trained with


# Read off the released weight files (note: ``n`` is single-head; only ``l`` has convhead1).
ALIKE_CONFIGS: dict[str, AlikeConfig] = {
    "t": AlikeConfig(8, 16, 32, 64, dim=64, single_head=True),
    "s": AlikeConfig(8, 16, 48, 96, dim=96, single_head=True),
    "n": AlikeConfig(16, 32, 64, 128, dim=128, single_head=True),
    "l": AlikeConfig(32, 64, 128, 128, dim=128, single_head=False),
}


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    """1x1 convolution without bias."""
    return nn.Conv2d(cin, cout, 1, bias=False)


class ConvBlock(nn.Module):
    """Two (conv3x3 -> BatchNorm -> ReLU) layers; the first block of the encoder."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.conv1.weight
        if x.shape[1] == 1 and w.shape[1] > 1:
            # a grey image replicated to RGB gives the same result with the weights summed over RGB
            w = w.sum(dim=1, keepdim=True)
        x = F.relu(self.bn1(F.conv2d(x, w, padding=1)), inplace=True)
        return F.relu(self.bn2(self.conv2(x)), inplace=True)


class ResBlock(nn.Module):
    """Basic residual block (two conv3x3 + BatchNorm) with a biased 1x1 projection shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.downsample(x), inplace=True)


def gather_pixels(fmap: torch.Tensor, batch: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Values of ``fmap [B, C, h, w]`` at integer cells ``(batch, x, y)`` (long, shape ``[M]``) -> ``[M, C]``.

    Indices are clamped to the map; the map is indexed in place, never copied.
    """
    h, w = fmap.shape[-2:]
    flat = y.clamp(0, h - 1) * w + x.clamp(0, w - 1)
    return fmap.flatten(2).transpose(1, 2)[batch, flat]


def bilinear_at(fmap: torch.Tensor, batch: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Bilinear interpolation of ``fmap [B, C, h, w]`` at real cell coordinates ``x, y [M]`` -> ``[M, C]``."""
    x0, y0 = x.floor(), y.floor()
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    top = gather_pixels(fmap, batch, x0, y0) * (1 - fx) + gather_pixels(fmap, batch, x0 + 1, y0) * fx
    bottom = gather_pixels(fmap, batch, x0, y0 + 1) * (1 - fx) + gather_pixels(fmap, batch, x0 + 1, y0 + 1) * fx
    return top * (1 - fy) + bottom * fy


def max_pool(x: torch.Tensor, k: int) -> torch.Tensor:
    """``k x k`` max pooling, stride ``k``, as two 1-D reductions (exact; ~3x faster than max_pool2d on CPU)."""
    b, c, h, w = x.shape
    rows = x.view(b, c, h, w // k, k).amax(dim=-1)
    return rows.view(b, c, h // k, k, w // k).amax(dim=3)


def upsample(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Bilinear upsampling by an integer factor with ``align_corners=True`` (the training setting)."""
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=True)


class ALNet(nn.Module):
    """ALIKE's network.

    ``forward(image [B, 3 | 1, H, W])``, RGB (or grey, treated as replicated RGB) in ``[0, 1]``
    with ``H, W`` multiples of 32, returns the dense maps ``scores [B, 1, H, W]`` (sigmoid) and
    ``descriptors [B, D, H, W]`` (raw, not normalised).

    Inference needs descriptors only at keypoints, so the wrapper uses the equivalent sparse
    path instead: :meth:`encode` (the four reduced levels), :meth:`score_map` and
    :meth:`describe` (descriptors at given integer pixels). Because 1x1 convolutions commute
    with bilinear upsampling, this never builds the ``(D + 1) x H x W`` head output.
    """

    stride = 1  # the dense maps are at full resolution
    pad_multiple = 32  # coarsest level is at stride 32
    level_strides = (1, 2, 8, 32)

    def __init__(self, config: AlikeConfig) -> None:
        super().__init__()
        self.config = config
        self.descriptor_dim = config.dim
        c1, c2, c3, c4, dim = config.c1, config.c2, config.c3, config.c4, config.dim
        self.block1 = ConvBlock(3, c1)
        self.block2 = ResBlock(c1, c2)
        self.block3 = ResBlock(c2, c3)
        self.block4 = ResBlock(c3, c4)
        self.conv1 = conv1x1(c1, dim // 4)
        self.conv2 = conv1x1(c2, dim // 4)
        self.conv3 = conv1x1(c3, dim // 4)
        self.conv4 = conv1x1(c4, dim // 4)
        if not config.single_head:
            self.convhead1 = conv1x1(dim, dim)
        self.convhead2 = conv1x1(dim, dim + 1)

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The four levels ``[B, D/4, H/s, W/s]`` for ``s`` in :attr:`level_strides` (after 1x1 conv + ReLU)."""
        h, w = image.shape[-2:]
        if image.dim() != 4 or image.shape[1] not in (1, 3) or h % self.pad_multiple or w % self.pad_multiple:
            raise ValueError(f"ALNet expects [B, 3|1, H, W] with H, W multiples of 32, got {tuple(image.shape)}")
        x1 = self.block1(image)
        x2 = self.block2(max_pool(x1, 2))
        x3 = self.block3(max_pool(x2, 4))
        x4 = self.block4(max_pool(x3, 4))
        reduce = (self.conv1, self.conv2, self.conv3, self.conv4)
        return [F.relu(conv(x), inplace=True) for conv, x in zip(reduce, (x1, x2, x3, x4))]

    def _concat(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Full-resolution concatenation of the upsampled levels (input of the heads)."""
        x = torch.cat([upsample(lv, s) for lv, s in zip(levels, self.level_strides)], dim=1)
        return F.relu(self.convhead1(x), inplace=True) if not self.config.single_head else x

    def score_map(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Sigmoid keypoint scores ``[B, 1, H, W]`` from :meth:`encode`'s levels."""
        w_score = self.convhead2.weight[-1:]  # [1, D, 1, 1]
        if not self.config.single_head:
            return torch.sigmoid(F.conv2d(self._concat(levels), w_score))
        # single head: project each level to one channel first, then upsample (linear, so exact)
        parts = w_score.split(self.config.dim // 4, dim=1)
        logit = sum(upsample(F.conv2d(lv, p), s) for lv, p, s in zip(levels, parts, self.level_strides))
        return torch.sigmoid(logit)

    def describe(self, levels: list[torch.Tensor], batch: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
        """Raw descriptors ``[M, D]`` at integer pixels ``xy [M, 2]`` (x, y) of images ``batch [M]``.

        Equal to the dense ``descriptors`` map read at those pixels: each level is interpolated
        there exactly as the ``align_corners=True`` upsampling would.
        """
        full_h, full_w = (levels[0].shape[-2], levels[0].shape[-1])
        feats = [gather_pixels(levels[0], batch, xy[:, 0], xy[:, 1])]  # full resolution: no interpolation
        for lv in levels[1:]:
            h, w = lv.shape[-2:]
            x = xy[:, 0].to(lv.dtype) * ((w - 1) / max(full_w - 1, 1))
            y = xy[:, 1].to(lv.dtype) * ((h - 1) / max(full_h - 1, 1))
            feats.append(bilinear_at(lv, batch, x, y))
        f = torch.cat(feats, dim=1)  # [M, D]
        if not self.config.single_head:
            f = F.relu(f @ self.convhead1.weight[:, :, 0, 0].T)
        return f @ self.convhead2.weight[:-1, :, 0, 0].T

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.convhead2(self._concat(self.encode(image)))
        return {"scores": torch.sigmoid(x[:, -1:]), "descriptors": x[:, :-1]}
