"""Stage 2 end to end on tiny CPU settings: homography sequences, MegaDepth sequences, resume, the
collapse verdict, no gradient on views 1..n-1, and a toy problem with a known optimum."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from train_helpers import TINY, read_log

import training.stage1 as stage1
import training.stage2 as stage2
from models.lite import LiteNet
from training.make_sequences import make_sequences
from training.nets import Policy
from training.policy_gradient import Baseline

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
    metrics = json.loads((tmp_path / "metrics_stage2.json").read_text())
    assert metrics["collapsed"] is False and metrics["final_entropy"] > 0.2 and metrics["steps"] == 5
    assert all(0 <= r["grad_norm"] and 0.005 <= r["entropy_weight"] <= 0.015 for r in rows)


def test_init_policy_starts_from_the_weights_policy(stage1_weights, photo_dir, tmp_path):
    """``--init_policy`` (fine-tuning a finished network) loads the policy of ``--weights`` with the
    descriptor; without it the policy is fresh; a file without a policy is one clear error."""
    from models.errors import BadInputError
    from training.nets import load_descriptor

    trained = LiteNet().state_dict()
    with torch.no_grad():
        for k in trained:
            if k.startswith(("pixel_embed", "policy_head")):
                trained[k] = torch.full_like(trained[k], 0.25)
    kept, fresh = LiteNet(), LiteNet()
    load_descriptor(kept, trained, "trained.pt", keep_policy=True)
    load_descriptor(fresh, trained, "trained.pt")
    state_kept, state_fresh = kept.state_dict(), fresh.state_dict()
    for k in trained:
        if k.startswith(("pixel_embed", "policy_head")):
            assert torch.equal(state_kept[k], trained[k]) and not torch.equal(state_fresh[k], trained[k]), k
        else:
            assert torch.equal(state_kept[k], trained[k]) and torch.equal(state_fresh[k], trained[k]), k
    no_policy = {k: v for k, v in trained.items() if not k.startswith("policy_head")}
    with pytest.raises(BadInputError, match="no trained policy to start from"):
        load_descriptor(LiteNet(), no_policy, "descriptor.pt", keep_policy=True)
    assert run(tmp_path, stage1_weights, photo_dir, "--max-steps", "1", "--init_policy") == 0  # the flag, end to end


def test_rank_window_runs_and_rejects_a_negative_radius(stage1_weights, photo_dir, tmp_path, capsys):
    assert run(tmp_path / "w", stage1_weights, photo_dir, "--max-steps", "2", "--rank_window", "2") == 0
    assert all(0 <= r["consistency"] <= 1 for r in read_log(tmp_path / "w" / "log_stage2.csv"))
    assert run(tmp_path / "bad", stage1_weights, photo_dir, "--max-steps", "1", "--rank_window", "-1") == 1
    assert "--rank_window must be >= 0" in capsys.readouterr().err


def test_collapsed_policy_fails_the_run(stage1_weights, photo_dir, tmp_path, capsys):
    # no policy reaches a per-region entropy of 1.01: the verdict must come out "collapsed"
    assert run(tmp_path, stage1_weights, photo_dir, "--max-steps", "2", "--collapse_entropy", "1.01") == 2
    assert "FAILED: the policy collapsed" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics_stage2.json").read_text())
    assert metrics["collapsed"] is True and metrics["final_entropy"] < 1.01
    assert (tmp_path / "stage2_collapsed.pt").is_file() and not (tmp_path / "stage2.pt").exists()


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


class ToyNet(nn.Module):
    """Descriptors = the mean-free 5 x 5 patch at each pixel (fixed); policy = one 5 x 5 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.policy = nn.Conv2d(1, 1, 5, padding=2)
        nn.init.zeros_(self.policy.weight)  # uniform policy: per-region entropy 1
        nn.init.zeros_(self.policy.bias)
        self.calls: list[tuple[int, bool]] = []

    def policy_parameters(self) -> list[nn.Parameter]:
        return list(self.policy.parameters())

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append((img.shape[0], torch.is_grad_enabled()))
        patches = F.unfold(img, 5, padding=2).view(img.shape[0], 25, *img.shape[-2:])
        desc = F.normalize(patches - patches.mean(1, keepdim=True), dim=1)
        return {"descriptors": desc, "logits": self.policy(img)}


