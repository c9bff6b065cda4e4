"""Extraction engine: frames from any iterable source -> batched extraction -> features, in order.

Modes
    ``naive``: one thread, synchronous: stack, copy, extract, repeat. The reference for timings.
    ``pipelined``: a producer thread reads and stacks batches (decoding overlaps compute); on
    CUDA each batch goes through a pinned-buffer ring and a copy stream while the previous batch
    computes on a compute stream, and its features come back through pinned result buffers with
    an event per batch (see :mod:`frontend.streams`).

Lookahead (pipelined mode): with ``lookahead = 1`` (the default on CUDA) a compute thread
launches the extraction of batch ``k + 1`` *before* batch ``k`` is handed to the caller (the
tracker), so the device works on ``k + 1`` while the host tracks ``k``; batches are still
delivered strictly in source order. A batch is launched early only if it is already read, so
batch size 1 adds no latency (live use), and batch ``N`` gives throughput (offline use). On the
CPU the default is ``lookahead = 0`` (extraction in the caller's thread: 2 cores have no idle
device to overlap with).

Warm-up: :meth:`ExtractionEngine.warm_up` runs one extraction at the real input size (and batch
size, precision, autocast) before the first live frame, so that a compiled network specialises
(``torch.compile(dynamic=False)`` compiles per input shape) and cuDNN autotunes there, not on the
first live frame.

The engine works with every :class:`models.Extractor`; OpenCV baselines get their ``uint8``
images directly (no float round trip). Features always come back on the CPU.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal

import torch

from models.base import Extractor
from models.conventions import Features
from models.opencv_features import OpenCVExtractor
from models.precision import AMP_DTYPES, autocast_context

from .backends import Backend, BackendNet, accelerate
from .batching import Batch, iter_batches
from .frame import Frame
from .streams import DeviceStreams, Download, PinnedRing, Upload, cuda_ok, features_to_cpu

__all__ = ["ExtractionEngine", "features_to_cpu", "usable_cores"]

log = logging.getLogger(__name__)

Mode = Literal["naive", "pipelined"]
Precision = Literal["fp32", "fp16", "bf16"]  # the extractor's own precision ("auto") applies inside


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass
class _Staged:
    """A batch read by the producer: its frames, pinned slot (or ``None``) and host tensor."""

    frames: list[Frame]
    slot: int | None
    images: torch.Tensor


@dataclass
class _InFlight:
    """A batch taken by the consumer: uploading, then computing (``result``: its download)."""

    staged: _Staged
    upload: Upload
    t_ready: float
    result: Future | None = None


class _Inline:
    """The executor of ``lookahead = 0``: runs the call at once in the caller's thread."""

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args))
        except BaseException as err:  # noqa: BLE001 - re-raised by future.result() in order
            future.set_exception(err)
        return future

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class _Failure:
    """Carries an exception from the producer thread to the consumer."""

    def __init__(self, err: BaseException) -> None:
        self.err = err


_END = object()


