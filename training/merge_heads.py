"""Move lite2's keypoint heads onto another lite2 descriptor: ``python -m training.merge_heads``.

lite2's local policy (:attr:`~models.lite2.LiteNet2.pixel_embed`) and its sub-pixel head
(:attr:`~models.lite2.LiteNet2.refine_head`) read the image only, never the descriptor backbone
(a policy with a context head, ``policy_context``, reads the backbone and is refused).
So a descriptor retrained by stage 1 (another backbone layout such as
:attr:`LiteNet2.SLIM <models.lite2.LiteNet2.SLIM>`, or other training data) gets the trained heads
of a finished file without retraining them, and detects exactly the same keypoints::

    python -m training.merge_heads --descriptor runs/stage1_lite2s/stage1.pt \\
        --heads models/weights/traqpoint_lite.pt --out runs/lite2s/merged.pt

Everything but the heads comes from ``--descriptor`` (backbone, descriptor and matchability
heads); the output is checked by loading it into the network its tensors describe.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from models.errors import TraqPointError
from models.factory import LITE_WEIGHTS
from models.lite2 import LiteNet2
from training.head_loop import cli_main, load_state

HEAD_PREFIXES = ("pixel_embed.", "refine_head.", "refine_ring", "policy_context.")


def merge(descriptor: dict[str, torch.Tensor], heads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict of ``descriptor`` with the policy and sub-pixel head of ``heads``.

    Raises:
        TraqPointError: either input is not a lite2 state dict, or the result does not load.
    """
    for name, state in (("descriptor", descriptor), ("heads", heads)):
        if not LiteNet2.fits_state(state):
            raise TraqPointError(f"--{name} is not a lite2 state dict")
    if any(k.startswith("policy_context.") for k in heads):
        raise TraqPointError("--heads has a policy context head, which reads the descriptor's backbone: it does not "
                             "carry over; distil the policy on the new descriptor (python -m training.distill_policy "
                             "--weights DESCRIPTOR --context_dim N)")
    merged = {k: v for k, v in descriptor.items() if not k.startswith(HEAD_PREFIXES)}
    merged.update({k: v for k, v in heads.items() if k.startswith(HEAD_PREFIXES)})
    conf = LiteNet2.conf_from_state(merged)
    try:
        LiteNet2(**conf).load_state_dict(merged)
    except RuntimeError as err:
        raise TraqPointError(f"the merged weights do not fit LiteNet2({conf}): {str(err).splitlines()[0]}") from None
    return merged


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.merge_heads", description=__doc__.split("\n\n")[0])
    p.add_argument("--descriptor", required=True, help="lite2 state dict whose backbone and descriptor are kept")
    p.add_argument("--heads", default=str(LITE_WEIGHTS),
                   help="lite2 state dict whose policy and sub-pixel head are taken")
    p.add_argument("--out", required=True, help="output state dict")
    return p


def run(args: argparse.Namespace) -> Path:
    descriptor = load_state(args.descriptor, "descriptor (stage-1 lite2)")
    heads = load_state(args.heads, "heads (finished lite2)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(merge(descriptor, heads), out)
    return out


def main(argv: list[str] | None = None) -> int:
    return cli_main(argv, parser(), lambda args: None, run, "lite2 weights with the merged heads")


if __name__ == "__main__":
    sys.exit(main())
