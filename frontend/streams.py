"""Host-to-device upload machinery of the pipelined engine: pinned buffers, copy/compute streams.

On CUDA, a batch is written into one slot of a ring of *pinned* host buffers, copied to the
device with ``non_blocking=True`` on a dedicated copy stream, and consumed on a compute stream
that waits on the copy's event; so the upload of batch ``k + 1`` overlaps the compute of batch
``k``. Without CUDA every piece degrades to a plain synchronous no-op, so the same engine code
runs (and is tested) on a CPU-only machine.
"""

from __future__ import annotations

import queue
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch


def cuda_ok(device: torch.device) -> bool:
    """True when ``device`` is a CUDA device and CUDA is usable in this process."""
    return device.type == "cuda" and torch.cuda.is_available()


class PinnedRing:
    """``num_slots`` reusable host buffers, page-locked when CUDA is usable.

    :meth:`acquire` blocks until a slot is free; the consumer :meth:`release` s it once the
    upload that read it has completed. A slot is re-allocated when the batch shape changes.
    """

    def __init__(self, num_slots: int, pin: bool) -> None:
        self.pin = pin
        self.buffers: list[torch.Tensor | None] = [None] * num_slots
        self.free: queue.Queue[int] = queue.Queue()
        for i in range(num_slots):
            self.free.put(i)

    def acquire(self, like: torch.Tensor, timeout: float | None = None) -> tuple[int, torch.Tensor]:
        """A free slot holding a copy of the CPU tensor ``like``; raises ``queue.Empty`` on timeout."""
        slot = self.free.get(timeout=timeout)
        buf = self.buffers[slot]
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = torch.empty(like.shape, dtype=like.dtype, pin_memory=self.pin)
            self.buffers[slot] = buf
        buf.copy_(like)
        return slot, buf

    def release(self, slot: int) -> None:
        self.free.put(slot)


@dataclass
class Upload:
    """A batch on its way to the device: the device tensor and the event that marks its arrival."""

    tensor: torch.Tensor
    event: torch.cuda.Event | None = None


class DeviceStreams:
    """A copy stream and a compute stream on CUDA; synchronous no-ops on any other device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cuda = cuda_ok(device)
        self.copy = torch.cuda.Stream(device) if self.cuda else None
        self.compute = torch.cuda.Stream(device) if self.cuda else None

    def upload(self, host: torch.Tensor) -> Upload:
        """Start copying ``host`` (pinned on CUDA) to the device on the copy stream."""
        if not self.cuda or host.device.type == "cuda":
            return Upload(host.to(self.device))
        with torch.cuda.stream(self.copy):
            dev = host.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self.copy)
        return Upload(dev, event)

    def computing(self, up: Upload) -> AbstractContextManager:
        """Context in which to compute on ``up.tensor``: the compute stream, after the copy landed."""
        if not self.cuda:
            return nullcontext()
        if up.event is not None:
            self.compute.wait_event(up.event)
        else:  # a tensor that was already on the device was made on the default stream
            self.compute.wait_stream(torch.cuda.default_stream(self.device))
        # The tensor was allocated on the copy stream: tell the caching allocator it is used here.
        up.tensor.record_stream(self.compute)
        return torch.cuda.stream(self.compute)

    def wait_upload(self, up: Upload) -> None:
        """Block the host until ``up``'s copy has completed (its pinned slot may then be reused)."""
        if up.event is not None:
            up.event.synchronize()
