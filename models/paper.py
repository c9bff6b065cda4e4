"""``paper`` TraqPoint network (DINOv3 ConvNeXt + deformable encoder descriptor, full-res policy).

The pure network and the loading of its weights; inference (padding, NMS, top-k, sampling) is
:class:`models.traqpoint.TraqPoint`. Same forward contract as :class:`models.lite.LiteNet`, at
stride 4 and D = 256.

Descriptor (stage 1): ImageNet-normalised RGB -> DINOv3 ConvNeXt-base (strides 4/8/16/32,
:mod:`models.convnext`) -> per level 1x1 conv to 256 + GroupNorm(32) -> 4-layer multi-scale
deformable encoder (:mod:`models.deform_attn`) -> levels upsampled to stride 4 (bilinear, corners
aligned) and summed = the dense descriptor map; a 1x1 conv head on it gives the matchability.
As in the reference, the backbone is frozen (run without gradients) unless ``train_backbone``.

Policy (stage 2): :class:`models.policy.PolicyNet` on the un-normalised RGB image.

Checkpoint layout
    The authors' ``traqpoint_best.pth`` is the flat ``state_dict`` of their ``TraqPoint`` module:
    ``detector.*`` (policy) and ``descriptor.*`` with ``backbone.0.dino.*`` (the DINOv3 ConvNeXt;
    index 1 of their backbone was a parameter-free position encoding), ``input_proj.{l}.{0,1}``,
    ``transformer.level_embed``, ``transformer.encoder.layers.{n}.*`` and ``matchibility_head.*``
    (their spelling). :class:`PaperNet` registers its modules under exactly these names, so the
    file loads with no renaming; ``tests/fixtures/traqpoint_paper_keys.json`` pins the table.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import Extractor
from .convnext import ConvNeXt
from .deform_attn import MultiScaleDeformableEncoder
from .errors import BadInputError
from .policy import PolicyNet
from .weights_io import load_checkpoint, load_into

log = logging.getLogger(__name__)

THIRD_PARTY = Path(__file__).resolve().parents[1] / "third_party"
CHECKPOINT = THIRD_PARTY / "traqpoint_best.pth"
DINOV3_WEIGHTS = THIRD_PARTY / "dinov3_convnext_base_pretrain_lvd1689m-801f2ba9.pth"
CHECKPOINT_HINT = (
    "download traqpoint_best.pth from the authors' release, https://huggingface.co/lihao20888/traqpoint "
    "(linked from https://github.com/xiaomi-research/traqpoint), into third_party/; see third_party/README.md"
)
DINOV3_HINT = (
    "request dinov3_convnext_base_pretrain_lvd1689m-801f2ba9.pth from Meta "
    "(https://github.com/facebookresearch/dinov3) and put it in third_party/; see third_party/README.md"
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """Conv (no bias) -> BatchNorm without affine -> ReLU, stored as ``layer.{0,1}``."""

    def __init__(self, cin: int, cout: int, k: int = 1) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout, affine=False),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class DinoFeatures(nn.Module):
    """RGB in ``[0, 1]`` -> ImageNet normalisation -> DINOv3 ConvNeXt maps (module ``dino``)."""

    def __init__(self, size: str = "base") -> None:
        super().__init__()
        self.dino = ConvNeXt(size)

    def forward(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        mean = rgb.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = rgb.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return self.dino((rgb - mean) / std)


class PaperDescriptor(nn.Module):
    """Dense descriptors ``[B, D, H/4, W/4]`` (not normalised) and matchability (sigmoid)."""

    def __init__(
        self,
        backbone: str = "base",
        dim: int = 256,
        encoder_layers: int = 4,
        heads: int = 8,
        points: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
        train_backbone: bool = False,
    ) -> None:
        super().__init__()
        # A one-element list so parameters are named ``backbone.0.dino.*`` as in the reference.
        self.backbone = nn.ModuleList([DinoFeatures(backbone)])
        self.train_backbone = train_backbone
        if not train_backbone:
            self.backbone.requires_grad_(False)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(32, dim)) for c in self.backbone[0].dino.dims
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        levels = len(self.input_proj)
        self.transformer = MultiScaleDeformableEncoder(dim, levels, heads, points, encoder_layers, ffn_dim, dropout)
        self.matchibility_head = nn.Sequential(
            ConvBNReLU(dim, 128), ConvBNReLU(128, 64), nn.Conv2d(64, 1, 1), nn.Sigmoid()
        )

    def pyramid(self, rgb: torch.Tensor) -> list[torch.Tensor]:
        """Backbone maps at strides 4/8/16/32 (without gradients when the backbone is frozen)."""
        with torch.set_grad_enabled(self.train_backbone and torch.is_grad_enabled()):
            return self.backbone[0](rgb)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        levels = [proj(f) for proj, f in zip(self.input_proj, self.pyramid(rgb))]
        levels = self.transformer(levels)
        size = levels[0].shape[-2:]
        dense = levels[0]
        for lvl in levels[1:]:
            dense = dense + F.interpolate(lvl, size=size, mode="bilinear", align_corners=True)
        return dense, self.matchibility_head(dense)


class PaperNet(nn.Module):
    """The ``paper`` TraqPoint network.

    ``forward(image [B, 1|3, H, W])`` in ``[0, 1]``, ``H, W`` multiples of 32, returns a dict:
    ``descriptors [B, 256, H/4, W/4]`` (L2-normalised along D), ``matchability [B, 1, H/4, W/4]``
    (sigmoid), ``logits [B, 1, H, W]`` (policy logits, unnormalised). A grey image is repeated to
    three channels (the network was trained on RGB).

    Args:
        backbone_weights: optional DINOv3 ConvNeXt weight file to initialise the backbone
            (training from the pretrained backbone, e.g. :data:`DINOV3_WEIGHTS`).
        **conf: overrides of :attr:`default_conf`.
    """

    stride = 4
    pad_multiple = 32
    wants_rgb = True  # the wrapper may pass RGB through instead of converting to grey
    default_conf = {
        "descriptor_dim": 256,  # D; the reference checkpoint has 256 (GroupNorm(32) needs a multiple of 32)
        "backbone": "base",  # DINOv3 ConvNeXt size (models.convnext.SIZES)
        "encoder_layers": 4,  # deformable encoder layers
        "heads": 8,  # attention heads
        "points": 8,  # sampling points per head and level
        "ffn_dim": 1024,  # hidden width of the encoder's feed-forward blocks
        "dropout": 0.1,  # encoder dropout (training only)
        "policy_dims": (8, 16, 32, 64),  # widths of the policy network's four blocks
        "policy_hidden": 64,  # concatenated multi-scale policy features
        "train_backbone": False,  # the reference keeps the DINOv3 backbone frozen
    }

    def __init__(self, backbone_weights: str | Path | None = None, **conf: object) -> None:
        super().__init__()
        unknown = set(conf) - set(self.default_conf)
        if unknown:
            raise ValueError(f"unknown PaperNet options: {sorted(unknown)}")
        self.conf = c = {**self.default_conf, **conf}
        if c["descriptor_dim"] % 32:
            raise ValueError(f"descriptor_dim must be a multiple of 32, got {c['descriptor_dim']}")
        # Read the backbone file first: a missing or bad file fails before the costly construction.
        backbone_state = None if backbone_weights is None else load_checkpoint(backbone_weights, DINOV3_HINT)
        self.detector = PolicyNet(tuple(c["policy_dims"]), c["policy_hidden"])
        self.descriptor = PaperDescriptor(
            c["backbone"],
            c["descriptor_dim"],
            c["encoder_layers"],
            c["heads"],
            c["points"],
            c["ffn_dim"],
            c["dropout"],
            c["train_backbone"],
        )
        if backbone_state is not None:
            load_into(self.descriptor.backbone[0].dino, backbone_state, str(backbone_weights))

    def policy_parameters(self) -> list[nn.Parameter]:
        """Parameters trained in stage 2 (everything else is the frozen descriptor)."""
        return list(self.detector.parameters())

    @staticmethod
    def to_rgb(image: torch.Tensor) -> torch.Tensor:
        """Check ``[B, 1|3, H, W]`` with H, W multiples of 32; repeat grey to three channels."""
        if image.dim() != 4 or image.shape[1] not in (1, 3):
            raise ValueError(f"image must be [B, 1|3, H, W], got {tuple(image.shape)}")
        if image.shape[-2] % 32 or image.shape[-1] % 32:
            raise ValueError(f"H and W must be multiples of 32, got {tuple(image.shape[-2:])}")
        return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image

    def describe(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stage-1 outputs only: ``descriptors`` and ``matchability`` (see the class docstring)."""
        dense, matchability = self.descriptor(self.to_rgb(image))
        return {"descriptors": F.normalize(dense, dim=1), "matchability": matchability}

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        rgb = self.to_rgb(image)
        dense, matchability = self.descriptor(rgb)
        return {
            "descriptors": F.normalize(dense, dim=1),
            "matchability": matchability,
            "logits": self.detector(rgb),
        }


