"""DDP smoke test: two CPU processes under torchrun (gloo) run stage 1 for a few steps.

A sound check of DDP needs both ranks' parameters, but the training code saves rank 0 only, and
a single-process run is no reference (BatchNorm statistics are per rank and each rank seeds its
own correspondence sampling with ``seed + rank``). So ``ddp_entry.py`` runs the unchanged
``training.stage1.main`` and additionally saves each rank's final state: the test asserts the
ranks read different batches, ended with bit-identical parameters (gradients were all-reduced),
and that rank 0's checkpoint is that model. BatchNorm running statistics are *buffers*: DDP
broadcasts rank 0's at every forward, and each rank's last forward updates its own, so they
may differ after training and are not compared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import TINY, read_log

ENTRY = Path(__file__).with_name("ddp_entry.py")


def test_ddp_two_ranks(photo_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun not installed next to the python executable")
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ENTRY),
        "--distributed",
        "--config",
        "stage1_lite.yaml",
        "--data",
        str(photo_dir),
        "--out",
        str(tmp_path),
        *TINY,
        "--max-steps",
        "3",
        "--log_every",
        "1",
        "--ckpt_every",
        "3",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_log(tmp_path / "log_stage1.csv")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["total"]) for r in rows)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert len(r0["batches"]) == len(r1["batches"]) == 3
    assert all(a != b for a, b in zip(r0["batches"], r1["batches"]))  # each rank reads its own shard
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ckpt["step"] == 3
    weights = torch.load(tmp_path / "stage1.pt")  # the bare network (no "net." prefix)
    params = [k for k, v in r0["state"].items() if v.is_floating_point() and "running" not in k]
    assert params
    for k in params:
        assert torch.equal(r0["state"][k], r1["state"][k]), f"ranks differ in {k}"
        assert torch.equal(r0["state"][k], ckpt["model"][k]) and torch.equal(r0["state"][k], weights[k[4:]])
