"""Process setup shared by both stages: seeding, torch.distributed, checkpoints, CSV logs."""

from __future__ import annotations

import csv
import logging
import math
import os
import random
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from models.errors import BadInputError

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """Raised when a loss becomes NaN/inf; the last good checkpoint is kept."""


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup_distributed(enabled: bool) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed from torchrun's environment; returns (rank, world, device).

    gloo on CPU, nccl when CUDA is available. Multi-node works the same through torchrun's
    ``--nnodes/--node_rank/--rdzv_endpoint`` flags.
    """
    if not enabled:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if "RANK" not in os.environ:  # the stages' main() self-launch first (training.launch); a direct call lands here
        raise BadInputError("--distributed: not started by a launcher (use torchrun, or the stage's own --distributed)")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if backend == "nccl":
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return rank, world, torch.device("cuda", local)
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return rank, world, torch.device("cpu")


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def start_optimisation(args, model: torch.nn.Module, out: Path):
    """AdamW over the trainable parameters with step decay, the run length in steps, and the step
    to start from (``--resume`` continues from ``OUT/last.pt`` when it exists)."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.lr_step, gamma=args.gamma_steplr)
    total = args.epochs * args.steps_per_epoch
    if args.max_steps is not None:  # 0 is not "no limit" (training.checks refuses it)
        total = min(total, args.max_steps)
    last = out / "last.pt"
    step = resume(last, model, optimizer, scheduler) if args.resume and last.exists() else 0
    return optimizer, scheduler, total, step


def step_generator(seed: int, step: int, world: int, rank: int) -> torch.Generator:
    """A generator seeded by (seed, step, rank): sampling inside a step is exact on resume."""
    return torch.Generator().manual_seed(seed * 1000003 + step * world + rank)


def optimise(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """One optimiser and scheduler step on ``loss``."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    step: int,
    extra: dict | None = None,
) -> None:
    """Atomically write model + optimiser + scheduler + step (resumable)."""
    state = {
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler else None,
        "step": step,
        "rng": torch.get_rng_state(),
        **(extra or {}),
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> int:
    """Restore a checkpoint written by :func:`save_checkpoint`; returns the step to continue from.

    An unreadable or foreign checkpoint is one :class:`BadInputError` naming the file.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step = int(state["step"])
    except Exception as err:  # noqa: BLE001 - unreadable, truncated or from another network/run
        reason = (str(err).splitlines() or [""])[0][:200]
        raise BadInputError(
            f"--resume cannot use {path}: {type(err).__name__}: {reason} "
            "(delete it to start over, or choose another --out)"
        ) from None
    log.info("resumed from %s at step %d", path, step)
    return step


def check_finite(loss: torch.Tensor, step: int, out: Path) -> None:
    """Stop with a clear message when the loss is not finite."""
    if not math.isfinite(float(loss.detach())):
        raise NonFiniteLoss(
            f"loss became {float(loss.detach())} at step {step}; the last good checkpoint is {out / 'last.pt'}"
        )


class CSVLog:
    """Append-only CSV of scalar metrics per step (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled, self.fields = path, enabled, None

    def write(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        new = not self.path.exists()
        if self.fields is None:
            self.fields = list(row) if new else next(csv.reader(self.path.open()))
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
