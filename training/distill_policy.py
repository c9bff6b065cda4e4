"""Policy distillation for ``lite2``: ``python -m training.distill_policy``.

lite2's own stage 2 (``training.stage2``) ends with a less repeatable policy than v1's on the
same data (churchill repeatability@3 53 % against 69 %, ``training/README.md``), although both
policy heads are tiny local convolution stacks. This stage trains lite2's stride-2 policy
(:attr:`models.lite2.LiteNet2.pixel_embed`, everything else frozen) to reproduce the policy of
the shipped ``traqpoint-lite-v1`` (itself trained by stage 2), i.e. the teacher's stage-2
result is transferred instead of re-learned by a REINFORCE run on a smaller head.

Target: the teacher's full-resolution logits, max-pooled over each 2x2 block (a block is
selected when its best pixel would be) and standardised per image, ``z``. Loss, two KL
divergences between the teacher's ``softmax(beta z)`` and the student's ``softmax(s)``:

- within every ``cell`` x ``cell`` block of the stride-2 map (local peaks: what NMS keeps);
- over the whole image (which peaks win the image-wide top-k, as the paper's image-wide policy).

The student's logit scale is free (the softmax absorbs it; selection only uses the order).
Data: the stage-1 recipe's homography views (both views of each pair, photometric noise
included). Resumable (``OUT/last.pt``); the result is a full lite2 state dict,
``OUT/distill.pt``, whose refinement head (if any) is carried over unchanged: retrain it with
``training.refine`` on the new policy.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from models.errors import TraqPointError
from models.factory import LITE_V1_WEIGHTS, LITE_WEIGHTS
from models.lite import LiteNet
from models.lite2 import LiteNet2, standardise
from training.head_loop import add_loop_args, cli_main, load_lite2_state, load_state, train_steps
from training.refine import data_args
from training.runtime import resume, seed_everything
from training.stage1 import make_dataset, make_loader

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.distill_policy", description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=str(LITE_WEIGHTS), help="lite2 state dict (descriptor + head are kept)")
    p.add_argument("--teacher", default=str(LITE_V1_WEIGHTS), help="v1 (traqpoint-lite-v1) state dict")
    p.add_argument("--init", choices=("weights", "fresh"), default="fresh",
                   help="start the policy from --weights or anew")
    p.add_argument("--recipe", default="stage1_lite.yaml", help="stage-1 recipe: data, resolution and warps")
    p.add_argument("--out", default="runs/distill_lite2")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch_size", type=int, default=8, help="pairs per step (both views are used)")
    p.add_argument("--beta", type=float, default=2.0, help="teacher temperature on standardised logits")
    p.add_argument("--cell", type=int, default=8, help="side of the local softmax cells, stride-2 pixels")
    p.add_argument("--global_weight", type=float, default=1.0, help="weight of the image-wide KL")
    p.add_argument("--context_dim", type=int, default=0,
                   help="add a region-level context logit with this hidden width (v1's policy_head) when "
                        "--weights has none; it starts at zero, so step 0 is the --weights policy")
    add_loop_args(p)
    return p


def build_teacher(path: str | Path) -> LiteNet:
    """The frozen v1 network of ``path`` (eval mode)."""
    state = load_state(path, "teacher (traqpoint-lite-v1)")
    if "stem.0.weight" in state:
        raise TraqPointError(f"{path} is a lite2 state dict; the teacher is a v1 (traqpoint-lite-v1) network")
    net = LiteNet(**LiteNet.conf_from_state(state))
    net.load_state_dict(state)
    net.eval().requires_grad_(False)
    return net


def build_student(path: str | Path, fresh: bool, context_dim: int = 0) -> LiteNet2:
    """lite2 of ``path`` with only its policy (:meth:`~models.lite2.LiteNet2.policy_parameters`)
    trainable; ``fresh`` re-initialises it. ``context_dim > 0`` adds a context head where ``path``
    has none, its last layer zero so that the added logit starts at 0."""
    state = load_lite2_state(path)
    conf = LiteNet2.conf_from_state(state)
    added = context_dim > 0 and not conf["context_dim"]
    if added:
        conf["context_dim"] = context_dim
    net = LiteNet2(**conf)
    missing, unexpected = net.load_state_dict(state, strict=not added)
    if unexpected or any(not k.startswith("policy_context.") for k in missing):
        raise TraqPointError(f"{path} does not fit lite2: missing {missing}, unexpected {unexpected}")
    net.eval().requires_grad_(False)
    if fresh:
        for m in net.pixel_embed.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.reset_parameters()
    if added:
        torch.nn.init.zeros_(net.policy_context[-1].weight)
        torch.nn.init.zeros_(net.policy_context[-1].bias)
    for p in net.policy_parameters():
        p.requires_grad_(True)
    return net


def teacher_targets(teacher: LiteNet, images: torch.Tensor) -> torch.Tensor:
    """Standardised stride-2 teacher logits ``[B, 1, H/2, W/2]`` of ``images [B, 1, H, W]``."""
    with torch.no_grad():
        t = F.max_pool2d(teacher(images)["logits"].float(), 2)
        flat = t.flatten(1)
        return (t - flat.mean(1).view(-1, 1, 1, 1)) / flat.std(1).clamp_min(1e-6).view(-1, 1, 1, 1)


def cells(x: torch.Tensor, c: int) -> torch.Tensor:
    """``[B, 1, h, w] -> [B * (h // c) * (w // c), c * c]`` (the map cropped to whole cells)."""
    b, _, h, w = x.shape
    x = x[:, 0, : h // c * c, : w // c * c].reshape(b, h // c, c, w // c, c)
    return x.permute(0, 1, 3, 2, 4).reshape(-1, c * c)


def kl(target_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Mean over rows of KL(softmax(target) || softmax(student)), rows ``[N, K]``."""
    p_log = target_logits.log_softmax(dim=1)
    return (p_log.exp() * (p_log - student_logits.log_softmax(dim=1))).sum(1).mean()


def distill_loss(student: LiteNet2, z: torch.Tensor, images: torch.Tensor, beta: float, cell: int,
                 global_weight: float) -> dict[str, torch.Tensor]:
    """The two KL terms for ``images [B, 1, H, W]`` and the teacher's standardised targets ``z``."""
    x = standardise(images)
    shared = None
    if student.policy_reads_features:
        with torch.no_grad():
            shared = student.shared_features(x)
    s = student.policy_logits(x, shared)
    t = beta * z
    local = kl(cells(t, cell), cells(s, cell))
    image = kl(t.flatten(1), s.flatten(1))
    with torch.no_grad():  # agreement of the image-wide top 2 %: which blocks the student would pick
        k = max(1, s[0].numel() // 50)
        top_s = s.flatten(1).topk(k, dim=1).indices
        top_t = z.flatten(1).topk(k, dim=1).indices
        hit = (top_s[:, :, None] == top_t[:, None, :]).any(2).float().mean()
    return {"total": local + global_weight * image, "kl_cell": local, "kl_image": image, "top2pct_agree": hit}


def train(args: argparse.Namespace) -> Path:
    seed_everything(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    teacher = build_teacher(args.teacher)
    student = build_student(args.weights, args.init == "fresh", args.context_dim)
    optimizer = torch.optim.Adam(student.policy_parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    last = out / "last.pt"
    step = resume(last, student, optimizer, scheduler) if args.resume and last.exists() else 0
    data = data_args(args)
    loader = make_loader(make_dataset(data, 2, args.steps * args.batch_size), data, 0, 1, step)

    def terms_of(batch: dict) -> dict[str, torch.Tensor]:
        images = batch["images"].flatten(0, 1)  # [2B, 1, H, W]: both views of every pair
        return distill_loss(student, teacher_targets(teacher, images), images, args.beta, args.cell,
                            args.global_weight)

    train_steps(
        student, optimizer, scheduler, loader, terms_of, args, out, step, "distill",
        lambda r: {"kl": f"{r['total']:.3f}", "agree": f"{r['top2pct_agree']:.2f}"},
    )
    torch.save(student.state_dict(), out / "distill.pt")
    return out / "distill.pt"


def invalid(args: argparse.Namespace) -> str | None:
    """The one-line complaint about bad numbers, or None."""
    bad = (args.steps < 1 or args.batch_size < 1 or args.cell < 1 or args.beta <= 0 or args.global_weight < 0
           or args.context_dim < 0)
    return ("--steps, --batch_size, --cell must be >= 1, --beta > 0, --global_weight, --context_dim >= 0"
            if bad else None)


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, parser(), invalid, train, "lite2 weights with the distilled policy")


if __name__ == "__main__":
    sys.exit(main())
