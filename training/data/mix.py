"""Two training sources mixed by training step: SfM reconstructions and homography warps.

Items of the two sources carry different ground truth (``depth``/``K``/``T_cam_world``/``tracks``
against ``H``/``valid``), so one batch never mixes them: every training step takes its whole
batch (on every rank) from one source. Step ``t`` is an SfM step when
``floor((t + 1) * ratio) > floor(t * ratio)``, which spreads exactly ``ratio`` of the steps
evenly and deterministically (resumable at any step; ``ratio`` 0.6 = XFeat's 6:4 MegaDepth:COCO).

The step of dataset index ``i`` is ``i // group`` with ``group`` = items per step over all ranks
(``batch_size * world_size``): the layout of ``training.stage1.make_loader`` (a
``DistributedSampler`` without shuffling, rank ``r`` takes indices ``r, r + world, ...``, and
resumed runs skip whole steps).
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import Dataset

from models.errors import BadInputError


def step_source(step: int, ratio: float) -> int:
    """0 = the first (SfM) source, 1 = the second (homography) one, for training step ``step``."""
    return 0 if math.floor((step + 1) * ratio) > math.floor(step * ratio) else 1


class MixedViews(Dataset):
    """Item ``i``: ``sources[step_source(i // group, ratio)][i]`` (see the module docstring).

    Args:
        first: the source of a fraction ``ratio`` of the steps (SfM views).
        second: the source of the other steps (homography views).
        ratio: fraction of steps drawn from ``first``, in ``[0, 1]``.
        group: dataset items per training step over all ranks (``batch_size * world_size``).
    """

    def __init__(self, first: Dataset, second: Dataset, ratio: float, group: int) -> None:
        if not 0.0 <= ratio <= 1.0:
            raise BadInputError(f"sfm_ratio must lie in [0, 1], got {ratio}")
        if group < 1:
            raise BadInputError(f"items per step must be >= 1, got {group}")
        if len(first) != len(second):
            raise BadInputError(f"mixed sources differ in length: {len(first)} and {len(second)}")
        self.sources, self.ratio, self.group = (first, second), ratio, group

    def __len__(self) -> int:
        return len(self.sources[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.sources[step_source(i // self.group, self.ratio)][i]


def sfm_views(args, n_views: int, length: int) -> Dataset:
    """The SfM source of a training recipe (``--sfm_cache``, ``--sfm_overlap``, ``--training_res``)."""
    from training.data.sfm import SfMConfig, SfMViews

    if not args.sfm_cache:
        raise BadInputError(
            "--sfm_cache is required with --data_kind sfm/mixed (see `python -m training.data.reconstruct`)"
        )
    cfg = SfMConfig(overlap=tuple(args.sfm_overlap)) if args.sfm_overlap else SfMConfig()
    return SfMViews(args.sfm_cache, n_views, tuple(args.training_res), length, args.seed, cfg)


def mixed_views(sfm: Dataset, homography: Dataset, args) -> MixedViews:
    """SfM and homography views mixed by step (``--sfm_ratio``), batches of ``--batch_size`` per rank."""
    if args.sfm_ratio is None:
        raise BadInputError("--sfm_ratio is required with --data_kind mixed")
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return MixedViews(sfm, homography, float(args.sfm_ratio), args.batch_size * world)
