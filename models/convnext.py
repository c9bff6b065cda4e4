"""DINOv3 ConvNeXt backbone (pure network): image in, four feature maps out.

Owns the ConvNeXt architecture that Meta's DINOv3 release uses, with the *same parameter names*,
so that ``dinov3_convnext_base_pretrain_lvd1689m-801f2ba9.pth`` loads with ``strict=True``:

- ``downsample_layers.0`` = 4x4/4 conv + channels-first LayerNorm (the stem);
  ``downsample_layers.{1,2,3}`` = channels-first LayerNorm + 2x2/2 conv;
- ``stages.{i}.{j}`` = ConvNeXt blocks (``dwconv``, ``norm``, ``pwconv1``, ``pwconv2``, ``gamma``);
- ``norm`` = the final LayerNorm, registered a second time as ``norms.3`` (``norms.0-2`` are
  identities), so the checkpoint holds both ``norm.*`` and ``norms.3.*``.

:meth:`ConvNeXt.forward` returns the outputs of the four stages at strides 4, 8, 16 and 32, each
passed through ``norms[i]`` (only the last one is normalised), which is what DINOv3's
``get_intermediate_layers(x, n=[0, 1, 2, 3])`` gives as ``[B, C, H/s, W/s]`` maps.
"""

from __future__ import annotations

import torch
import torch.nn as nn

SIZES: dict[str, dict[str, tuple[int, ...]]] = {
    "tiny": {"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768)},
    "small": {"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768)},
    "base": {"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024)},
    "large": {"depths": (3, 3, 27, 3), "dims": (192, 384, 768, 1536)},
}

LN_EPS = 1e-6  # DINOv3 (like the original ConvNeXt) uses 1e-6 in every LayerNorm


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channel axis of a ``[B, C, H, W]`` map (parameters ``weight``, ``bias``)."""

    def __init__(self, channels: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 conv -> LayerNorm -> MLP (x4) -> layer scale, added to the input."""

    def __init__(self, dim: int, layer_scale: float = 1e-6) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # channels-last for the LayerNorm and the linears
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    """DINOv3 ConvNeXt trunk; ``forward(x [B, 3, H, W])`` -> four maps at strides 4/8/16/32.

    Args:
        size: one of :data:`SIZES` (the DINOv3 release used by TraqPoint is ``"base"``).
        in_channels: input channels (3: ImageNet-normalised RGB).
    """

    strides = (4, 8, 16, 32)

    def __init__(self, size: str = "base", in_channels: int = 3) -> None:
        super().__init__()
        if size not in SIZES:
            raise ValueError(f"unknown ConvNeXt size {size!r}; choose from {sorted(SIZES)}")
        depths, dims = SIZES[size]["depths"], SIZES[size]["dims"]
        self.dims = dims
        stem = nn.Sequential(nn.Conv2d(in_channels, dims[0], 4, stride=4), ChannelsFirstLayerNorm(dims[0]))
        downs = [
            nn.Sequential(ChannelsFirstLayerNorm(dims[i]), nn.Conv2d(dims[i], dims[i + 1], 2, stride=2))
            for i in range(3)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(nn.Sequential(*(ConvNeXtBlock(d) for _ in range(n))) for d, n in zip(dims, depths))
        self.norm = nn.LayerNorm(dims[-1], eps=LN_EPS)
        # The same LayerNorm again under ``norms.3``: the release stores it under both names.
        self.norms = nn.ModuleList([nn.Identity(), nn.Identity(), nn.Identity(), self.norm])
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """ConvNeXt initialisation (truncated normal, std 0.02); pretrained weights replace it."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for down, stage, norm in zip(self.downsample_layers, self.stages, self.norms):
            x = stage(down(x))
            # norms[i] is a LayerNorm over channels (last level) or an identity: apply channels-last.
            feats.append(norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
        return feats
