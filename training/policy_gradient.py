"""REINFORCE for the stage-2 policy: credit assignment, its matching baseline, the loss, the entropy schedule.

Credit ``point``: each sampled point's advantage is its own reward minus a baseline of *point*
rewards; credit ``sequence`` (the paper's form): every point of a sequence shares the sequence
reward minus a baseline of *sequence* rewards. The baseline never contains the unit it is
subtracted from, so the gradient stays unbiased and an advantage is not zero by construction
(the old batch-mean baseline of sequence rewards made it exactly zero at batch size 1):

* ``batch``: leave-one-out mean over the other units of the batch (points, or sequences);
* ``ema``: running mean of past batches' unit rewards (decay 0.9); the first step, with no
  history, uses the leave-one-out mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from models.errors import BadInputError

Credit = Literal["point", "sequence"]
BaselineKind = Literal["ema", "batch"]


def check_setup(credit: Credit, baseline: BaselineKind, batch_size: int) -> None:
    """Reject a credit/baseline pair that has no baseline at this batch size (one clear line)."""
    if credit == "sequence" and baseline == "batch" and batch_size < 2:
        raise BadInputError(
            "--credit sequence --baseline batch needs --batch_size >= 2 (a leave-one-out mean over "
            "the other sequences); use --baseline ema or --credit point"
        )


def units(reward: dict[str, torch.Tensor], credit: Credit) -> tuple[torch.Tensor, torch.Tensor]:
    """The rewarded units and their mask: points ``[B, N]`` or sequences ``[B]``."""
    if credit == "point":
        return reward["point"], reward["counted"]
    return reward["sequence"], reward["counted"].any(1)


def leave_one_out(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the *other* masked entries, per entry (0 where there is no other one)."""
    m = mask.float()
    total, count = (values * m).sum(), m.sum()
    return torch.where(count - m > 0, (total - values * m) / (count - m).clamp_min(1), torch.zeros_like(values))


@dataclass
class Baseline:
    """The reward baseline matching a credit assignment; ``value`` is the EMA state (resumable)."""

    credit: Credit = "point"
    kind: BaselineKind = "ema"
    value: float | None = None
    decay: float = 0.9

    def advantages(self, reward: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Advantages ``[B, N]`` (0 for points never in view) and the baseline used (per unit)."""
        r, mask = units(reward, self.credit)
        if self.kind == "ema" and self.value is not None:
            b = torch.full_like(r, self.value)
        else:
            b = leave_one_out(r, mask)
        adv = (r - b) * mask
        if self.credit == "sequence":
            adv = adv[:, None] * reward["counted"]
            b = b[:, None].expand_as(adv)
        return adv.detach(), b

    def update(self, reward: dict[str, torch.Tensor]) -> None:
        """Fold this batch's mean unit reward into the EMA."""
        r, mask = units(reward, self.credit)
        if not mask.any():
            return
        mean = float((r * mask).sum() / mask.sum())
        self.value = mean if self.value is None else self.decay * self.value + (1 - self.decay) * mean


def entropy_weight_at(step: int, total: int, schedule: float | list[float]) -> float:
    """Linear decay of the entropy weight from ``schedule[0]`` to ``schedule[1]`` over the run
    (the authors: 0.015 -> 0.005); a single number is a constant weight."""
    if isinstance(schedule, (int, float)):
        return float(schedule)
    if len(schedule) == 1:  # ``--entropy_weight 0.01`` on the command line is a one-element list
        return float(schedule[0])
    if len(schedule) != 2:
        raise BadInputError(f"--entropy_weight takes one value or START END, not {len(schedule)} values")
    start, end = schedule
    return start + (end - start) * min(1.0, step / max(total, 1))


def policy_loss(
    logp: torch.Tensor, adv: torch.Tensor, counted: torch.Tensor, entropy: torch.Tensor, entropy_weight: float
) -> torch.Tensor:
    """``-mean_b (sum_k A_k log pi(k)) / n_b - lambda * H`` with ``n_b`` the counted points of sequence b.

    ``logp, adv [B, N]``, ``counted [B, N]`` bool, ``entropy`` scalar (per-region, in [0, 1]).
    """
    pg = -(adv * logp).sum(1) / counted.sum(1).clamp_min(1)
    return pg.mean() - entropy_weight * entropy
