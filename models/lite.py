"""``lite`` TraqPoint network: a small CNN for real-time CPU use (pure network, no I/O).

Design (measured choices are in ``models/README.md``): an XFeat-class backbone on the grey image
gives shared features at stride 8; from them a dense descriptor map and a matchability map
(stage 1), and a *policy head* (stage 2): a tiny full-resolution CNN on the pixels plus a
region-level logit from the (frozen, detached) shared features, upsampled and added. That keeps
the paper's semantics (a logit per pixel; softmax over pixels in training, NMS/top-k at
inference) at a fraction of the cost of a full-resolution backbone. The legacy ``cell`` head
(64 logits per 8x8 cell) is kept only to load the checkpoints that used it.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fusion import channels_last_view


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv -> BatchNorm -> ReLU (the basic block of the backbone)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
        nn.BatchNorm2d(cout, affine=False),
        nn.ReLU(inplace=True),
    )


class LiteNet(nn.Module):
    """Dense descriptors, matchability and policy logits from a grey image.

    ``forward(image [B, 1, H, W])`` with ``H, W`` multiples of 32 returns a dict:
    ``descriptors [B, D, H/8, W/8]`` (L2-normalised along D), ``matchability [B, 1, H/8, W/8]``
    (sigmoid), ``logits [B, 1, H, W]`` (policy logits, unnormalised).
    """

    stride = 8
    default_conf = {
        "dims": (24, 64, 128, 192),  # channels at strides 4, 8, 16, 32
        "descriptor_dim": 64,  # D of the dense descriptor map
        "policy_dim": 64,  # hidden width of the per-cell policy head
        "policy": "conv",  # "conv": full-res 3x3 convs on pixels + coarse context; "cell": 64 logits per cell
    }

    def __init__(self, **conf: object) -> None:
        super().__init__()
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown LiteNet options: {sorted(unknown)}")
        self.conf = {**self.default_conf, **conf}
        c4, c8, c16, c32 = self.conf["dims"]
        d, p = self.conf["descriptor_dim"], self.conf["policy_dim"]
        self.norm = nn.InstanceNorm2d(1)
        self.block4 = nn.Sequential(conv_bn(1, 8, stride=2), conv_bn(8, c4, stride=2), conv_bn(c4, c4))
        self.block8 = nn.Sequential(conv_bn(c4, c8, stride=2), conv_bn(c8, c8), conv_bn(c8, c8, k=1))
        self.block16 = nn.Sequential(conv_bn(c8, c16, stride=2), conv_bn(c16, c16), conv_bn(c16, c16, k=1))
        self.block32 = nn.Sequential(conv_bn(c16, c32, stride=2), conv_bn(c32, c32), conv_bn(c32, c8, k=1))
        self.lateral16 = nn.Conv2d(c16, c8, 1)
        self.fuse = nn.Sequential(conv_bn(c8, c8), conv_bn(c8, c8, k=1))
        self.descriptor_head = nn.Conv2d(c8, d, 1)
        self.matchability_head = nn.Sequential(conv_bn(c8, 32, k=1), nn.Conv2d(32, 1, 1))
        if self.conf["policy"] == "cell":
            self.pixel_embed = nn.Sequential(nn.Conv2d(64, p, 1), nn.ReLU(inplace=True))
            self.policy_head = nn.Sequential(
                nn.Conv2d(p + c8, p, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(p, p, 1),
                nn.ReLU(inplace=True),
                nn.Conv2d(p, 64, 1),
            )
        elif self.conf["policy"] == "conv":
            # Translation-covariant by construction (a shifted image shifts the logits), which the
            # track-aware reward needs from the first step; ~0.3 kMAC per pixel at full resolution.
            self.pixel_embed = nn.Sequential(
                nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(8, 1, 1),
            )
            self.policy_head = nn.Sequential(nn.Conv2d(c8, 32, 1), nn.ReLU(inplace=True), nn.Conv2d(32, 1, 1))
        else:
            raise ValueError(f"unknown policy head {self.conf['policy']!r}; use conv or cell")

    @staticmethod
    def conf_from_state(state: dict) -> dict:
        """The options a state dict was trained with (the policy-head type shows in its shapes)."""
        w = state.get("pixel_embed.0.weight")
        return {"policy": "cell"} if w is not None and w.shape[1] == 64 else {}

    def policy_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in stage 2 (everything else is the frozen descriptor)."""
        return [*self.pixel_embed.parameters(), *self.policy_head.parameters()]

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised image and fused stride-8 features."""
        x = channels_last_view(self.norm(image))
        f4 = self.block4(x)
        f8 = self.block8(f4)
        f16 = self.block16(f8)
        f32 = self.block32(f16)
        size = f8.shape[-2:]
        up = lambda t: F.interpolate(t, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        return x, self.fuse(f8 + up(self.lateral16(f16)) + up(f32))

    def policy_logits(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        """Full-resolution logits ``[B, 1, H, W]`` from pixels and detached shared features.

        Always fp32, also inside a bf16/fp16 autocast: the logits span ~300 and their top-k
        ranking changes under bf16 rounding (15 % of the KITTI keypoints differ; <0.2 % with
        only the backbone in bf16).
        """
        with torch.autocast(x.device.type, enabled=False):
            return self._policy_logits(x.float(), shared.detach().float())

    def _policy_logits(self, x: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
        if self.conf["policy"] == "conv":
            coarse = self.policy_head(shared)  # region-level preference at stride 8
            up = F.interpolate(coarse, scale_factor=self.stride, mode="bilinear", align_corners=False)
            return self.pixel_embed(x) + up
        cells = F.pixel_unshuffle(x, self.stride)  # [B, 64, H/8, W/8]
        h = torch.cat([self.pixel_embed(cells), shared], dim=1)
        return F.pixel_shuffle(self.policy_head(h), self.stride)

    def describe(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage-1 outputs only (descriptors, matchability), skipping the policy head."""
        _, shared = self.features(image)
        return {
            "descriptors": F.normalize(self.descriptor_head(shared), dim=1),
            "matchability": torch.sigmoid(self.matchability_head(shared)),
        }

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x, shared = self.features(image)
        return {
            "descriptors": F.normalize(self.descriptor_head(shared), dim=1),
            "matchability": torch.sigmoid(self.matchability_head(shared)),
            "logits": self.policy_logits(x, shared),
        }
