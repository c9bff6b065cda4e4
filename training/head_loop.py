"""The training loop shared by the small post-stage-2 trainers (``training.refine``, ``training.distill_policy``).

Each of them trains a few parameters of a frozen network with Adam + cosine LR on batches of the
stage-1 homography source: compute the loss terms of a batch, step, log every ``log_every`` steps
to ``OUT/<log_name>``, checkpoint ``OUT/last.pt`` every ``ckpt_every`` steps (resumable with
``training.runtime.resume``).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from tqdm import tqdm

from models.errors import MissingFileError, TraqPointError
from models.weights_io import load_checkpoint
from training.runtime import CSVLog, check_finite, optimise, save_checkpoint


def load_state(path: str | Path, what: str, hint: str = "") -> dict:
    """The state dict of ``path`` (:func:`models.weights_io.load_checkpoint`: a corrupt file or a
    non-tensor checkpoint is one :class:`~models.errors.BadInputError`); a missing file is one
    :class:`~models.errors.MissingFileError` naming ``what`` it should hold."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{what} weights not found: {path}" + (f" ({hint})" if hint else ""))
    return load_checkpoint(path)


def load_lite2_state(path: str | Path, hint: str = "") -> dict:
    """:func:`load_state` of a lite2 file; a state dict of another network is one
    :class:`~models.errors.TraqPointError` naming ``path``."""
    from models.lite2 import LiteNet2

    state = load_state(path, "lite2", hint)
    if not LiteNet2.fits_state(state):
        raise TraqPointError(f"{path} is not a lite2 state dict")
    return state


def add_loop_args(p: argparse.ArgumentParser) -> None:
    """The options of :func:`train_steps` (learning rate, seed, logging, checkpoints, resume)."""
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt_every", type=int, default=100)
    p.add_argument("--log_every", type=int, default=20)
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")


def train_steps(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    loader: Iterable[dict],
    terms_of: Callable[[dict], dict[str, torch.Tensor]],
    args: argparse.Namespace,
    out: Path,
    step: int,
    name: str,
    postfix: Callable[[dict[str, float]], dict[str, str]],
) -> int:
    """Run steps ``step + 1 .. args.steps``; ``terms_of(batch)`` returns the loss terms (``total`` is
    optimised); ``postfix(row)`` picks the progress bar's figures. Returns the last step."""
    logger = CSVLog(out / f"log_{name}.csv")
    bar = tqdm(total=args.steps, initial=step, desc=name, dynamic_ncols=True)
    t0 = time.perf_counter()
    for batch in loader:
        if step >= args.steps:
            break
        terms = terms_of(batch)
        check_finite(terms["total"], step + 1, out)
        optimise(terms["total"], optimizer, scheduler)
        step += 1
        bar.update(1)
        if step % args.log_every == 0 or step == args.steps:
            row = {"step": step, **{k: float(v.detach()) for k, v in terms.items()}, "lr": scheduler.get_last_lr()[0]}
            row["steps_per_s"] = args.log_every / max(time.perf_counter() - t0, 1e-9)
            t0 = time.perf_counter()
            logger.write(row)
            bar.set_postfix(**postfix(row))
        if step % args.ckpt_every == 0 or step == args.steps:
            save_checkpoint(out / "last.pt", model, optimizer, scheduler, step, {"args": vars(args)})
    bar.close()
    return step


def cli_main(
    argv: list[str] | None,
    parser: argparse.ArgumentParser,
    invalid: Callable[[argparse.Namespace], str | None],
    train: Callable[[argparse.Namespace], Path],
    done: str,
) -> int:
    """The command of a head trainer: parse, reject bad numbers with one line (exit 2), train, and
    report a :class:`~models.errors.TraqPointError` as one line (exit 1) or ``done: <weights>``."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parser.parse_args(argv)
    problem = invalid(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        path = train(args)
    except TraqPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{done}: {path}")
    return 0
