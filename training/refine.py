"""Sub-pixel refinement head of ``lite2`` (after stage 2): ``python -m training.refine``.

``traqpoint-lite`` (lite2) picks keypoints on a stride-2 policy map, so a keypoint is only known to its
2x2 block (demo tracking: 0.9 px median localisation error against 0.32 px for v1's
full-resolution policy). This stage trains :attr:`models.lite2.LiteNet2.refine_head`, a tiny
full-resolution head scored on 12x12 patches (ring 2) around the selected blocks, with everything else
frozen. The loss is ALIKE's reprojection loss on differentiable (soft-argmax) keypoints, on
homography pairs with exact correspondences:

1. In view A, select blocks as inference does (stride-2 NMS and top-k on the frozen policy) and
   refine them: ``p_A``.
2. Warp: ``q = H_BA p_A``. In view B, refine the block that contains ``q`` (what inference finds
   when B's policy picks the same block): ``p_B``.
3. Loss: Huber (1 px) of ``p_B - q``, both directions. A head that ignores the image puts every
   keypoint at its block centre and keeps the 2x2 quantisation error; only image structure found
   again after the warp lowers it.

The log reports the same protocol's error for the shipped refinement (quadratic fit of the
stride-2 logits) as ``err_quadratic_px``, so the gain is measured on identical keypoints.
Resumable (``OUT/last.pt``); the result is a full lite2 state dict, ``OUT/refine.pt``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from models.conventions import rescale_pixels
from models.errors import TraqPointError
from models.factory import LITE_WEIGHTS
from models.keypoints import refine_subpixel, select_keypoints
from models.lite2 import REFINE_KINDS, LiteNet2
from training.config import CONFIG_DIR
from training.head_loop import add_loop_args, cli_main, load_lite2_state, train_steps
from training.runtime import resume, seed_everything
from training.stage1 import make_dataset, make_loader
from training.warping import in_bounds, lookup, relative, warp_points

log = logging.getLogger(__name__)
MARGIN = 6  # px: warped points this close to B's border are not scored (the patch would be padded)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.refine", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--weights",
        default=str(LITE_WEIGHTS),
        help="stage-2 lite2 state dict (a head already in it is discarded: the run starts from stage 2)",
    )
    p.add_argument("--recipe", default="stage1_lite.yaml", help="stage-1 recipe: data, resolution and warps")
    p.add_argument("--out", default="runs/refine_lite2")
    p.add_argument("--refine_kind", choices=REFINE_KINDS, default="mlp",
                   help="head on the patch: mlp (one hidden layer, the shipped one) or conv (3 tiny convolutions)")
    p.add_argument("--refine_dim", type=int, default=128, help="hidden units (mlp) or channels (conv) of the head")
    p.add_argument("--refine_ring", type=int, default=2, help="px around the block the head may reach")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--num_kp", type=int, default=256, help="blocks selected per view")
    add_loop_args(p)
    return p


def data_args(args: argparse.Namespace) -> argparse.Namespace:
    """The stage-1 recipe's data settings (the homography source on the training imagery)."""
    recipe = yaml.safe_load((CONFIG_DIR / args.recipe).read_text())
    keys = ("data_kind", "data", "training_res", "warp_scale", "warp_rotation")
    return argparse.Namespace(**{k: recipe[k] for k in keys}, seed=args.seed, batch_size=args.batch_size, workers=0)


def build(weights: str, refine_dim: int, refine_ring: int = 2, refine_kind: str = "mlp") -> LiteNet2:
    """A lite2 net with the stage-2 weights, a fresh (centre-initialised) head, all else frozen."""
    path = Path(weights)
    state = load_lite2_state(path, "train stage 2 or use the shipped file")
    conf = {**LiteNet2.conf_from_state(state), "refine_dim": refine_dim, "refine_ring": refine_ring,
            "refine_kind": refine_kind}
    net = LiteNet2(**conf)
    state = {k: v for k, v in state.items() if not k.startswith("refine_")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("refine_") for k in missing):
        raise TraqPointError(f"{path} does not fit LiteNet2({conf})")
    nn_last = net.refine_head[-1]
    torch.nn.init.zeros_(nn_last.weight)  # uniform soft-argmax: the block centre, as before training
    torch.nn.init.zeros_(nn_last.bias)
    for name, param in net.named_parameters():
        param.requires_grad_(name.startswith("refine_head."))
    net.eval()  # BatchNorm keeps its statistics; the head has none
    net.full_res_logits, net.with_matchability = False, False
    return net


