"""Stage 2 end to end on tiny CPU settings: homography sequences, MegaDepth sequences, resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from train_helpers import TINY, read_log

import training.stage1 as stage1
import training.stage2 as stage2
from models.lite import LiteNet
from training.make_sequences import make_sequences

SMALL = ["--num_global_samples", "8", "--entropy_regions", "4", "--log_every", "1"]
REWARD_COLUMNS = {"loss", "reward", "baseline", "consistency", "distinctiveness", "similar", "entropy", "covisible"}


@pytest.fixture(scope="module")
def stage1_weights(photo_dir, tmp_path_factory) -> Path:
    """A tiny stage-1 checkpoint (3 steps)."""
    out = tmp_path_factory.mktemp("stage1")
    argv = ["--config", "stage1_lite.yaml", "--data", str(photo_dir), "--out", str(out), "--max-steps", "3", *TINY]
    assert stage1.main(argv) == 0
    return out / "stage1.pt"


def run(out: Path, weights: Path, data: Path, *extra: str) -> int:
    return stage2.main(
        [
            "--config",
            "stage2_lite.yaml",
            "--weights",
            str(weights),
            "--data",
            str(data),
            "--out",
            str(out),
            *TINY,
            *SMALL,
            *extra,
        ]
    )


def test_five_steps_log_rewards_and_train_only_the_policy(stage1_weights, photo_dir, tmp_path):
    assert run(tmp_path, stage1_weights, photo_dir, "--max-steps", "5") == 0
    rows = read_log(tmp_path / "log_stage2.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5] and REWARD_COLUMNS <= set(rows[0])
    for r in rows:
        assert all(np.isfinite(v) for v in r.values())
        assert 0 <= r["reward"] <= 1 and 0 < r["covisible"] <= 1 and 0 <= r["consistency"] <= 1
    before, after = torch.load(stage1_weights), torch.load(tmp_path / "stage2.pt")
    policy = {n for n, _ in LiteNet().named_parameters() if n.startswith(("pixel_embed", "policy_head"))}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and changed <= policy  # the descriptor (weights and BatchNorm statistics) stays frozen


def test_megadepth_sequences(stage1_weights, synth_scene, tmp_path):
    seq = tmp_path / "sequence_indices_0.1_0.7_s5"
    make_sequences(synth_scene.scene_info, seq)
    md = ("--data_kind", "megadepth", "--scene_info", str(seq))
    assert run(tmp_path / "out", stage1_weights, synth_scene.root, "--max-steps", "2", *md) == 0
    rows = read_log(tmp_path / "out" / "log_stage2.csv")
    assert len(rows) == 2 and all(r["covisible"] > 0.2 and np.isfinite(r["loss"]) for r in rows)


@pytest.mark.parametrize(
    "baseline",
    [
        "batch",
        "ema",
    ],
)
def test_resume_gives_same_losses(stage1_weights, photo_dir, tmp_path, baseline):
    common = ("--ckpt_every", "2", "--baseline", baseline)
    assert run(tmp_path / "a", stage1_weights, photo_dir, "--max-steps", "4", *common) == 0
    assert run(tmp_path / "b", stage1_weights, photo_dir, "--max-steps", "2", *common) == 0
    assert run(tmp_path / "b", stage1_weights, photo_dir, "--max-steps", "4", "--resume", *common) == 0
    a, b = read_log(tmp_path / "a" / "log_stage2.csv"), read_log(tmp_path / "b" / "log_stage2.csv")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a[2:], b[2:]):
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-5, rel=0), (ra, rb)
