"""Stage 2: keypoint-policy learning by REINFORCE with the track-aware reward (descriptor frozen).

    python -m training.stage2 --config stage2_lite.yaml --weights runs/stage1_lite/stage1.pt
    torchrun --nproc_per_node 2 -m training.stage2 --distributed --weights STAGE1.pt

For each ``seq_len``-view sequence the policy samples keypoints in view 0 (hybrid: one draw per
grid cell + global draws), they are warped into the other views, and each earns the reward of
:mod:`training.rewards`. Loss: ``-(R - b) * sum(log pi) - lambda * H``, with baseline ``b`` and the
per-region entropy ``H``. ``--credit point`` uses each point's own reward minus the baseline as its
advantage (lower variance on small CPU batches); ``--credit sequence`` is the paper's form.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from models.errors import TraqPointError
from models.weights_io import load_checkpoint
from training.config import common_parser, load_config
from training.nets import Policy, build_net, load_descriptor
from training.rewards import sample_at, sample_policy, spatial_entropy, track_reward
from training.runtime import (
    CSVLog,
    NonFiniteLoss,
    check_finite,
    cleanup_distributed,
    optimise,
    save_checkpoint,
    seed_everything,
    setup_distributed,
    start_optimisation,
    step_generator,
    unwrap,
)
from training.stage1 import make_dataset, make_loader
from training.warping import warp_item

log = logging.getLogger("training.stage2")


def parser() -> argparse.ArgumentParser:
    p = common_parser(2, __doc__)
    p.add_argument("--weights", help="stage-1 weights (descriptor, frozen here)")
    p.add_argument("--seq_len", type=int, help="views per sequence (paper: 5)")
    p.add_argument("--sampling_strategy", choices=["hybrid", "grid", "global"], help="keypoint sampling")
    p.add_argument("--num_global_samples", type=int, help="global samples per image (hybrid/global)")
    p.add_argument("--grid_size", type=int, help="cell size of grid sampling and of the consistency rank")
    p.add_argument("--ratio_thresh", type=float, help="distinctiveness ratio threshold")
    p.add_argument("--sim_thresh", type=float, help="descriptor cosine similarity gate")
    p.add_argument("--entropy_weight", type=float, help="lambda of the per-region entropy bonus")
    p.add_argument("--entropy_regions", type=int, help="regions per side for the entropy bonus")
    p.add_argument("--credit", choices=["point", "sequence"], help="advantage per point or per sequence")
    p.add_argument("--baseline", choices=["ema", "batch"], help="reward baseline")
    return p


def sequence_terms(out: dict[str, torch.Tensor], batch: dict, args, generator: torch.Generator) -> dict:
    """Sample, warp and reward one batch of sequences; returns log-probs, rewards and components."""
    b, v = batch["images"].shape[:2]
    h, w = batch["images"].shape[-2:]
    view = lambda k: out[k].unflatten(0, (b, v))  # noqa: E731
    logits, desc = view("logits"), view("descriptors").detach()
    pts, logp = sample_policy(logits[:, 0], args.grid_size, args.num_global_samples, args.sampling_strategy, generator)
    warped = torch.zeros(b, v - 1, pts.shape[1], 2)
    covis = torch.zeros(b, v - 1, pts.shape[1], dtype=torch.bool)
    for i in range(b):  # a loop over sequences, not over points
        item = {k: t[i] for k, t in batch.items() if k != "images"}
        for j in range(1, v):
            warped[i, j - 1], covis[i, j - 1] = warp_item(item, 0, j, pts[i])
    ref_desc = sample_at(desc[:, 0], pts, (h, w))
    tgt_desc = sample_at(desc[:, 1:].flatten(0, 1), warped.flatten(0, 1), (h, w)).unflatten(0, (b, v - 1))
    ref_desc, tgt_desc = (
        torch.nn.functional.normalize(ref_desc, dim=-1),
        torch.nn.functional.normalize(tgt_desc, dim=-1),
    )
    reward = track_reward(
        ref_desc, tgt_desc, logits[:, 1:].detach(), warped, covis, args.grid_size, args.sim_thresh, args.ratio_thresh
    )
    return {"logp": logp, "reward": reward, "entropy": spatial_entropy(logits[:, 0], args.entropy_regions)}


def policy_loss(terms: dict, baseline: float, args) -> torch.Tensor:
    """REINFORCE loss with baseline and entropy bonus."""
    r = terms["reward"]
    if args.credit == "point":
        adv = (r["point"] - baseline) * r["covisible"]
        pg = -(adv.detach() * terms["logp"]).sum(1) / r["covisible"].sum(1).clamp_min(1)
    else:
        pg = -(r["sequence"] - baseline).detach() * terms["logp"].sum(1) / terms["logp"].shape[1]
    return pg.mean() - args.entropy_weight * terms["entropy"]


def train(args: argparse.Namespace) -> Path:
    rank, world, device = setup_distributed(bool(args.distributed))
    seed_everything(args.seed + rank)
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    net = build_net(args.model)
    load_descriptor(
        net, load_checkpoint(args.weights, "stage-1 weights from `python -m training.stage1`"), args.weights
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
    baseline, t0 = None, time.perf_counter()
    if step > 0:  # the EMA reward baseline is part of the resumable state
        baseline = torch.load(out / "last.pt", map_location="cpu", weights_only=False).get("baseline")
    for batch in loader:
        if step >= total:
            break
        generator = step_generator(args.seed, step, world, rank)  # resumable sampling
        out_maps = model(batch["images"].flatten(0, 1).to(device))
        terms = sequence_terms({k: v.cpu() for k, v in out_maps.items()}, batch, args, generator)
        r = terms["reward"]
        batch_mean = float(r["sequence"].mean())
        if args.baseline == "batch" or baseline is None:
            b_now = (
                float((r["point"] * r["covisible"]).sum() / r["covisible"].sum().clamp_min(1))
                if args.credit == "point"
                else batch_mean
            )
        else:
            b_now = baseline
        loss = policy_loss(terms, b_now, args)
        check_finite(loss, step + 1, out)
        optimise(loss, optimizer, scheduler)
        baseline = batch_mean if baseline is None else 0.9 * baseline + 0.1 * batch_mean
        step += 1
        bar.update(1)
        if rank == 0 and (step % args.log_every == 0 or step == total):
            spread = terms["logp"].exp().std().item()
            row = {
                "step": step,
                "loss": float(loss.detach()),
                "reward": batch_mean,
                "baseline": b_now,
                "consistency": float(r["consistency"]),
                "distinctiveness": float(r["distinctiveness"]),
                "similar": float(r["similar"]),
                "entropy": float(terms["entropy"].detach()),
                "covisible": float(r["covisible"].float().mean()),
                "prob_std": spread,
                "lr": scheduler.get_last_lr()[0],
                "steps_per_s": args.log_every / max(time.perf_counter() - t0, 1e-9),
            }
            t0 = time.perf_counter()
            logger.write(row)
            bar.set_postfix(reward=f"{batch_mean:.3f}", cons=f"{row['consistency']:.2f}")
        if rank == 0 and (step % args.ckpt_every == 0 or step == total):
            save_checkpoint(
                out / "last.pt", model, optimizer, scheduler, step, {"args": vars(args), "baseline": baseline}
            )
    bar.close()
    if rank == 0:
        torch.save(unwrap(model).net.state_dict(), out / "stage2.pt")
    cleanup_distributed()
    return out / "stage2.pt"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = load_config(parser(), argv)
        if not args.weights:
            raise TraqPointError("--weights STAGE1.pt is required (the frozen descriptor from training.stage1)")
        path = train(args)
    except (TraqPointError, NonFiniteLoss) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"stage-2 weights: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
