"""Stage 2: keypoint-policy learning by REINFORCE with the track-aware reward (descriptor frozen).

    python -m training.stage2 --config stage2_lite.yaml --weights runs/stage1_lite/stage1.pt
    python -m training.stage2 --distributed --weights STAGE1.pt             # one process per visible GPU
    torchrun --nproc_per_node 2 -m training.stage2 --distributed --weights STAGE1.pt

For each ``seq_len``-view sequence the policy samples keypoints in view 0 (hybrid: one draw per
``grid_size`` cell + ``num_global_samples`` global draws; every log-probability from the
image-wide softmax), they are warped into views 1..n-1 (which run without gradient), and each
earns the reward of :mod:`training.rewards`. Loss (:mod:`training.policy_gradient`):
``-sum_k A_k log pi(k) / n - lambda(t) * H`` with the advantage ``A`` of the chosen credit
assignment, the per-region entropy ``H`` in [0, 1] and a linearly decaying ``lambda``; gradients
are clipped to norm ``grad_clip``. The per-region entropy is logged; a run whose entropy at the end
(mean of the last steps) is below ``collapse_entropy`` has a collapsed policy: its weights are
written as ``stage2_collapsed.pt``, ``metrics_stage2.json`` says ``"collapsed": true`` and the
command exits with status 2.

Any network works that returns ``descriptors [B, D, h, w]`` and ``logits [B, 1, H, W]`` from
``forward(images)`` and lists its stage-2 parameters in ``policy_parameters()``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import deque
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from models.errors import TraqPointError
from models.sampling import sample_descriptors
from models.weights_io import load_checkpoint
from training.config import common_parser, load_config
from training.launch import self_launch, under_launcher, worker_count
from training.nets import Policy, build_net, load_descriptor
from training.policy_gradient import Baseline, check_setup, entropy_weight_at, policy_loss
from training.policy_sampling import sample_policy, spatial_entropy
from training.rewards import RewardConfig, track_reward
from training.runtime import (
    CSVLog,
    NonFiniteLoss,
    check_finite,
    cleanup_distributed,
    save_checkpoint,
    seed_everything,
    setup_distributed,
    start_optimisation,
    step_generator,
    unwrap,
)
from training.stage1 import make_dataset, make_loader
from training.view_warp import warp_batch

log = logging.getLogger("training.stage2")
COLLAPSE_EXIT = 2


def parser() -> argparse.ArgumentParser:
    p = common_parser(2, __doc__)
    p.add_argument("--weights", help="stage-1 weights (descriptor, frozen here)")
    p.add_argument("--init_policy", action="store_true", default=None,
                   help="start from the policy in --weights (fine-tune a finished network) instead of a fresh one")
    p.add_argument("--seq_len", type=int, help="views per sequence (paper: 5)")
    p.add_argument("--sampling_strategy", choices=["hybrid", "grid", "global"], help="keypoint sampling")
    p.add_argument("--num_global_samples", type=int, help="global samples per image (hybrid/global)")
    p.add_argument("--grid_size", type=int, help="cell size (px) of the one-sample-per-cell draws")
    p.add_argument("--rank_cell", type=int, help="cell size (px) of the consistency rank (authors: 60)")
    p.add_argument("--rank_window", type=int, default=None,
                   help="ours: rank in the (2w+1)^2 px window centred on the warped point instead (0 = cells)")
    p.add_argument("--rank_thresh", type=float, help="ranks below it score 0, above (r - t) / (1 - t)")
    p.add_argument("--ratio_thresh", type=float, help="distinctiveness ratio threshold")
    p.add_argument("--sim_thresh", type=float, help="descriptor cosine similarity gate")
    p.add_argument("--depth_tol", type=float, help="relative depth disagreement that marks a point occluded")
    p.add_argument("--entropy_weight", type=float, nargs="+", help="lambda, or START END of its linear decay")
    p.add_argument("--entropy_regions", type=int, help="regions per side of the per-region entropy")
    p.add_argument("--collapse_entropy", type=float, help="final per-region entropy below this = failed run")
    p.add_argument("--grad_clip", type=float, help="gradient-norm clip of the policy parameters")
    p.add_argument("--credit", choices=["point", "sequence"], help="advantage per point or per sequence")
    p.add_argument("--baseline", choices=["ema", "batch"], help="reward baseline (of the credited units)")
    return p


def reward_config(args) -> RewardConfig:
    window = int(getattr(args, "rank_window", None) or 0)
    if window < 0:
        raise TraqPointError(f"--rank_window must be >= 0 (0: the authors' cells), got {window}")
    return RewardConfig(args.rank_cell, args.rank_thresh, args.sim_thresh, args.ratio_thresh, window)


def forward_views(model: torch.nn.Module, images: torch.Tensor) -> tuple[dict, dict]:
    """Network outputs of view 0 (with gradient) and of views 1..n-1 (without), ``images [B, V, C, H, W]``.

    Returns two dicts of ``[B, ...]`` and ``[B, V-1, ...]`` tensors.
    """
    b, v = images.shape[:2]
    with torch.no_grad():  # first: a DDP forward with gradient expects the backward to come next
        tgt = model(images[:, 1:].flatten(0, 1))
    ref = model(images[:, 0])
    return ref, {k: t.unflatten(0, (b, v - 1)) for k, t in tgt.items()}


def sequence_terms(ref: dict, tgt: dict, batch: dict, args, generator: torch.Generator) -> dict:
    """Sample in view 0, warp, reward: ``logp [B, N]``, ``reward`` (see :func:`track_reward`), ``entropy``."""
    h, w = batch["images"].shape[-2:]
    logits = ref["logits"]
    pts, logp = sample_policy(logits, args.grid_size, args.num_global_samples, args.sampling_strategy, generator)
    warp = warp_batch(batch, pts, args.depth_tol)
    b, v, n = warp.in_view.shape
    ref_desc = sample_descriptors(ref["descriptors"].detach(), pts, (h, w))
    tgt_desc = sample_descriptors(tgt["descriptors"].flatten(0, 1), warp.points.flatten(0, 1), (h, w))
    reward = track_reward(
        ref_desc,
        tgt_desc.unflatten(0, (b, v)),
        tgt["logits"],
        warp.points,
        warp.in_view,
        warp.visible,
        reward_config(args),
    )
    return {"logp": logp, "reward": reward, "entropy": spatial_entropy(logits, args.entropy_regions)}


def train_step(model, optimizer, scheduler, batch: dict, args, baseline: Baseline, step: int, total: int, device):
    """One REINFORCE step on a collated batch; returns the scalars to log (step counts from 0)."""
    generator = step_generator(args.seed, step, args.world, args.rank)  # resumable sampling
    ref, tgt = forward_views(model, batch["images"].to(device))
    to_cpu = lambda d: {k: t.cpu() for k, t in d.items()}  # noqa: E731
    terms = sequence_terms(to_cpu(ref), to_cpu(tgt), batch, args, generator)
    r = terms["reward"]
    adv, b_used = baseline.advantages(r)
    lam = entropy_weight_at(step, total, args.entropy_weight)
    loss = policy_loss(terms["logp"], adv, r["counted"], terms["entropy"], lam)
    check_finite(loss, step + 1, Path(args.out))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, args.grad_clip)
    optimizer.step()
    scheduler.step()
    baseline.update(r)
    counted = r["counted"]
    return {
        "loss": float(loss.detach()),
        "reward": float(r["sequence"].mean()),
        "point_reward": float((r["point"] * counted).sum() / counted.sum().clamp_min(1)),
        "baseline": float(b_used[counted].mean()) if counted.any() else 0.0,
        "adv_std": float(adv[counted].std()) if counted.sum() > 1 else 0.0,
        "consistency": float(r["consistency"]),
        "rank": float(r["rank"]),
        "distinctiveness": float(r["distinctiveness"]),
        "similar": float(r["similar"]),
        "occluded": float(r["occluded"]),
        "covisible": float(counted.float().mean()),
        "entropy": float(terms["entropy"].detach()),
        "entropy_weight": lam,
        "grad_norm": float(grad_norm),
        "lr": scheduler.get_last_lr()[0],
    }


def collapse_report(out: Path, entropies: list[float], rewards: list[float], threshold: float, step: int) -> dict:
    """Write ``metrics_stage2.json``; ``collapsed`` when the final per-region entropy is below ``threshold``."""
    final = sum(entropies) / len(entropies) if entropies else float("nan")
    metrics = {
        "steps": step,
        "final_entropy": final,
        "final_reward": sum(rewards) / len(rewards) if rewards else float("nan"),
        "window": len(entropies),
        "collapse_entropy": threshold,
        "collapsed": not final >= threshold,
    }
    (out / "metrics_stage2.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def train(args: argparse.Namespace) -> tuple[Path, dict]:
    rank, world, device = setup_distributed(bool(args.distributed))
    args.rank, args.world = rank, world
    check_setup(args.credit, args.baseline, args.batch_size)
    entropy_weight_at(0, 1, args.entropy_weight)  # a malformed schedule is refused before any data is read
    seed_everything(args.seed + rank)
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    net = build_net(args.model)
    load_descriptor(
        net, load_checkpoint(args.weights, "stage-1 weights from `python -m training.stage1`"), args.weights,
        keep_policy=bool(getattr(args, "init_policy", None)),
    )
    model = Policy(net).to(device)
    optimizer, scheduler, total, step = start_optimisation(args, model, out)
    if world > 1:
        model = DistributedDataParallel(model)
    dataset = make_dataset(args, args.seq_len, total * args.batch_size * world)
    loader = make_loader(dataset, args, rank, world, step)
    logger = CSVLog(out / "log_stage2.csv", enabled=rank == 0)
    bar = tqdm(total=total, initial=step, disable=rank != 0, desc="stage2", dynamic_ncols=True)
    model.train()
    window = max(1, min(20, total // 10))  # steps averaged for the final entropy and reward
    baseline = Baseline(args.credit, args.baseline)
    entropies, rewards = deque(maxlen=window), deque(maxlen=window)
    if step > 0:  # the EMA baseline and the final-entropy window are part of the resumable state
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        baseline.value = state.get("baseline")
        entropies.extend(state.get("entropies", []))
        rewards.extend(state.get("rewards", []))
    t0 = time.perf_counter()
    for batch in loader:
        if step >= total:
            break
        row = train_step(model, optimizer, scheduler, batch, args, baseline, step, total, device)
        entropies.append(row["entropy"])
        rewards.append(row["reward"])
        step += 1
        bar.update(1)
        if rank == 0 and (step % args.log_every == 0 or step == total):
            row = {"step": step, **row, "steps_per_s": args.log_every / max(time.perf_counter() - t0, 1e-9)}
            t0 = time.perf_counter()
            logger.write(row)
            bar.set_postfix(reward=f"{row['reward']:.3f}", entropy=f"{row['entropy']:.2f}")
        if rank == 0 and (step % args.ckpt_every == 0 or step == total):
            extra = {
                "args": vars(args),
                "baseline": baseline.value,
                "entropies": list(entropies),
                "rewards": list(rewards),
            }
            save_checkpoint(out / "last.pt", model, optimizer, scheduler, step, extra)
    bar.close()
    metrics = {}
    if rank == 0:
        metrics = collapse_report(out, list(entropies), list(rewards), args.collapse_entropy, step)
        path = out / ("stage2_collapsed.pt" if metrics["collapsed"] else "stage2.pt")
        torch.save(unwrap(model).net.state_dict(), path)
        metrics["weights"] = str(path)
    cleanup_distributed()
    return out / "stage2.pt", metrics


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = load_config(parser(), argv)
        if not args.weights:
            raise TraqPointError("--weights STAGE1.pt is required (the frozen descriptor from training.stage1)")
        if args.distributed and not under_launcher():  # as torchrun would: one process per GPU / --nproc
            return self_launch("training.stage2", sys.argv[1:] if argv is None else argv, worker_count(args.nproc))
        path, metrics = train(args)
    except (TraqPointError, NonFiniteLoss) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    if metrics.get("collapsed"):
        print(
            f"FAILED: the policy collapsed (per-region entropy {metrics['final_entropy']:.3f} < "
            f"{metrics['collapse_entropy']} over the last {metrics['window']} steps); weights kept as "
            f"{metrics['weights']} for diagnosis only, not for shipping",
            file=sys.stderr,
        )
        return COLLAPSE_EXIT
    if metrics:
        print(f"stage-2 weights: {path} (final per-region entropy {metrics['final_entropy']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
