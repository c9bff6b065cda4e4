"""``lite`` v2 TraqPoint network: the real-time CPU design (pure network, no I/O).

Built from a per-layer profile of v1 (``models/README.md``): at 1248x384 in fp32, v1 spent ~11 ms
of its ~39 ms in the full-resolution policy convolutions (1->4->8 channels: tiny channel counts
that oneDNN runs far below peak) and ~21 ms in a 1.7 GMAC backbone. v2 keeps the paper's
semantics (dense descriptors + matchability at stride 8, a policy logit for every pixel) at
~0.5 GMAC:

- **stem**: one 3x3 stride-2 convolution on the full-resolution image; everything else runs at
  stride >= 2, where channel counts are large enough for the vector units.
- **backbone**: strides 4/8/16/32 with channels 16/32/96/192 (v1: 24/64/128/192); the wide
  stages are depthwise-separable; fused top-down (32 -> 16 -> 8) by 1x1 laterals and a
  depthwise 3x3 whose pointwise half is the descriptor head (v1: a dense 3x3, 276 MMAC alone).
- **policy head**: its own stride-2 3x3 on the image, two depthwise 3x3 and a pointwise give one
  logit per 2x2 block (11x11 px receptive field; the variants that stage 2 broke are listed in
  ``__init__``). Keypoints are picked on this stride-2 map (NMS, top-k) and refined to sub-pixel
  positions by a local soft-argmax, which also costs 4x less than selection on a full-resolution
  map.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .fusion import channels_last_view
from .lite import LiteNet


def conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv -> BatchNorm -> ReLU (folded into one convolution at inference, ``models/fusion.py``)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout, affine=False),
        nn.ReLU(inplace=True),
    )


def standardise(image: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-image zero mean, unit variance ``[B, 1, H, W]`` (InstanceNorm for one channel).

    The statistics come from every 4th pixel of every 4th row (1/16 of the image: the same to
    ~1e-3 on real images). The map is a subtraction and an in-place product: ``addcmul`` with
    broadcast ``[B, 1, 1, 1]`` factors took 3x longer (0.11 against 0.03 ms at 640x480, 2 threads).
    """
    mean, scale = standardise_stats(image, eps)
    return (image - mean.view(-1, 1, 1, 1)).mul_(scale.view(-1, 1, 1, 1))


def standardise_stats(image: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image mean ``[B]`` and inverse standard deviation ``[B]`` of ``image [B, 1, H, W]``
    from every 4th pixel of every 4th row (what :func:`standardise` applies)."""
    sub = image[..., ::4, ::4].flatten(1)
    return sub.mean(1), sub.var(1, unbiased=False).add(eps).rsqrt()


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``[B, C, h, w]`` to ``size`` (half-pixel centres)."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def repeat2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2 upsampling ``[B, C, h, w] -> [B, C, 2h, 2w]`` (each value fills its 2x2 block)."""
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


REFINE_KINDS = ("conv", "mlp")


def refine_pad(ring: int) -> int:
    """Pixels a refinement patch extends past the 2x2 block on each side: the window's ``ring``
    plus the conv head's receptive radius (3), so the patch side is ``2 + 2 refine_pad(ring)``."""
    return ring + 3


def refine_head(kind: str, width: int, ring: int) -> nn.Sequential:
    """The sub-pixel head on standardised patches of side ``P = 2 + 2 ring + 6`` around a 2x2 block.

    Both score the ``n x n`` window (``n = 2 + 2 ring``) at the patch centre from the ``P x P``
    patch (a 7x7 px receptive field per score for ``conv``, the whole patch for ``mlp``):

    - ``conv``: ``[N, 1, P, P] -> [N, 1, n, n]``, a 3x3 convolution to ``width`` channels, two
      depthwise 3x3 and a pointwise (1.3 k parameters at width 8);
    - ``mlp``: ``[N, P * P] -> [N, n * n]``, one hidden layer of ``width`` units. Two matrix
      products for every keypoint at once instead of four convolutions on tiny tensors, where
      oneDNN runs far below peak: 0.2 ms for 1024 patches against 1.8-2.9 ms for ``conv``
      (``models/README.md``).
    """
    if kind == "mlp":
        p, n = 2 + 2 * refine_pad(ring), 2 * ring + 2
        return nn.Sequential(nn.Linear(p * p, width), nn.ReLU(inplace=True), nn.Linear(width, n * n))
    return nn.Sequential(
        nn.Conv2d(1, width, 3), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, groups=width), nn.ReLU(inplace=True),
        nn.Conv2d(width, width, 3, groups=width), nn.ReLU(inplace=True),
        nn.Conv2d(width, 1, 1),
    )


