"""``--distributed`` without a launcher: the stage starts its own workers through PyTorch's launcher.

    python -m training.stage1 --distributed            # one process per visible GPU (NCCL)
    python -m training.stage1 --distributed --nproc 2  # two CPU processes (gloo)

This is what ``torchrun --standalone --nproc_per_node N -m training.stageK ...`` does, through the
same API (:func:`torch.distributed.launcher.api.elastic_launch`): a local c10d rendezvous, one
worker per process running ``python -m training.stageK`` with the same arguments and torchrun's
environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ...). A stage started by torchrun (``RANK``
set) trains as before; ``--nproc`` is then ignored (torchrun decides).
"""

from __future__ import annotations

import logging
import os
import sys
import uuid

import torch

from models.errors import BadInputError

log = logging.getLogger(__name__)


def under_launcher() -> bool:
    """Whether this process was started by torchrun / elastic_launch (its environment is set)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def worker_count(nproc: int | None) -> int:
    """Processes to start: ``--nproc`` if given, else one per visible GPU.

    Raises :class:`BadInputError` when neither applies (no GPU and no ``--nproc``) or when more
    processes than visible GPUs are asked for on a CUDA machine (NCCL needs one GPU per process).
    """
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if nproc is None:
        if gpus == 0:
            raise BadInputError(
                "--distributed found no visible GPU: give --nproc N for N CPU processes (gloo), "
                "or start the stage with torchrun"
            )
        return gpus
    if nproc < 1:
        raise BadInputError(f"--nproc must be >= 1, got {nproc}")
    if gpus and nproc > gpus:
        raise BadInputError(f"--nproc {nproc} exceeds the {gpus} visible GPUs (one process per GPU with NCCL)")
    return nproc


def self_launch(module: str, argv: list[str], nproc: int) -> int:
    """Run ``python -m module argv`` in ``nproc`` local workers; returns the exit code (0 = all ranks ok).

    A failing worker has already printed its own one-line error; this adds which rank failed.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # torchrun --standalone: a free port on this machine
        max_restarts=0,
        monitor_interval=0.5,
    )
    if nproc > 1 and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"  # as torchrun; each rank sets its own thread count
    kind = "GPU" if _cuda() else "CPU"
    log.info("starting %d %s process%s (torch.distributed elastic_launch)", nproc, kind, "es" if nproc > 1 else "")
    agent_log = logging.getLogger("torch.distributed.elastic")
    level = agent_log.level
    agent_log.setLevel(logging.CRITICAL)  # a worker's failure is reported below in one line, not as an agent dump
    try:
        elastic_launch(config, sys.executable)("-m", module, *argv)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        print(f"error: rank {rank} of {nproc} exited with code {failure.exitcode}", file=sys.stderr)
        return failure.exitcode if failure.exitcode > 0 else 1
    finally:
        agent_log.setLevel(level)
    return 0


def _cuda() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0