def toy_world(g: torch.Generator, size: int = 48, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """A dark canvas with ``n`` bright, distinct random 5 x 5 markers; returns it and the markers' mask."""
    canvas, mask = torch.zeros(size, size), torch.zeros(size, size, dtype=torch.bool)
    for _ in range(n):
        y, x = torch.randint(4, size - 9, (2,), generator=g).tolist()
        canvas[y : y + 5, x : x + 5] = 0.5 + torch.rand(5, 5, generator=g)
        mask[y : y + 5, x : x + 5] = True
    return canvas, mask


def toy_batch(g: torch.Generator, canvas: torch.Tensor, b: int = 2, v: int = 3, hw: int = 32) -> dict:
    """``b`` sequences of ``v`` shifted crops with independent noise; H = the crop's translation.

    Only marker pixels look alike across views (the background is independent noise), so the
    optimal policy puts all its mass on the markers."""
    items = []
    for _ in range(b):
        offsets = torch.randint(0, canvas.shape[0] - hw + 1, (v, 2), generator=g).tolist()
        imgs = [canvas[oy : oy + hw, ox : ox + hw] + 0.05 * torch.randn(hw, hw, generator=g) for oy, ox in offsets]
        hs = [torch.tensor([[1.0, 0, -ox], [0, 1, -oy], [0, 0, 1]]) for oy, ox in offsets]
        items.append({"images": torch.stack(imgs)[:, None], "H": torch.stack(hs)})
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    batch["valid"] = torch.ones(b, v, 1, hw, hw, dtype=torch.bool)
    return batch


def toy_args(tmp_path: Path) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        seed=0, world=1, rank=0, out=str(tmp_path), grid_size=8, num_global_samples=16, sampling_strategy="hybrid",
        depth_tol=0.2, entropy_regions=4, rank_cell=8, rank_thresh=0.2, sim_thresh=0.5, ratio_thresh=0.85,
        entropy_weight=[0.0, 0.0], grad_clip=1.0,
    )  # fmt: skip


def marker_mass(model: nn.Module, canvas: torch.Tensor, mask: torch.Tensor) -> float:
    """Policy mass on marker pixels in an unseen crop (the optimum puts all of it there)."""
    with torch.no_grad():
        p = model(canvas[None, None, 8:40, 8:40])["logits"].flatten().softmax(0)
    return float((p * mask[8:40, 8:40].flatten()).sum())


@pytest.mark.parametrize(
    "credit, batch_size, min_mass, min_gain",
    [("point", 1, 0.8, 0.15), ("point", 2, 0.8, 0.15), ("sequence", 2, 0.24, 0.1)],  # sequence credit: noisier
)
def test_toy_problem_reward_rises_to_the_optimum(tmp_path, credit, batch_size, min_mass, min_gain):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    canvas, mask = toy_world(g)
    model = Policy(ToyNet())
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1000)
    baseline, args = Baseline(credit, "ema"), toy_args(tmp_path)
    before = marker_mass(model, canvas, mask)
    rows = [
        stage2.train_step(model, opt, sched, toy_batch(g, canvas, batch_size), args, baseline, s, 40, "cpu")
        for s in range(40)
    ]
    rewards = [r["reward"] for r in rows]
    assert before == pytest.approx(float(mask[8:40, 8:40].float().mean()), abs=1e-3)  # uniform at the start
    assert before < 0.13  # markers cover 12 % of the crop
    assert marker_mass(model, canvas, mask) > min_mass  # towards the optimum: the policy moves onto the markers
    assert np.mean(rewards[-10:]) > np.mean(rewards[:3]) + min_gain
    assert all(r["grad_norm"] >= 0 and np.isfinite(r["loss"]) for r in rows)


def test_views_after_the_first_run_without_gradient(tmp_path):
    g = torch.Generator().manual_seed(0)
    canvas, _ = toy_world(g)
    net = ToyNet()
    model = Policy(net)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1000)
    ref, tgt = stage2.forward_views(model, toy_batch(g, canvas, 2, 4)["images"])
    assert ref["logits"].requires_grad and not tgt["logits"].requires_grad and tgt["logits"].shape[:2] == (2, 3)
    net.calls.clear()
    stage2.train_step(model, opt, sched, toy_batch(g, canvas, 2, 4), toy_args(tmp_path), Baseline(), 0, 1, "cpu")
    assert net.calls == [(2 * 3, False), (2, True)]  # views 1..3 of both sequences without autograd, view 0 with
    assert net.policy.weight.grad is not None and net.policy.weight.grad.abs().sum() > 0
