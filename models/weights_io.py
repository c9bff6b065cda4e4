"""Loading and saving checkpoints with clear errors (never a deep traceback)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .errors import BadInputError, MissingFileError

PACKAGE_WEIGHTS = Path(__file__).parent / "weights"


def load_checkpoint(path: str | Path, hint: str = "") -> dict:
    """Read a torch checkpoint on the CPU; return the dict of tensors (``model`` key unwrapped)."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"weight file not found: {path}" + (f" ({hint})" if hint else ""))
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise BadInputError(f"cannot read weight file {path}: {type(err).__name__}: {err}") from None
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise BadInputError(f"{path} is not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in ckpt.items()}
    if state and all(k.startswith("net.") for k in state):  # a training wrapper's checkpoint
        state = {k[4:]: v for k, v in state.items()}
    return state


def load_into(model: nn.Module, state: dict, source: str, strict: bool = True) -> None:
    """Load ``state`` into ``model``; name the first missing/unexpected/mis-shaped key on failure."""
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong:
        k = wrong[0]
        raise BadInputError(
            f"{source} does not fit {type(model).__name__}: {k} has shape {tuple(state[k].shape)}, "
            f"expected {tuple(own[k].shape)} ({len(wrong)} mismatched tensors)"
        )
    if strict and (missing or unexpected):
        raise BadInputError(
            f"{source} does not fit {type(model).__name__}: {len(missing)} missing keys "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:2]})"
        )
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:  # a diverged run's checkpoint: every output would be NaN (0 keypoints, frozen poses)
        raise BadInputError(
            f"{source} holds NaN or infinite values in {len(broken)} of {len(state)} tensors (e.g. {broken[0]}); "
            "the checkpoint is broken (a diverged training run?): use other weights"
        )
    model.load_state_dict(state, strict=strict)
