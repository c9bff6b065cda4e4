"""XFeat's network (Potje et al., "XFeat: Accelerated Features for Lightweight Image Matching", CVPR 2024).

The architecture of the authors' ``XFeatModel`` (verlab/accelerated_features, Apache-2.0), written
for inference: every BatchNorm is already folded into its convolution (as in the released
``xfeat.onnx``, whose initializers :mod:`models.xfeat_weights` loads), so each block is a plain
``Conv2d(bias=True) -> ReLU``. The semi-dense refinement MLP (``fine_matcher``, XFeat*) is not
part of the ONNX file and is not built here.

Layout (input ``[B, C, H, W]``, ``H`` and ``W`` multiples of 32; C channels averaged to grey and
instance-normalised):

==========================  ==========  ========================================================
block                       stride      channels
==========================  ==========  ========================================================
``block1`` (+ ``skip1``)    4           1 -> 4 -> 8 -> 8 -> 24 (skip: 4x4 average pool, 1x1 conv)
``block2``                  4           24 -> 24 -> 24
``block3``                  8           24 -> 64 -> 64 -> 64 (last 1x1)
``block4``                  16          64 -> 64 -> 64 -> 64
``block5``                  32          64 -> 128 -> 128 -> 128 -> 64 (last 1x1)
``block_fusion``            8           ``block3 + up(block4) + up(block5)``, two 3x3, one 1x1
``heatmap_head``            8           two 1x1 + 1x1 -> 1, sigmoid: the reliability map
``keypoint_head``           8           the normalised image's 8x8 cells as 64 channels, three
                                        1x1 + 1x1 -> 65 logits (64 cell positions + dustbin)
==========================  ==========  ========================================================
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import BadInputError

OUTPUT_KEYS = ("descriptors", "keypoint_logits", "reliability")
CELL = 8  # keypoint logits: one 8x8 cell per stride-8 position


def conv_relu(cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """A convolution with its BatchNorm folded in (bias), then ReLU; ``padding = kernel // 2``."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=True), nn.ReLU(inplace=True))


class XFeatNet(nn.Module):
    """XFeat's backbone and heads with BatchNorm folded (see the module docstring for the layout).

    ``forward`` returns a dict with :data:`OUTPUT_KEYS`, all at stride 8 (``h = H / 8``):
    ``descriptors [B, 64, h, w]`` (raw, not normalised), ``keypoint_logits [B, 65, h, w]``
    (channel ``dy * 8 + dx`` = pixel ``(8j + dx, 8i + dy)`` of cell ``(i, j)``, channel 64 = no
    keypoint in the cell) and ``reliability [B, 1, h, w]`` in ``(0, 1)``.
    """

    stride = 8
    pad_multiple = 32
    descriptor_dim = 64

    def __init__(self) -> None:
        super().__init__()
        # modules are declared in the order the forward pass runs their convolutions: the order of
        # the Conv nodes in the authors' ONNX graph, which models.xfeat_weights relies on
        self.block1 = nn.Sequential(
            conv_relu(1, 4), conv_relu(4, 8, stride=2), conv_relu(8, 8), conv_relu(8, 24, stride=2)
        )
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1))
        self.block2 = nn.Sequential(conv_relu(24, 24), conv_relu(24, 24))
        self.block3 = nn.Sequential(conv_relu(24, 64, stride=2), conv_relu(64, 64), conv_relu(64, 64, kernel=1))
        self.block4 = nn.Sequential(conv_relu(64, 64, stride=2), conv_relu(64, 64), conv_relu(64, 64))
        self.block5 = nn.Sequential(
            conv_relu(64, 128, stride=2), conv_relu(128, 128), conv_relu(128, 128), conv_relu(128, 64, kernel=1)
        )
        self.block_fusion = nn.Sequential(conv_relu(64, 64), conv_relu(64, 64), nn.Conv2d(64, 64, 1))
        self.heatmap_head = nn.Sequential(conv_relu(64, 64, 1), conv_relu(64, 64, 1), nn.Conv2d(64, 1, 1))
        self.keypoint_head = nn.Sequential(
            conv_relu(CELL * CELL, 64, 1), conv_relu(64, 64, 1), conv_relu(64, 64, 1), nn.Conv2d(64, CELL * CELL + 1, 1)
        )

    @staticmethod
    def normalise(images: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> grey ``[B, 1, H, W]`` with zero mean and unit (biased) variance per image."""
        return F.instance_norm(images.mean(dim=1, keepdim=True), eps=1e-5)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense maps for ``images [B, C, H, W]`` (any ``C``; ``H, W`` multiples of 32)."""
        h, w = images.shape[-2:]
        if h % self.pad_multiple or w % self.pad_multiple:
            raise BadInputError(f"XFeatNet needs height and width divisible by 32, got {h}x{w} (resize first)")
        return self.forward_normalised(self.normalise(images))

    def forward_normalised(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network after :meth:`normalise`: ``x [B, 1, H, W]`` -> the dense maps of :meth:`forward`."""
        x2 = self.block2(self.block1(x) + self.skip1(x))
        x3 = self.block3(x2)
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        up4 = F.interpolate(x4, size, mode="bilinear", align_corners=False)
        up5 = F.interpolate(x5, size, mode="bilinear", align_corners=False)
        descriptors = self.block_fusion(x3 + up4 + up5)
        reliability = torch.sigmoid(self.heatmap_head(descriptors))
        logits = self.keypoint_head(F.pixel_unshuffle(x, CELL))
        return {"descriptors": descriptors, "keypoint_logits": logits, "reliability": reliability}


def cell_heatmap(logits: torch.Tensor) -> torch.Tensor:
    """Keypoint logits ``[B, 65, h, w]`` -> full-resolution heatmap ``[B, 1, 8h, 8w]``.

    Softmax over the 65 channels of each cell, dustbin dropped, the 64 probabilities laid out as
    the cell's 8x8 pixels (pixel shuffle; inverse of the network's pixel unshuffle).
    """
    probs = torch.softmax(logits.float(), dim=1)[:, : CELL * CELL]
    return F.pixel_shuffle(probs, CELL)
