"""Bad settings and inputs of the training commands: one ``error:`` line on stderr, non-zero exit, no traceback.

Each case fails before any training starts (so the tests are fast); the ``before`` column of
issue 12 was a traceback, an endless run or a NaN deep inside torch.multinomial.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from train_helpers import TINY

import training.evaluate as evaluate
import training.make_sequences as make_sequences
import training.stage1 as stage1
import training.stage2 as stage2
from models.errors import BadInputError
from training.nets import build_net
from training.runtime import setup_distributed, start_optimisation


def one_error_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def run1(out: Path, data: Path, *extra: str) -> int:
    return stage1.main(["--config", "stage1_lite.yaml", "--data", str(data), "--out", str(out), *TINY, *extra])


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--max-steps", "-1"], "--max-steps must be an integer >= 1, got -1"),
        (["--max-steps", "0"], "--max-steps must be an integer >= 1, got 0"),  # was: trains for ever
        (["--batch_size", "0"], "--batch_size must be an integer >= 1, got 0"),
        (["--training_res", "0", "0"], "--training_res H W must be multiples of 8"),
        (["--training_res", "60", "90"], "got [60, 90]"),
        (["--lr", "nan"], "--lr must be a finite number"),
        (["--workers", "-1"], "--workers must be an integer >= 0"),
        (["--warp_scale", "1.5", "0.5"], "--warp_scale MIN MAX needs 0 < MIN <= MAX"),
        (["--distributed", "--nproc", "0"], "--nproc must be an integer >= 1, got 0"),
    ],
)
def test_stage1_bad_settings(photo_dir, tmp_path, capsys, extra, expect):
    assert run1(tmp_path / "out", photo_dir, *extra) == 1
    assert expect in one_error_line(capsys)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_stage2_shares_the_checks(photo_dir, tmp_path, capsys):
    argv = ["--data", str(photo_dir), "--out", str(tmp_path / "o"), "--weights", "w.pt", *TINY, "--seq_len", "1"]
    assert stage2.main(argv) == 1
    assert "--seq_len must be an integer >= 2, got 1" in one_error_line(capsys)


def test_out_is_a_file(photo_dir, tmp_path, capsys):
    (tmp_path / "taken").write_text("x")
    assert run1(tmp_path / "taken", photo_dir, "--max-steps", "1") == 1
    assert "is an existing file, not a folder" in one_error_line(capsys)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU --distributed launches one process per GPU")
def test_distributed_without_launcher_or_gpu(photo_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    assert run1(tmp_path / "out", photo_dir, "--distributed", "--max-steps", "1") == 1
    assert "--nproc N" in one_error_line(capsys)  # was: RuntimeError traceback


def test_setup_distributed_outside_a_launcher(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(BadInputError, match="not started by a launcher"):
        setup_distributed(True)


def test_max_steps_zero_is_a_limit(tmp_path):
    """The old ``if args.max_steps:`` read 0 as "no limit" (6000 steps of the recipe)."""
    ns = argparse.Namespace(
        lr=1e-3, weight_decay=0.0, lr_step=10, gamma_steplr=0.5, epochs=6, steps_per_epoch=1000, resume=False
    )
    net = torch.nn.Linear(2, 2)
    assert start_optimisation(argparse.Namespace(**vars(ns), max_steps=0), net, tmp_path)[2] == 0
    assert start_optimisation(argparse.Namespace(**vars(ns), max_steps=None), net, tmp_path)[2] == 6000


def nan_weights(path: Path) -> Path:
    state = {k: v * float("nan") if v.is_floating_point() else v for k, v in build_net("lite").state_dict().items()}
    torch.save(state, path)
    return path


def test_stage2_nan_weights(photo_dir, tmp_path, capsys):
    """Was: ``probability tensor contains either inf, nan`` from torch.multinomial."""
    weights = nan_weights(tmp_path / "nan.pt")
    argv = ["--data", str(photo_dir), "--out", str(tmp_path / "o"), "--weights", str(weights), *TINY]
    assert stage2.main([*argv, "--max-steps", "1"]) == 1
    line = one_error_line(capsys)
    assert str(weights) in line and "NaN/inf" in line


def test_resume_unreadable_checkpoint(photo_dir, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "last.pt").write_bytes(b"not a checkpoint")
    assert run1(out, photo_dir, "--max-steps", "1", "--resume") == 1
    line = one_error_line(capsys)
    assert "--resume cannot use" in line and str(out / "last.pt") in line


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--compare", "orb", "--num-kp", "-5"], "--num-kp must be >= 1, got -5"),  # was: exit 0, all zeros
        (["--compare", "orb", "--tracking-kp", "0"], "--tracking-kp must be >= 1"),
        ([], "nothing to evaluate"),  # was: StopIteration traceback
        (["--compare", "orb", "--json", "{tmp}/no/such/x.json"], "does not exist"),  # was: after the whole run
        (["--compare", "orb", "--json", "{tmp}"], "is a folder"),
    ],
)
def test_evaluate_bad_arguments(tmp_path, capsys, argv, expect):
    assert evaluate.main([a.format(tmp=tmp_path) for a in argv]) == 2
    assert expect in one_error_line(capsys)


def test_evaluate_nan_weights(tmp_path, capsys):
    weights = nan_weights(tmp_path / "nan.pt")  # was: exit 0 with every metric 0.0
    assert evaluate.main(["--weights", str(weights)]) == 1
    assert str(weights) in one_error_line(capsys)


@pytest.mark.parametrize(
    "extra, expect",
    [
        (["--per_head", "0"], "--per_head must be >= 1"),  # was: "no 5-view sequences" (misleading)
        (["--overlap", "0.7", "0.1"], "--overlap LO HI needs 0 <= LO <= HI <= 1"),
        (["--overlap", "nan", "1"], "--overlap LO HI"),
    ],
)
def test_make_sequences_bad_arguments(synth_scene, tmp_path, capsys, extra, expect):
    argv = ["--scene_info", str(synth_scene.scene_info), "--out", str(tmp_path / "seq"), *extra]
    assert make_sequences.main(argv) == 1
    assert expect in one_error_line(capsys)


def test_make_sequences_out_is_a_file(synth_scene, tmp_path, capsys):
    (tmp_path / "seq").write_text("x")  # was: FileExistsError traceback
    assert make_sequences.main(["--scene_info", str(synth_scene.scene_info), "--out", str(tmp_path / "seq")]) == 1
    assert "is an existing file" in one_error_line(capsys)
