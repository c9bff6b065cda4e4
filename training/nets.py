"""Building the network being trained and its trainable views for each stage."""

from __future__ import annotations

import torch
import torch.nn as nn

from models.errors import BadInputError


def build_net(kind: str, backbone_weights: str | None = None) -> nn.Module:
    """A fresh ``lite`` (v1), ``lite2``, ``lite2s`` (lite2 with :attr:`LiteNet2.SLIM`'s backbone) or
    ``paper`` network (``paper`` optionally from DINOv3 weights)."""
    if kind == "lite":
        from models.lite import LiteNet

        return LiteNet()
    if kind in ("lite2", "lite2s"):
        from models.lite2 import LiteNet2

        return LiteNet2(**(LiteNet2.SLIM if kind == "lite2s" else {}))
    if kind == "paper":
        from models.paper import PaperNet

        return PaperNet(backbone_weights=backbone_weights)
    raise BadInputError(f"unknown --model {kind!r}; use lite, lite2, lite2s or paper")


def load_descriptor(net: nn.Module, state: dict, source: str, keep_policy: bool = False) -> None:
    """Load stage-1 weights into ``net`` except its policy head (stage 2 trains that from scratch);
    ``keep_policy`` loads the policy of ``state`` too (fine-tuning a finished network's policy), and
    ``state`` must then hold one."""
    from models.weights_io import load_into

    policy = {n for n, p in net.named_parameters() if any(p is q for q in net.policy_parameters())}
    prefixes = tuple({n.split(".")[0] + "." for n in policy})
    if keep_policy:
        absent = sorted(n for n in policy if n not in state)
        if absent:
            raise BadInputError(f"{source} has no trained policy to start from (missing {absent[0]}); "
                                "drop --init_policy to train one from scratch")
    own = {k: v for k, v in state.items() if keep_policy or not k.startswith(prefixes)}
    check_finite_weights(own, source)
    missing = [k for k in net.state_dict() if not k.startswith(prefixes) and k not in own]
    if missing:
        raise BadInputError(f"{source} is not a stage-1 checkpoint of this network: missing {missing[:2]}")
    load_into(net, own, source, strict=False)


def check_finite_weights(state: dict[str, torch.Tensor], source: str) -> None:
    """Raise :class:`BadInputError` naming ``source`` when a floating tensor of ``state`` holds NaN/inf."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise BadInputError(
            f"weight file {source} holds NaN/inf in {len(bad)} of {len(state)} tensors (e.g. {bad[0]}); "
            "it is the output of a diverged run: use an earlier checkpoint or retrain stage 1"
        )


class Describe(nn.Module):
    """Stage-1 view: ``forward`` = the descriptor branch (so DDP hooks see it); policy frozen."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        for p in net.policy_parameters():
            p.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        describe = getattr(self.net, "describe", None)
        return describe(images) if describe else self.net(images)


class Policy(nn.Module):
    """Stage-2 view: ``forward`` = full outputs; only the policy parameters are trainable."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        keep = {id(p) for p in net.policy_parameters()}
        for p in net.parameters():
            p.requires_grad_(id(p) in keep)

    def train(self, mode: bool = True) -> Policy:
        # The frozen descriptor keeps its BatchNorm statistics: only the policy head trains.
        super().train(False)
        for m in self._policy_modules():
            m.train(mode)
        return self

    def _policy_modules(self) -> list[nn.Module]:
        keep = {id(p) for p in self.net.policy_parameters()}
        return [m for m in self.net.modules() if any(id(p) in keep for p in m.parameters(recurse=False))]

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(images)
