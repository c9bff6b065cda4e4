"""Full-resolution keypoint policy network of the ``paper`` TraqPoint model (pure network).

A light CNN (paper, Sec. "keypoint policy"): four blocks of widths 8/16/32/64 at strides 1, 2, 8
and 32 (max-pooling between blocks), each block's output squeezed by a 1x1 conv to ``hidden / 4``
channels, upsampled back to full resolution (bilinear, corners aligned), concatenated, and a 1x1
head gives one logit per pixel, ``[B, 1, H, W]``. ``H`` and ``W`` must be multiples of 32.

Input: RGB in ``[0, 1]`` without normalisation, as in the reference implementation.
Parameter names (``block1..4.{conv1,bn1,conv2,bn2,downsample}``, ``conv1..4``, ``policy_head``)
follow the reference checkpoint (its ``detector.*`` entries).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (BatchNorm follows)."""
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class DoubleConv(nn.Module):
    """Two conv3x3 -> BatchNorm -> ReLU (the first, full-resolution block)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class ResidualConv(nn.Module):
    """Basic residual block whose shortcut is a 1x1 conv (with bias) changing the width."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.downsample = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.downsample(x))


class PolicyNet(nn.Module):
    """Per-pixel keypoint logits from an RGB image.

    Args:
        dims: widths of the four blocks.
        hidden: channels of the concatenated multi-scale features (``hidden / 4`` per block).
        in_channels: image channels.
    """

    pools = (1, 2, 4, 4)  # max-pool factor before each block: strides 1, 2, 8, 32

    def __init__(
        self, dims: tuple[int, int, int, int] = (8, 16, 32, 64), hidden: int = 64, in_channels: int = 3
    ) -> None:
        super().__init__()
        if hidden % 4:
            raise ValueError(f"hidden must be divisible by 4, got {hidden}")
        self.block1 = DoubleConv(in_channels, dims[0])
        self.block2 = ResidualConv(dims[0], dims[1])
        self.block3 = ResidualConv(dims[1], dims[2])
        self.block4 = ResidualConv(dims[2], dims[3])
        for i, d in enumerate(dims, start=1):
            setattr(self, f"conv{i}", nn.Conv2d(d, hidden // 4, 1, bias=False))
        self.policy_head = nn.Conv2d(hidden, 1, 1, bias=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``image [B, C, H, W]`` in ``[0, 1]`` -> logits ``[B, 1, H, W]``."""
        h, w = image.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"PolicyNet needs H and W multiples of 32, got {h}x{w}")
        x, levels = image, []
        for i, pool in enumerate(self.pools, start=1):
            if pool > 1:
                x = F.max_pool2d(x, pool)
            x = getattr(self, f"block{i}")(x)
            squeezed = F.relu(getattr(self, f"conv{i}")(x))
            if i > 1:  # blocks 2-4 run below full resolution
                squeezed = F.interpolate(squeezed, size=(h, w), mode="bilinear", align_corners=True)
            levels.append(squeezed)
        return self.policy_head(torch.cat(levels, dim=1))
