"""Host/device transfer machinery of the pipelined engine: pinned buffers, copy/compute streams, events.

Upload (host -> device): on CUDA, a batch is written into one slot of a ring of *pinned* host
buffers, copied to the device with ``non_blocking=True`` on a dedicated copy stream, and consumed
on a compute stream that waits on the copy's event; so the upload of batch ``k + 1`` overlaps the
compute of batch ``k``.

Download (device -> host): the features of a batch (``keypoints [N, 2]``, ``scores [N]``,
``descriptors [N, D]`` per image) are packed on the compute stream into one float32 block
``[sum N, 3 + D]``, copied with ``non_blocking=True`` into a pinned slot of a
:class:`ResultRing`, and an event is recorded after the copy. :meth:`DeviceStreams.finish`
waits on that event only when the features are needed, then splits (and copies out of) the slot,
so the slot can be reused by a later batch while the returned tensors stay valid.

Without CUDA every piece degrades to a plain synchronous no-op, so the same engine code runs
(and is tested) on a CPU-only machine.
"""

from __future__ import annotations

import queue
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from models.conventions import Features


def cuda_ok(device: torch.device) -> bool:
    """True when ``device`` is a CUDA device and CUDA is usable in this process."""
    return device.type == "cuda" and torch.cuda.is_available()


class _SlotRing:
    """``num_slots`` host buffers (page-locked when ``pin``), handed out one free slot at a time."""

    def __init__(self, num_slots: int, pin: bool) -> None:
        self.pin = pin
        self.buffers: list[torch.Tensor | None] = [None] * num_slots
        self.free: queue.Queue[int] = queue.Queue()
        for i in range(num_slots):
            self.free.put(i)

    def release(self, slot: int) -> None:
        """Give ``slot`` back once its buffer is no longer read."""
        self.free.put(slot)


class PinnedRing(_SlotRing):
    """``num_slots`` reusable host buffers, page-locked when CUDA is usable.

    :meth:`acquire` blocks until a slot is free; the consumer :meth:`release` s it once the
    upload that read it has completed. A slot is re-allocated when the batch shape changes.
    """

    def acquire(self, like: torch.Tensor, timeout: float | None = None) -> tuple[int, torch.Tensor]:
        """A free slot holding a copy of the CPU tensor ``like``; raises ``queue.Empty`` on timeout."""
        slot = self.free.get(timeout=timeout)
        buf = self.buffers[slot]
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            buf = torch.empty(like.shape, dtype=like.dtype, pin_memory=self.pin)
            self.buffers[slot] = buf
        buf.copy_(like)
        return slot, buf


@dataclass
class Upload:
    """A batch on its way to the device: the device tensor and the event that marks its arrival."""

    tensor: torch.Tensor
    event: torch.cuda.Event | None = None


def features_to_cpu(feats: Features) -> Features:
    """Move one feature dict to the CPU (keypoints/scores/descriptors as float32), synchronously."""
    return Features(**{k: v.detach().to("cpu", torch.float32) for k, v in feats.items()})  # type: ignore[typeddict-item]


def pack_features(feats: list[Features]) -> tuple[torch.Tensor, list[int], int]:
    """One float32 block ``[sum N, 3 + D]`` (x, y, score, descriptor) of a batch, the counts ``N`` and ``D``."""
    counts = [int(f["keypoints"].shape[0]) for f in feats]
    dim = int(feats[0]["descriptors"].shape[-1]) if feats else 0
    rows = [
        torch.cat([f["keypoints"].float(), f["scores"].float()[:, None], f["descriptors"].float()], 1) for f in feats
    ]
    return (torch.cat(rows) if rows else torch.zeros(0, 3 + dim)), counts, dim


def unpack_features(block: torch.Tensor, counts: list[int], dim: int) -> list[Features]:
    """Inverse of :func:`pack_features` (views of ``block``)."""
    out = []
    for part in block.view(-1, 3 + dim).split(counts):
        out.append(Features(keypoints=part[:, :2], scores=part[:, 2], descriptors=part[:, 3:]))
    return out


class ResultRing(_SlotRing):
    """``num_slots`` growable float32 host buffers (pinned when CUDA is usable) that downloads land in.

    :meth:`acquire` blocks until a slot is free; the consumer :meth:`release` s it after it has
    copied the features out. A slot grows (re-allocated) when a batch needs more room.
    """

    def acquire(self, numel: int) -> tuple[int, torch.Tensor]:
        """A free slot and a float32 view of ``numel`` elements of its buffer."""
        slot = self.free.get()
        buf = self.buffers[slot]
        if buf is None or buf.numel() < numel:
            buf = torch.empty(max(numel, 1), dtype=torch.float32, pin_memory=self.pin)
            self.buffers[slot] = buf
        return slot, buf[:numel]


@dataclass
class Download:
    """A batch's features on their way to the host.

    ``features`` is set when they are already there (CPU); otherwise ``host`` (a pinned slot of
    the :class:`ResultRing` numbered ``slot``) receives the packed block and ``event`` marks the
    end of the copy. ``keep`` holds the device block until then.
    """

    features: list[Features] | None = None
    host: torch.Tensor | None = None
    slot: int | None = None
    counts: list[int] = field(default_factory=list)
    dim: int = 0
    event: torch.cuda.Event | None = None
    keep: torch.Tensor | None = None


class DeviceStreams:
    """A copy stream and a compute stream on CUDA; synchronous no-ops on any other device.

    Args:
        device: where the extractor runs.
        result_slots: pinned result buffers, at least the number of batches in flight at once.
    """

    def __init__(self, device: torch.device, result_slots: int = 2) -> None:
        self.device = device
        self.cuda = cuda_ok(device)
        self.copy = torch.cuda.Stream(device) if self.cuda else None
        self.compute = torch.cuda.Stream(device) if self.cuda else None
        self.results = ResultRing(result_slots, pin=self.cuda)

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

    def download(self, feats: list[Features]) -> Download:
        """Start copying device features to the host; call inside :meth:`computing` (the compute stream).

        Features already on the CPU (OpenCV extractors, the CPU device) are converted at once.
        """
        if not self.cuda or not feats or feats[0]["keypoints"].device.type != "cuda":
            return Download(features=[features_to_cpu(f) for f in feats])
        block, counts, dim = pack_features(feats)
        slot, host = self.results.acquire(block.numel())
        stream = torch.cuda.current_stream(self.device)
        host.copy_(block.reshape(-1), non_blocking=True)
        event = torch.cuda.Event()
        event.record(stream)
        return Download(host=host, slot=slot, counts=counts, dim=dim, event=event, keep=block)

    def finish(self, down: Download) -> list[Features]:
        """The features of ``down`` on the CPU: waits for its copy event, then frees the pinned slot."""
        if down.features is not None:
            return down.features
        down.event.synchronize()
        block = down.host.clone()  # out of the pinned slot, which the next batches reuse
        self.results.release(down.slot)
        down.keep = None
        return unpack_features(block, down.counts, down.dim)
