"""Up-front checks of a training run's settings (recipe + flags), one clear line per fault.

Every rule applies to whichever stage defines the setting, so stage 1 and stage 2 share one
table. A value left ``None`` (not set by the recipe nor a flag) is checked only where ``None``
is meaningful (``--max-steps``: no limit); anything else the run needs must be set.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path

from models.errors import BadInputError, MissingFileError

Rule = tuple[Callable[[object], bool], str]

#: multiple of the network strides (lite: 8; paper: 4), at least four descriptor cells per side
RES_STEP, RES_MIN = 8, 32


def _int_at_least(lo: int) -> Rule:
    return (lambda v: isinstance(v, int) and v >= lo), f"an integer >= {lo}"


def _real(lo: float, hi: float = math.inf, open_lo: bool = False) -> Rule:
    def ok(v) -> bool:
        if not isinstance(v, int | float) or not math.isfinite(v):
            return False
        return (v > lo if open_lo else v >= lo) and v <= hi

    bounds = f"{'>' if open_lo else '>='} {lo}" + (f" and <= {hi}" if hi < math.inf else "")
    return ok, f"a finite number {bounds}"


RULES: dict[str, Rule] = {
    "batch_size": _int_at_least(1),
    "epochs": _int_at_least(1),
    "steps_per_epoch": _int_at_least(1),
    "max_steps": _int_at_least(1),
    "lr_step": _int_at_least(1),
    "ckpt_every": _int_at_least(1),
    "log_every": _int_at_least(1),
    "workers": _int_at_least(0),
    "seed": _int_at_least(0),
    "nproc": _int_at_least(1),
    "num_points": _int_at_least(8),
    "seq_len": _int_at_least(2),
    "num_global_samples": _int_at_least(0),
    "grid_size": _int_at_least(1),
    "entropy_regions": _int_at_least(1),
    "lr": _real(0.0),
    "weight_decay": _real(0.0),
    "gamma_steplr": _real(0.0, 1.0, open_lo=True),
    "temperature": _real(0.0, open_lo=True),
    "matchability_weight": _real(0.0),
    "warp_rotation": _real(0.0, 180.0),
    "ratio_thresh": _real(0.0, 1.0, open_lo=True),
    "sim_thresh": _real(-1.0, 1.0),
    "entropy_weight": _real(0.0),
    "teacher_weight": _real(0.0),
    "teacher_warmup": _int_at_least(0),
}

#: settings that may stay unset
OPTIONAL = {"max_steps", "nproc"}


def flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """``{dest: '--flag'}`` for the messages (``max_steps`` is spelled ``--max-steps``)."""
    return {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Raise :class:`BadInputError` naming the first unusable setting of ``args``."""
    names = flag_names(parser)
    for dest, (ok, what) in RULES.items():
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if value is None and dest in OPTIONAL:
            continue
        values = value if isinstance(value, list | tuple) else [value]  # nargs="+" settings: each value
        if not values or any(v is None or isinstance(v, bool) or not ok(v) for v in values):
            raise BadInputError(f"{names.get(dest, dest)} must be {what}, got {value!r}")
    if hasattr(args, "training_res"):
        check_resolution(args.training_res, names.get("training_res", "--training_res"))
    if getattr(args, "warp_scale", None) is not None:
        lo, hi = args.warp_scale
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise BadInputError(f"--warp_scale MIN MAX needs 0 < MIN <= MAX, got {lo} {hi}")
    for dest in ("init_weights", "teacher"):  # named files must exist before any work starts
        path = getattr(args, dest, None)
        if path and not Path(path).is_file():
            raise MissingFileError(f"{names.get(dest, dest)} {path}: file not found")
    if getattr(args, "out", None) is not None:
        check_output_dir(Path(args.out))


def check_resolution(res, flag: str = "--training_res") -> None:
    """``H W``: both multiples of :data:`RES_STEP` and at least :data:`RES_MIN` pixels."""
    if res is None or len(res) != 2 or not all(isinstance(v, int) and v >= RES_MIN and v % RES_STEP == 0 for v in res):
        raise BadInputError(
            f"{flag} H W must be multiples of {RES_STEP} and at least {RES_MIN} (e.g. 240 320), got {res}"
        )


def check_output_dir(out: Path, flag: str = "--out") -> None:
    """``out`` is a folder or can be created as one (checked before any work starts)."""
    if out.exists() and not out.is_dir():
        raise BadInputError(f"{flag} {out}: {out} is an existing file, not a folder; choose another {flag}")
    parent = out.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise BadInputError(f"{flag} {out}: {parent} is a file, so the folder cannot be created")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInputError(f"{flag} {out}: {parent} is not writable; choose another {flag}")
