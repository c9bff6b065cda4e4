"""torchrun entry of the DDP smoke test: ``training.stage1.main`` with a test-only hook.

The training code saves rank 0 only. To check that DDP kept the replicas identical, every rank
here also writes, when training ends, its own parameters and a checksum of each batch it read
(``OUT/rank<r>.pt``). Nothing in the training code is changed: the hook wraps the module-level
``DistributedDataParallel`` (to see the model), ``batch_loss`` (to see the batches) and
``cleanup_distributed`` (to save before the process group goes away).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

import training.stage1 as stage1

seen: dict = {"model": None, "batches": []}


class RecordingDDP(stage1.DistributedDataParallel):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        seen["model"] = self


def recording_batch_loss(model, batch, *args, **kwargs):
    seen["batches"].append(float(batch["images"].double().sum()))
    return real_batch_loss(model, batch, *args, **kwargs)


def save_then_cleanup() -> None:
    out = Path(sys.argv[sys.argv.index("--out") + 1])
    state = {k: v.detach().clone() for k, v in seen["model"].module.state_dict().items()}
    torch.save({"state": state, "batches": seen["batches"]}, out / f"rank{os.environ['RANK']}.pt")
    real_cleanup()


real_batch_loss, real_cleanup = stage1.batch_loss, stage1.cleanup_distributed
stage1.DistributedDataParallel = RecordingDDP
stage1.batch_loss = recording_batch_loss
stage1.cleanup_distributed = save_then_cleanup

if __name__ == "__main__":
    sys.exit(stage1.main(sys.argv[1:]))