def gather_patches(image: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor, pad: int) -> torch.Tensor:
    """Patches ``[N, P, P]`` (``P = 2 + 2 pad``) of ``image [1, 1, H, W]`` whose pixel
    ``(pad, pad)`` is ``(x0, y0) [N]``, replicate padding at the border.

    One replicate pad of the image, then a strided view of every patch origin indexed by the ``N``
    origins: no ``[N, P, P]`` index tensor is built (0.25 ms less than a flat ``index_select`` for
    1024 patches of 12 x 12, 2 threads).
    """
    p = 2 + 2 * pad
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")[0, 0]
    ph, pw = padded.shape
    every = padded.as_strided((ph - p + 1, pw - p + 1, p, p), (pw, 1, pw, 1))
    return every[y0, x0]


def window_offsets(ring: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``[(2 + 2 ring)^2, 2]``: the (x, y) offset of each window cell from the block's top-left pixel,
    row-major (the soft-argmax is ``softmax(logits) @ offsets``)."""
    g = torch.arange(-ring, ring + 2, device=device, dtype=dtype)
    return torch.stack([g.repeat(len(g)), g.repeat_interleave(len(g))], dim=1)


class LiteNet2(nn.Module):
    """Dense descriptors, matchability and policy logits from a grey image.

    ``forward(image [B, 1, H, W])`` with ``H, W`` multiples of 32 returns a dict:
    ``descriptors [B, D, H/8, W/8]`` (L2-normalised along D), ``matchability [B, 1, H/8, W/8]``
    (sigmoid), ``logits [B, 1, H, W]`` (policy logits, unnormalised, constant over each 2x2
    block: the softmax over pixels of training is the stride-2 policy with a uniform position in
    the block). An inference wrapper may set ``full_res_logits = False`` to get the stride-2 map
    ``[B, 1, H/2, W/2]`` itself, and ``with_matchability = False`` (detecting with the policy) to
    skip the matchability head, whose key is then absent.
    """

    stride = 8
    logit_stride = 2  # the policy has one logit per 2x2 pixel block
    with_matchability = True
    full_res_logits = True  # False: ``logits`` at stride 2, for a wrapper that detects there
    default_conf = {
        "dims": (8, 16, 32, 96, 192),  # channels at strides 2 (stem), 4, 8, 16, 32
        "fused_dim": 64,  # channels of the fused stride-8 map
        "descriptor_dim": 64,  # D of the dense descriptor map
        "refine_dim": 0,  # channels of the full-resolution refinement head (0: none, quadratic fit instead)
        "refine_ring": 2,  # px around the 2x2 block the head may move a keypoint to (window 2 + 2 * ring)
        "refine_kind": "conv",  # "conv" (3 convolutions, 8 channels) or "mlp" (one hidden layer on the patch)
        "context_dim": 0,  # hidden width of the policy's region-level logit from the shared features (0: none)
        # backbone layout (SLIM: the seventh session's cheaper variant, ~14 % less forward time)
        "block4_depth": 2,  # convolutions at stride 4 (1: the stride-2 one only)
        "separable8": False,  # stride 8's second 3x3 as depthwise 3x3 + pointwise
        "separable32": False,  # stride 32's stride-2 3x3 as depthwise 3x3 + pointwise
    }
    SLIM = {"block4_depth": 1, "separable8": True, "separable32": True}

    def __init__(self, **conf: object) -> None:
        super().__init__()
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown LiteNet2 options: {sorted(unknown)}")
        self.conf = {**self.default_conf, **conf}
        c2, c4, c8, c16, c32 = self.conf["dims"]
        f, d = self.conf["fused_dim"], self.conf["descriptor_dim"]
        self.stem = conv_bn(1, c2, stride=2)
        if self.conf["block4_depth"] not in (1, 2):
            raise ValueError(f"block4_depth must be 1 or 2, got {self.conf['block4_depth']!r}")
        second4 = [conv_bn(c4, c4)] if self.conf["block4_depth"] == 2 else []
        self.block4 = nn.Sequential(conv_bn(c2, c4, stride=2), *second4)
        second8 = [conv_bn(c8, c8, groups=c8), conv_bn(c8, c8, k=1)] if self.conf["separable8"] else [conv_bn(c8, c8)]
        self.block8 = nn.Sequential(conv_bn(c4, c8, stride=2), *second8)
        # depthwise-separable where the channels are wide: capacity at low resolution, few MACs
        self.block16 = nn.Sequential(conv_bn(c8, c16, stride=2), conv_bn(c16, c16, groups=c16), conv_bn(c16, c16, k=1))
        down32 = ([conv_bn(c16, c16, stride=2, groups=c16), conv_bn(c16, c32, k=1)] if self.conf["separable32"]
                  else [conv_bn(c16, c32, stride=2)])
        self.block32 = nn.Sequential(*down32, conv_bn(c32, c32, k=1), conv_bn(c32, f, k=1))
        self.lateral8 = nn.Conv2d(c8, f, 1)
        self.lateral16 = nn.Conv2d(c16, f, 1)
        self.fuse = conv_bn(f, f, groups=f)  # depthwise 3x3; the descriptor head is its pointwise half
        self.descriptor_head = nn.Conv2d(f, d, 1)
        self.matchability_head = nn.Sequential(conv_bn(f, 16, k=1), nn.Conv2d(16, 1, 1))
        # The policy: its own stride-2 3x3 on the image (trained in stage 2), then two depthwise 3x3
        # and a pointwise, one logit per stride-2 pixel (11x11 px receptive field). Measured and
        # dropped: (1) one logit per pixel phase: stage 2 put 99 % of the keypoints on one phase
        # (a 2 px lattice); (2) reading the descriptor's frozen stem; (3) adding a region-level
        # context logit from the shared features, as v1 does: stage 2 made it dominate (std 13.5
        # against 4.8), a smooth map whose rank within a cell survives warps (consistency 0.95)
        # but whose peaks are not repeatable (churchill repeatability 24 %, v1: 69 %).
        self.pixel_embed = nn.Sequential(
            nn.Conv2d(1, c2, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, 3, padding=1, groups=c2), nn.ReLU(inplace=True),
            nn.Conv2d(c2, c2, 3, padding=1, groups=c2), nn.ReLU(inplace=True),
            nn.Conv2d(c2, 1, 1),
        )
        # Optional region-level policy logit (as v1's ``policy_head``): a 1x1 MLP on the detached
        # fused stride-8 features, upsampled to the stride-2 map and added to the local logit. It
        # is trained by distillation from v1 (``training.distill_policy --context_dim``), not by
        # REINFORCE, under which the context term came to dominate (item (3) above).
        cd = int(self.conf["context_dim"])
        self.policy_context = None
        if cd:
            self.policy_context = nn.Sequential(nn.Conv2d(f, cd, 1), nn.ReLU(inplace=True), nn.Conv2d(cd, 1, 1))
        r = self.conf["refine_dim"]
        # Optional sub-pixel head (trained after stage 2 by ``training.refine``), run only on the
        # patches around the selected 2x2 blocks, never on the whole image. ``refine_ring`` is a
        # buffer so that a state dict carries the window it was trained for.
        self.refine_head = None
        if self.conf["refine_kind"] not in REFINE_KINDS:
            raise ValueError(f"refine_kind must be one of {REFINE_KINDS}, got {self.conf['refine_kind']!r}")
        if r:
            self.refine_head = refine_head(self.conf["refine_kind"], r, int(self.conf["refine_ring"]))
            self.register_buffer("refine_ring", torch.tensor(int(self.conf["refine_ring"])))
            # the window's cell offsets, built once (not a state-dict entry: they follow from the ring)
            self.register_buffer("refine_offsets", window_offsets(int(self.conf["refine_ring"]), torch.float32,
                                                                  torch.device("cpu")), persistent=False)

    @staticmethod
    def conf_from_state(state: dict) -> dict:
        """The options a state dict was trained with (read from its tensor shapes)."""
        separable32 = "block32.3.0.weight" in state
        head = state.get("refine_head.0.weight")  # [width, P * P] for the mlp head, 4-D for the conv one
        first32 = "block32.1.0" if separable32 else "block32.0.0"  # the layer that makes the stride-32 channels
        dims = tuple(state[f"{name}.weight"].shape[0] for name in ("stem.0", "block4.0.0", "block8.0.0",
                                                                     "block16.0.0", first32))
        return {
            "dims": dims,
            "fused_dim": state["lateral8.weight"].shape[0],
            "descriptor_dim": state["descriptor_head.weight"].shape[0],
            "refine_dim": head.shape[0] if head is not None else 0,
            "refine_ring": int(state["refine_ring"]) if "refine_ring" in state else 2,
            "refine_kind": "mlp" if head is not None and head.dim() == 2 else "conv",
            "context_dim": state["policy_context.0.weight"].shape[0] if "policy_context.0.weight" in state else 0,
            "block4_depth": 2 if "block4.1.0.weight" in state else 1,
            "separable8": "block8.2.0.weight" in state,
            "separable32": separable32,
        }

    @staticmethod
    def fits_state(state: dict) -> bool:
        """``state`` is a LiteNet2 checkpoint (v1 has no ``stem``)."""
        return "stem.0.weight" in state

    def policy_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in stage 2 (everything else is the frozen descriptor)."""
        context = list(self.policy_context.parameters()) if self.policy_context is not None else []
        return [*self.pixel_embed.parameters(), *context]

    @property
    def policy_reads_features(self) -> bool:
        """Whether :meth:`policy_logits` needs the shared features (a region-level context logit)."""
        return self.policy_context is not None

    @staticmethod
    def standardised(image: torch.Tensor) -> torch.Tensor:
        """The network's input ``[B, 1, H, W]``: :func:`standardise`, viewed channels-last."""
        return channels_last_view(standardise(image))

    def features(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised image ``[B, 1, H, W]`` and fused stride-8 features ``[B, F, H/8, W/8]``."""
        x = self.standardised(image)
        return x, self.shared_features(x)

    def shared_features(self, x: torch.Tensor) -> torch.Tensor:
        """Fused stride-8 features ``[B, F, H/8, W/8]`` of the standardised image ``x [B, 1, H, W]``."""
        f8 = self.block8(self.block4(self.stem(x)))
        f16 = self.block16(f8)
        f32 = self.block32(f16)
        # top-down: stride 32 joins stride 16 there, then one upsampling to stride 8
        g16 = self.lateral16(f16) + upsample(f32, f16.shape[-2:])
        return self.fuse(self.lateral8(f8) + upsample(g16, f8.shape[-2:]))

    def dense_descriptors(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised descriptors ``[B, D, H/8, W/8]`` of the standardised image ``x [B, 1, H, W]``
        (the ``descriptors`` of :meth:`forward`; an extractor that detects first calls this after
        selecting and refining its keypoints, while the image is still in cache)."""
        return self.descriptors_of(self.shared_features(x))

    def descriptors_of(self, shared: torch.Tensor) -> torch.Tensor:
        """L2-normalised descriptors ``[B, D, H/8, W/8]`` of fused features ``shared [B, F, H/8, W/8]``."""
        return F.normalize(self.descriptor_head(shared), dim=1)

    def policy_logits(self, x: torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:
        """Stride-2 logits ``[B, 1, H/2, W/2]`` from the standardised image ``[B, 1, H, W]`` (and, with a
        context head, the fused features ``shared [B, F, H/8, W/8]`` of :meth:`shared_features`, detached).

        Always fp32, also inside a bf16/fp16 autocast: bf16 rounding of logits that span a few
        hundred reorders the top-k (measured on v1: 15 % of KITTI keypoints change).
        """
        with torch.autocast(x.device.type, enabled=False):
            local = self.pixel_embed(x.float())
            if self.policy_context is None:
                return local
            if shared is None:
                raise ValueError("this LiteNet2's policy has a context head: pass the shared features")
            coarse = self.policy_context(shared.detach().float())  # [B, 1, H/8, W/8]
            return local + F.interpolate(coarse, scale_factor=self.stride // self.logit_stride, mode="bilinear",
                                         align_corners=False)

    def refine_keypoints(self, image: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """Sub-pixel keypoints ``[N, 2]`` (x, y, image pixels) of stride-2 blocks ``[N, 2]`` of one image.

        ``image [1, 1, H, W]`` is the image the blocks refer to, not standardised (the extractor
        passes it before padding; the statistics are computed from it here). Block ``(bx, by)``
        covers pixels ``2bx..2bx+1``; the head scores the block and a ring of ``refine_ring``
        pixels around it (a ``(2 + 2 ring)^2`` window), and the keypoint is their soft-argmax
        (softmax of the head's logits: differentiable, the same in training and inference, at most
        ``ring + 0.5`` px from the block centre per axis). Only ``N`` small patches are gathered and
        standardised with the whole image's statistics (:func:`standardise`'s subsample).
        """
        if self.refine_head is None:
            raise RuntimeError("this LiteNet2 has no refinement head (refine_dim = 0)")
        if blocks.numel() == 0:
            return blocks.float().reshape(0, 2)
        h, w = image.shape[-2:]
        ring = int(self.refine_ring)
        mean, scale = standardise_stats(image.float())
        x0 = (blocks[:, 0].long() * 2).clamp(0, w - 2)  # the block's top-left pixel
        y0 = (blocks[:, 1].long() * 2).clamp(0, h - 2)
        patches = gather_patches(image.float(), x0, y0, refine_pad(ring))
        with torch.autocast(image.device.type, enabled=False):
            if self.conf["refine_kind"] == "mlp":  # standardisation folded into the first layer (same up to rounding)
                first, rest = self.refine_head[0], self.refine_head[1:]
                weight = first.weight * scale
                bias = first.bias - (mean * scale) * first.weight.sum(1)
                logits = rest(torch.addmm(bias, patches.flatten(1), weight.t()))
            else:
                logits = self.refine_head(((patches - mean) * scale)[:, None])
        prob = logits.flatten(1).softmax(dim=1)  # [N, n * n], row-major (y, x)
        offsets = self.refine_offsets  # built for the constructor's ring
        if offsets.shape[0] != prob.shape[1]:  # a conv head's ring loaded from a state dict since: not cached,
            offsets = window_offsets(ring, prob.dtype, prob.device)  # (an inference-mode buffer would break autograd)
        return torch.stack([x0, y0], dim=-1).float() + prob @ offsets.to(prob.dtype)

    describe = LiteNet.describe  # stage-1 outputs only: the same heads on the shared features

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x, shared = self.features(image)
        out = {"descriptors": self.descriptors_of(shared)}
        if self.with_matchability:
            out["matchability"] = torch.sigmoid(self.matchability_head(shared))
        logits = self.policy_logits(x, shared)
        out["logits"] = repeat2(logits) if self.full_res_logits else logits
        return out