class ExtractionEngine:
    """Run an extractor over a stream of images.

    Args:
        extractor: any :class:`models.Extractor`.
        batch_size: images per forward pass; 1 for live (latency), 4-16 for offline (throughput).
        mode: ``"pipelined"`` (default) or ``"naive"``, see the module docstring.
        precision: ``"fp32"``, or ``"fp16"`` / ``"bf16"`` autocast around the network.
        num_keypoints: top-k per image; ``None`` uses the extractor's default.
        num_threads: torch intra-op threads on CPU; ``"auto"`` = usable cores, ``None`` = leave as is.
        prefetch: batches the producer may read ahead of the compute.
        backend: network backend for TraqPoint extractors, see :mod:`frontend.backends`.
        lookahead: batches launched before the previous one is delivered (pipelined mode);
            ``None`` = 1 on CUDA, 0 on the CPU (module docstring).

    Example:
        >>> engine = ExtractionEngine(models.build("sift"), batch_size=4)
        >>> for frame in engine.run(images):  # numpy/tensor images or Frame records
        ...     frame.keypoints.shape  # [N, 2]
    """

    def __init__(
        self,
        extractor: Extractor,
        batch_size: int = 1,
        mode: Mode = "pipelined",
        precision: Precision = "fp32",
        num_keypoints: int | None = None,
        num_threads: int | Literal["auto"] | None = "auto",
        prefetch: int = 2,
        backend: Backend = "eager",
        lookahead: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if mode not in ("naive", "pipelined"):
            raise ValueError(f"unknown mode {mode!r}; choose 'naive' or 'pipelined'")
        if precision not in ("fp32", *AMP_DTYPES):
            raise ValueError(f"unknown precision {precision!r}; choose fp32, fp16 or bf16")
        if lookahead is not None and lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {lookahead}")
        self.device = torch.device(getattr(extractor, "device", "cpu"))
        self.batch_size = batch_size
        self.mode = mode
        self.precision = precision
        self.num_keypoints = num_keypoints
        self.prefetch = max(1, prefetch)
        self.lookahead = (1 if cuda_ok(self.device) else 0) if lookahead is None else int(lookahead)
        self.opencv = isinstance(extractor, OpenCVExtractor)
        # (batch size, seconds from batch ready to features) of the latest batches
        self.batch_times: deque[tuple[int, float]] = deque(maxlen=100_000)
        if self.device.type == "cpu" and num_threads is not None:
            n = usable_cores() if num_threads == "auto" else int(num_threads)
            if torch.get_num_threads() != n:
                torch.set_num_threads(n)
                log.info("torch intra-op threads set to %d", n)
        self.extractor = accelerate(extractor, backend)  # after the threads: the ONNX Runtime backend copies the count

    # -- compute -----------------------------------------------------------------------------
    def _autocast(self) -> AbstractContextManager:
        return nullcontext() if self.opencv else autocast_context(self.device, self.precision)

    def extract(self, images: torch.Tensor) -> list[Features]:
        """Features (on the CPU) of staged images ``[B, 1, H, W]`` (``uint8`` or float in ``[0, 1]``)."""
        return [features_to_cpu(f) for f in self._extract_on_device(images)]

    def _extract_on_device(self, images: torch.Tensor) -> list[Features]:
        """Features where the extractor leaves them (the device; the CPU for OpenCV methods)."""
        k = self.extractor.num_keypoints if self.num_keypoints is None else self.num_keypoints
        if self.opencv and images.dtype == torch.uint8 and images.device.type == "cpu":
            grey = images[:, 0].numpy()
            return [self.extractor.extract_grey(g, k) for g in grey]  # type: ignore[attr-defined]
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        with torch.inference_mode(), self._autocast():
            return self.extractor.extract(x, k)

    @property
    def specialises_on_shape(self) -> bool:
        """The first call at a new input size does extra work: a compiled/traced network, or CUDA."""
        if self.opencv:
            return False
        net = getattr(self.extractor, "net", None)
        compiled = isinstance(net, BackendNet) and net.backend in ("compile", "torchscript")
        return compiled or self.device.type == "cuda"

    def warm_up(
        self, image_hw: tuple[int, int], batch_size: int | None = None, force: bool = False
    ) -> list[Features] | None:
        """Run one extraction of a ``batch_size`` batch (default: the engine's) of noise at ``image_hw``.

        Done before the first live frame, a compiled network compiles for the real size (under
        this engine's precision and autocast) and CUDA allocates and autotunes here. Returns the
        features (on the CPU, made as live ones are: e.g. for :meth:`Tracker.warm_up`), or ``None``
        where nothing specialises on the input shape (eager CPU, OpenCV), unless ``force``.
        """
        if not (force or self.specialises_on_shape):
            return None
        b = self.batch_size if batch_size is None else batch_size
        g = torch.Generator().manual_seed(0)
        noise = torch.randint(0, 256, (b, 1, *image_hw), generator=g, dtype=torch.uint8)
        t0 = time.perf_counter()
        feats = self.extract(noise.to(self.device))
        log.info("warm-up at %dx%d, batch %d: %.1f s", image_hw[1], image_hw[0], b, time.perf_counter() - t0)
        return feats

    # -- public API --------------------------------------------------------------------------
    def run(self, source: Iterable) -> Iterator[Frame]:
        """Yield one :class:`Frame` with features per source item, in source order."""
        runner = self._run_naive if self.mode == "naive" else self._run_pipelined
        yield from runner(source)

    __call__ = run

    def _finish(self, frames: list[Frame], feats: list[Features], t_ready: float) -> list[Frame]:
        self.batch_times.append((len(frames), time.perf_counter() - t_ready))
        return [f.with_features(x) for f, x in zip(frames, feats, strict=True)]

    def _run_naive(self, source: Iterable) -> Iterator[Frame]:
        for batch in iter_batches(source, self.batch_size):
            t0 = time.perf_counter()
            feats = self.extract(batch.images.to(self.device))
            yield from self._finish(batch.frames, feats, t0)

    # -- pipelined ---------------------------------------------------------------------------
    def _run_pipelined(self, source: Iterable) -> Iterator[Frame]:
        pin = cuda_ok(self.device)
        in_flight = self.lookahead + 1
        streams = DeviceStreams(self.device, result_slots=in_flight)
        # prefetch batches queued + the ones in flight + one being staged may hold a slot at once.
        ring = PinnedRing(self.prefetch + in_flight + 1, pin=pin)
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(source, ring, ready, stop, pin), name="frontend-producer", daemon=True
        )
        pool = _Inline() if self.lookahead == 0 else ThreadPoolExecutor(1, thread_name_prefix="frontend-compute")
        producer.start()
        try:
            yield from self._consume(ready, ring, streams, pool)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)  # no launched batch may outlive its buffers
            while producer.is_alive():  # unblock a producer waiting on a full queue
                try:
                    ready.get_nowait()
                except queue.Empty:
                    pass
                producer.join(timeout=0.05)

    def _produce(self, source: Iterable, ring: PinnedRing, ready: queue.Queue, stop: threading.Event, pin: bool):
        """Producer thread: read, stage and (on CUDA) pin batches; then a final ``_END``."""

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    ready.put(item, timeout=0.05)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            for batch in iter_batches(source, self.batch_size):
                staged = self._stage(batch, ring, stop, pin)
                if staged is None or not put(staged):
                    return
            put(_END)
        except BaseException as err:  # noqa: BLE001 - re-raised in the consumer thread
            put(_Failure(err))

    @staticmethod
    def _stage(batch: Batch, ring: PinnedRing, stop: threading.Event, pin: bool) -> _Staged | None:
        if not pin or batch.images.device.type != "cpu":
            return _Staged(batch.frames, None, batch.images)
        while not stop.is_set():
            try:
                slot, buf = ring.acquire(batch.images, timeout=0.05)
                return _Staged(batch.frames, slot, buf)
            except queue.Empty:
                continue
        return None

    def _launch(self, item: _InFlight, streams: DeviceStreams) -> Download:
        """Compute one uploaded batch on the compute stream and start its download (compute thread)."""
        with streams.computing(item.upload):
            return streams.download(self._extract_on_device(item.upload.tensor))

    def _consume(self, ready: queue.Queue, ring: PinnedRing, streams: DeviceStreams, pool) -> Iterator[Frame]:
        """Take, launch up to ``lookahead + 1`` batches, deliver the oldest; repeat (in source order)."""
        done, failure = False, None

        def take(block: bool) -> _InFlight | None:
            """The next batch, uploading; ``None`` at the end or when none is ready and not ``block``."""
            nonlocal done, failure
            if done:
                return None
            try:
                item = ready.get(block=block)
            except queue.Empty:
                return None
            if item is _END or isinstance(item, _Failure):
                done, failure = True, getattr(item, "err", None)
                return None
            return _InFlight(item, streams.upload(item.images), time.perf_counter())

        flight: deque[_InFlight] = deque()
        while True:
            # Launch what is already read (block only when nothing is in flight), at most lookahead + 1.
            while len(flight) <= self.lookahead:
                item = take(block=not flight)
                if item is None:
                    break
                item.result = pool.submit(self._launch, item, streams)
                flight.append(item)
            if not flight:
                break
            oldest = flight.popleft()
            feats = streams.finish(oldest.result.result())  # the compute thread's error surfaces here, in order
            if oldest.staged.slot is not None:
                streams.wait_upload(oldest.upload)
                ring.release(oldest.staged.slot)
            yield from self._finish(oldest.staged.frames, feats, oldest.t_ready)
        if failure is not None:  # raised after every frame read before it was yielded
            raise failure