def warp(H: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """``pts [N, 2]`` through homography ``H [3, 3]``, in float64, back in ``pts``'s dtype."""
    return warp_points(H.double(), pts.double()).to(pts.dtype)


def scored(q: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mask ``[N]``: warped points ``q`` at least ``MARGIN`` px from view B's border pixels and on its
    content (``valid [H, W]``)."""
    return in_bounds(q, tuple(valid.shape), MARGIN + 0.5) & lookup(valid, q)


def nearest_in_window(q: torch.Tensor, centres: torch.Tensor, ring: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For points ``q [N, 2]``: the index ``[N]`` of the nearest block centre ``centres [M, 2]`` and
    whether ``q`` lies inside that block's refinement window (``ring + 0.5`` px per axis: the head
    can reach it)."""
    if len(centres) == 0 or len(q) == 0:
        return torch.zeros(len(q), dtype=torch.long), torch.zeros(len(q), dtype=torch.bool)
    j = torch.cdist(q.float(), centres.float()).argmin(dim=1)
    inside = ((q - centres[j]).abs() <= ring + 0.5).all(dim=1)
    return j, inside


def direction_errors(
    net: LiteNet2,
    logits: torch.Tensor,
    images: torch.Tensor,
    H: torch.Tensor,
    valid: torch.Tensor,
    sel: list[torch.Tensor],
    a: int,
    b: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Errors ``[M, 2]`` of A -> B, for the head and for the quadratic fit of the stride-2 logits.

    ``sel`` holds each view's blocks, selected as inference does (stride-2 NMS + top-k). A keypoint of A,
    warped into B (``q``), is scored against B's *selected* block nearest to it, when ``q`` lies
    within that block's window: the head learns to re-find the structure whatever block the
    policy picked around it (on homography pairs only ~30 % of warped blocks land in the same
    block of B; ~70 % within the 6x6 window).
    """
    ring = int(net.refine_ring)
    H_ba = relative(H[b], H[a])
    centres_b = rescale_pixels(sel[b], 2)
    p_a = net.refine_keypoints(images[a : a + 1], sel[a])
    q = warp(H_ba, p_a)
    j, inside = nearest_in_window(q.detach(), centres_b, ring)
    keep = inside & scored(q.detach(), valid[b, 0])
    p_b = net.refine_keypoints(images[b : b + 1], sel[b][j[keep]])
    with torch.no_grad():  # the shipped refinement, same blocks, same rule
        qa = warp(H_ba, rescale_pixels(refine_subpixel(logits[a], sel[a]), 2))
        jq, inside_q = nearest_in_window(qa, centres_b, ring)
        keep_q = inside_q & scored(qa, valid[b, 0])
        qb = rescale_pixels(refine_subpixel(logits[b], sel[b][jq[keep_q]]), 2)
    return p_b - q[keep], qb - qa[keep_q]


def batch_loss(net: LiteNet2, batch: dict, k: int) -> dict[str, torch.Tensor]:
    images, hs, valid = batch["images"], batch["H"], batch["valid"]  # [B, 2, 1, H, W], [B, 2, 3, 3]
    errs, quad = [], []
    for i in range(images.shape[0]):  # a loop over pairs, not keypoints
        with torch.no_grad():
            logits = net(images[i])["logits"].float()  # [2, 1, H/2, W/2]
        sel, _ = select_keypoints(logits, k, radius=1, threshold=float("-inf"), border=3)  # both views, once
        for a, b in ((0, 1), (1, 0)):
            e, eq = direction_errors(net, logits, images[i], hs[i].double(), valid[i].bool(), sel, a, b)
            errs.append(e.float())
            quad.append(eq.float())
    e, eq = torch.cat(errs), torch.cat(quad)
    loss = F.huber_loss(e, torch.zeros_like(e), delta=1.0) if len(e) else e.sum()
    return {
        "total": loss,
        "err_head_px": e.detach().norm(dim=1).median() if len(e) else torch.tensor(float("nan")),
        "err_quadratic_px": eq.norm(dim=1).median() if len(eq) else torch.tensor(float("nan")),
        "points": torch.tensor(float(len(e))),
    }


def train(args: argparse.Namespace) -> Path:
    seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = build(args.weights, args.refine_dim, args.refine_ring, args.refine_kind)
    optimizer = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    last = out / "last.pt"
    step = resume(last, net, optimizer, scheduler) if args.resume and last.exists() else 0
    data = data_args(args)
    loader = make_loader(make_dataset(data, 2, args.steps * args.batch_size), data, 0, 1, step)
    train_steps(
        net, optimizer, scheduler, loader,
        lambda batch: batch_loss(net, batch, args.num_kp),
        args, out, step, "refine",
        lambda r: {"head": f"{r['err_head_px']:.3f}", "quad": f"{r['err_quadratic_px']:.3f}"},
    )
    torch.save(net.state_dict(), out / "refine.pt")
    return out / "refine.pt"


def invalid(args: argparse.Namespace) -> str | None:
    """The one-line complaint about bad numbers, or None."""
    bad = args.steps < 1 or args.batch_size < 1 or args.num_kp < 1 or args.refine_dim < 1 or args.refine_ring < 0
    return "--steps, --batch_size, --num_kp, --refine_dim must be >= 1, --refine_ring >= 0" if bad else None


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, parser(), invalid, train, "lite2 weights with the refinement head")


if __name__ == "__main__":
    sys.exit(main())
