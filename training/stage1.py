"""Stage 1: descriptor learning on image pairs with known dense correspondence.

    python -m training.stage1 --config stage1_lite.yaml --out runs/stage1
    python -m training.stage1 --distributed --config stage1_lite.yaml      # one process per visible GPU
    python -m training.stage1 --distributed --nproc 2                      # two CPU processes (gloo)
    torchrun --nproc_per_node 2 -m training.stage1 --distributed --config stage1_lite.yaml

Dual-softmax loss in both directions + matchability supervision (:mod:`training.losses`),
AdamW with step learning-rate decay. Pairs come from homography-warped photographs
(``--data_kind homography``, the CPU path) or MegaDepth (``--data_kind megadepth``).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models.errors import TraqPointError
from models.sampling import sample_descriptors
from models.traqpoint import network_descriptor_dim
from models.weights_io import load_checkpoint
from training.config import common_parser, load_config
from training.launch import self_launch, under_launcher, worker_count
from training.losses import grid_correspondences, pair_loss
from training.nets import Describe, build_net, load_descriptor
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
from training.teacher import TeacherMaps, distillation_loss, teacher_dim
from training.warping import warp_points

log = logging.getLogger("training.stage1")


def parser() -> argparse.ArgumentParser:
    p = common_parser(1, __doc__)
    p.add_argument("--num_points", type=int, help="correspondences per pair in the loss")
    p.add_argument("--temperature", type=float, help="dual-softmax temperature")
    p.add_argument("--matchability_weight", type=float, help="weight of the matchability loss")
    p.add_argument("--init_weights", help="start the network from this file (a stage-1 / shipped network or a "
                   "training checkpoint; its policy is kept frozen) with a fresh optimiser and schedule")
    p.add_argument("--teacher", help="ALIKE weight file whose dense descriptors the student distils "
                   "(homography items; training.teacher); empty: no teacher")
    p.add_argument("--teacher_weight", type=float, help="weight of the teacher loss when --teacher is given (0: off)")
    p.add_argument("--teacher_cache", help="folder caching the teacher's maps of the training photographs")
    p.add_argument("--teacher_warmup", type=int, help="first steps in which the teacher loss trains only the "
                   "projection (the student's descriptors detached), so a random projection does not disturb them")
    return p


def make_dataset(args: argparse.Namespace, n_views: int, length: int):
    """The pair/sequence dataset named by ``--data_kind`` (evaluation sets are refused)."""
    if args.data_kind == "megadepth":
        from training.data.megadepth import MegaDepthViews

        return MegaDepthViews(args.data[0], args.scene_info, n_views, tuple(args.training_res), length, args.seed)
    from training.data.mix import mixed_views, sfm_views

    if args.data_kind == "sfm":
        return sfm_views(args, n_views, length)
    from training.data.homography import HomographyViews, WarpConfig
    from training.data.images import load_pool
    from training.data.sfm_heldout import refuse_evaluation_paths

    refuse_evaluation_paths(args.data, "training image folder")
    pool, skipped = load_pool(args.data)
    log.info("training pool: %d images (%d unreadable skipped)", len(pool), skipped)
    warp = WarpConfig(scale=tuple(args.warp_scale), rotation_deg=args.warp_rotation)
    homography = HomographyViews(pool, n_views, tuple(args.training_res), length, args.seed, warp)
    if args.data_kind == "mixed":
        return mixed_views(sfm_views(args, n_views, length), homography, args)
    return homography


def homography_pool(dataset) -> list:
    """The photographs of the homography source of ``dataset`` (plain or mixed), for the teacher."""
    for source in (dataset, *getattr(dataset, "sources", ())):
        if hasattr(source, "pool"):
            return source.pool
    raise TraqPointError("--teacher needs homography items (--data_kind homography or mixed)")


def network_state(state: dict) -> dict:
    """A network's state dict from a network file or a stage-1 training checkpoint (whose model is
    the :class:`Describe` wrapper: keys ``net.*``, plus ``distill.*`` of a teacher run)."""
    if state and all(k.startswith(("net.", "distill.")) for k in state):
        return {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return state


def make_loader(dataset, args, rank: int, world: int, start_step: int) -> DataLoader:
    """Each rank reads its own shard; a resumed run skips the items of finished steps."""
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
    indices = list(itertools.islice(iter(sampler), start_step * args.batch_size, None))
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=indices,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
        drop_last=True,
    )


def batch_loss(
    model, batch: dict, args, device, generator: torch.Generator | None = None, teacher: TeacherMaps | None = None,
    step: int = 0,
) -> dict[str, torch.Tensor]:
    """Sum of pair losses over a batch of two-view items (+ the teacher term when ``teacher`` is given;
    before step ``args.teacher_warmup`` it trains the projection only)."""
    images = batch["images"].to(device)  # [B, 2, 1, H, W]
    b, _, _, h, w = images.shape
    out = model(images.flatten(0, 1))
    projection = getattr(unwrap(model), "distill", None)
    # zero tied to the graph: a batch without correspondences still back-propagates (DDP all-reduce)
    zero = sum(v.sum() for v in out.values()) * 0.0
    if projection is not None:
        zero = zero + projection.weight.sum() * 0.0
    terms = {"descriptor": zero, "matchability": zero, "accuracy": zero.detach()}
    if projection is not None:
        terms["teacher"] = zero
    for i in range(b):
        item = {k: v[i] for k, v in batch.items() if k != "images"}
        pa, pb = grid_correspondences(item, (h, w), 8, args.num_points, generator)
        pa, pb = pa.to(device), pb.to(device)
        if len(pa) < 8:
            continue
        sel = lambda k, j: {key: v[2 * k + j : 2 * k + j + 1] for key, v in out.items()}  # noqa: E731
        for key, v in pair_loss(sel(i, 0), sel(i, 1), pa, pb, (h, w), args.temperature).items():
            terms[key] = terms[key] + v / b
        if projection is not None and teacher is not None and "source" in item:
            detach = step < (args.teacher_warmup or 0)
            term = teacher_term(out, item, i, pa, pb, (h, w), teacher, projection, detach)
            terms["teacher"] = terms["teacher"] + term / b
    terms["total"] = terms["descriptor"] + args.matchability_weight * terms["matchability"]
    if "teacher" in terms:
        terms["total"] = terms["total"] + args.teacher_weight * terms["teacher"]
    return terms


def teacher_term(out: dict, item: dict, i: int, pa: torch.Tensor, pb: torch.Tensor, hw: tuple[int, int],
                 teacher: TeacherMaps, projection: torch.nn.Module, detach: bool = False) -> torch.Tensor:
    """The distillation loss of pair ``i``'s two views at its correspondences ``pa``, ``pb`` ``[N, 2]``:
    both are read against the teacher's descriptor of their common source-photo point (``detach``:
    the gradient reaches the projection only)."""
    src = warp_points(torch.linalg.inv(item["H"][0].double()).float(), pa.cpu())
    target, inside = teacher.sample(int(item["source"]), src)
    target, inside = target.to(pa.device), inside.to(pa.device)
    loss = 0.0
    for view, pts in ((0, pa), (1, pb)):
        d = sample_descriptors(out["descriptors"][2 * i + view : 2 * i + view + 1], pts[None], hw)[0]
        d = d.detach() if detach else d
        loss = loss + 0.5 * distillation_loss(d[inside], target[inside], projection)
    return loss


def train(args: argparse.Namespace) -> Path:
    rank, world, device = setup_distributed(bool(args.distributed))
    seed_everything(args.seed + rank)
    out = Path(args.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    net = build_net(args.model, args.backbone_weights)
    if args.init_weights:
        load_descriptor(net, network_state(load_checkpoint(args.init_weights, "--init_weights")), args.init_weights)
    model = Describe(net)
    use_teacher = bool(args.teacher) and args.teacher_weight > 0
    if use_teacher:  # trained with the student, not part of stage1.pt
        model.distill = torch.nn.Linear(network_descriptor_dim(net), teacher_dim(args.teacher), bias=False)
    model = model.to(device)
    optimizer, scheduler, total, step = start_optimisation(args, model, out)
    if world > 1:
        model = DistributedDataParallel(model)
    dataset = make_dataset(args, 2, total * args.batch_size * world)
    teacher = None
    if use_teacher:
        teacher = TeacherMaps(homography_pool(dataset), args.teacher, args.teacher_cache)
    elif args.teacher:
        log.warning("--teacher %s with --teacher_weight 0: no teacher term is trained", args.teacher)
    loader = make_loader(dataset, args, rank, world, step)
    logger = CSVLog(out / "log_stage1.csv", enabled=rank == 0)
    bar = tqdm(total=total, initial=step, disable=rank != 0, desc="stage1", dynamic_ncols=True)
    model.train()
    t0 = time.perf_counter()
    for batch in loader:
        if step >= total:
            break
        generator = step_generator(args.seed, step, world, rank)  # point subsampling: exact on resume
        terms = batch_loss(model, batch, args, device, generator, teacher, step)
        check_finite(terms["total"], step + 1, out)
        optimise(terms["total"], optimizer, scheduler)
        step += 1
        bar.update(1)
        if rank == 0 and (step % args.log_every == 0 or step == total):
            row = {
                "step": step,
                **{k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()},
                "lr": scheduler.get_last_lr()[0],
                "steps_per_s": args.log_every / max(time.perf_counter() - t0, 1e-9),
            }
            t0 = time.perf_counter()
            logger.write(row)
            bar.set_postfix(loss=f"{row['total']:.3f}", acc=f"{row['accuracy']:.2f}")
        if rank == 0 and (step % args.ckpt_every == 0 or step == total):
            save_checkpoint(out / "last.pt", model, optimizer, scheduler, step, {"args": vars(args)})
    bar.close()
    if rank == 0:
        torch.save(unwrap(model).net.state_dict(), out / "stage1.pt")
    cleanup_distributed()
    return out / "stage1.pt"


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = load_config(parser(), argv)
        if args.distributed and not under_launcher():  # as torchrun would: one process per GPU / --nproc
            return self_launch("training.stage1", sys.argv[1:] if argv is None else argv, worker_count(args.nproc))
        path = train(args)
    except (TraqPointError, NonFiniteLoss) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"stage-1 weights: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
