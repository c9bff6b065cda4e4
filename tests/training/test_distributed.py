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
from train_helpers import REPO, TINY, read_log

ENTRY = Path(__file__).with_name("ddp_entry.py")


def tiny_run(photo_dir, out: Path) -> list[str]:
    """Arguments of a 3-step, 2-rank stage-1 run on tiny images."""
    return [
        "--distributed",
        "--config",
        "stage1_lite.yaml",
        "--data",
        str(photo_dir),
        "--out",
        str(out),
        *TINY,
        "--max-steps",
        "3",
        "--log_every",
        "1",
        "--ckpt_every",
        "3",
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def torchrun_run(photo_dir, tmp_path_factory) -> Path:
    """The output folder of the 2-rank torchrun run (shared by the tests below)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun not installed next to the python executable")
    out = tmp_path_factory.mktemp("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(ENTRY), *tiny_run(photo_dir, out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_ddp_two_ranks(torchrun_run):
    tmp_path = torchrun_run
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


def test_self_launch_equals_torchrun(photo_dir, torchrun_run, tmp_path):
    """``python -m training.stage1 --distributed --nproc 2`` without a launcher starts two gloo workers
    through elastic_launch: same log, checkpoint step and bit-identical weights as the torchrun run
    (a single process would differ: it reads both shards and seeds one sampling stream)."""
    env = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "training.stage1", *tiny_run(photo_dir, tmp_path), "--nproc", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "starting 2 CPU processes" in proc.stderr
    mine, ref = read_log(tmp_path / "log_stage1.csv"), read_log(torchrun_run / "log_stage1.csv")
    assert [r["total"] for r in mine] == [r["total"] for r in ref]
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 3
    a, b = torch.load(tmp_path / "stage1.pt"), torch.load(torchrun_run / "stage1.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage2_self_launches(monkeypatch, tmp_path, photo_dir):
    """stage 2 takes the same path: its own module and arguments go to the launcher."""
    import training.stage2 as stage2

    calls = []
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(stage2, "worker_count", lambda n: n)
    monkeypatch.setattr(stage2, "self_launch", lambda module, argv, n: calls.append((module, argv, n)) or 0)
    argv = ["--distributed", "--nproc", "2", "--data", str(photo_dir), "--weights", "w.pt", "--out", str(tmp_path)]
    assert stage2.main(argv) == 0
    assert calls == [("training.stage2", argv, 2)]


def test_failing_worker_is_one_line(tmp_path, capfd):
    """A worker that fails (here: bad weights at rank start-up) gives its own line plus which rank failed."""
    from training.launch import self_launch

    argv = ["--data", str(tmp_path), "--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")]
    assert self_launch("training.stage2", argv, 1) == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1] == "error: rank 0 of 1 exited with code 1"
    assert err[-2].startswith("error: weight file not found") and "Traceback" not in "\n".join(err)