def load_reference_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The authors' checkpoint (or one saved from :class:`PaperNet`) as a ``PaperNet`` state dict.

    Accepts the flat ``detector.* / descriptor.*`` layout, optionally wrapped in a ``model`` /
    ``state_dict`` entry or prefixed by ``module.`` (DDP) or ``_orig_mod.`` (``torch.compile``).

    Raises:
        MissingFileError: no file at ``path`` (the message says where to download it).
        BadInputError: unreadable, or not a TraqPoint checkpoint.
    """
    state = load_checkpoint(path, CHECKPOINT_HINT)
    state = {k.removeprefix("_orig_mod."): v for k, v in state.items()}
    if any(k.startswith(("stages.", "downsample_layers.")) for k in state):
        raise BadInputError(f"{path} is a DINOv3 backbone, not a TraqPoint checkpoint; pass it as backbone_weights")
    if not any(k.startswith("descriptor.") for k in state):
        raise BadInputError(f"{path} is not a TraqPoint checkpoint (no 'descriptor.*' entries); {CHECKPOINT_HINT}")
    return state


def load_backbone_weights(net: PaperNet, path: str | Path) -> None:
    """Initialise the ConvNeXt of ``net`` from a DINOv3 release file (strict: every tensor must fit)."""
    load_into(net.descriptor.backbone[0].dino, load_checkpoint(path, DINOV3_HINT), str(path))


def build_paper_extractor(
    weights: str | Path | None = None,
    device: str | torch.device = "cpu",
    backbone_weights: str | Path | None = None,
    **kwargs,
) -> Extractor:
    """The ``traqpoint`` extractor: :class:`PaperNet` with the authors' weights, wrapped for inference.

    Args:
        weights: a checkpoint in the reference layout; ``None`` = :data:`CHECKPOINT`
            (``third_party/traqpoint_best.pth``); ``"random"`` = untrained network (tests, training).
        device: torch device.
        backbone_weights: with ``weights="random"``, a DINOv3 ConvNeXt file for the backbone.
        **kwargs: options of :class:`models.traqpoint.TraqPoint` (``num_keypoints``, ...).

    Raises:
        MissingFileError: a weight file is missing (the message says where to get it).
        BadInputError: a weight file does not fit the network.
    """
    from .traqpoint import TraqPoint

    if weights == "random":
        log.warning("traqpoint: running with RANDOM weights (requested explicitly)")
        net = PaperNet(backbone_weights=backbone_weights)
    else:
        path = Path(weights) if weights else CHECKPOINT
        state = load_reference_checkpoint(path)  # before building the network: fail fast on a bad file
        net = PaperNet()
        load_into(net, state, str(path))
    return TraqPoint(net, name="traqpoint", device=device, **kwargs)
