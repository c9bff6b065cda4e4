"""Turning source items into :class:`Frame` records and same-size batches (CPU side of the engine).

A source item is a numpy image, an image tensor or a :class:`Frame`. Each becomes a *staged*
grey tensor ``[1, H, W]``: ``uint8`` when the source gave ``uint8`` (4x less to upload than
float; the engine converts on the device), float32 in ``[0, 1]`` otherwise. Batches hold images
of one size and dtype; a change of either, or the end of the source, flushes the batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from models.errors import BadInputError
from models.image_io import rgb_to_grey, to_grey

from .frame import Frame


def stage_image(image: np.ndarray | torch.Tensor) -> torch.Tensor:
    """One image -> grey ``[1, H, W]`` tensor (``uint8`` or float32), on the image's device."""
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(to_grey(image)))[None]
    if not isinstance(image, torch.Tensor):
        raise BadInputError(f"a source item must be a numpy image, a tensor or a Frame, got {type(image).__name__}")
    t = image[None] if image.dim() == 2 else image
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        raise BadInputError(f"an image tensor must be [H, W] or [1|3, H, W], got {tuple(image.shape)}")
    if t.dtype != torch.uint8:
        t = t.float()
    if t.shape[0] == 3:
        grey = rgb_to_grey(t)
        t = grey.round().clamp(0, 255).to(torch.uint8) if t.dtype == torch.uint8 else grey
    return t


def as_frame(item: Frame | np.ndarray | torch.Tensor, index: int) -> Frame:
    """Wrap a bare image as a :class:`Frame` numbered ``index``; a Frame passes through."""
    return item if isinstance(item, Frame) else Frame(index=index, image=item)


@dataclass
class Batch:
    """Frames of one size and their staged images stacked as ``images [B, 1, H, W]``."""

    frames: list[Frame]
    images: torch.Tensor


def _stack(staged: list[torch.Tensor]) -> torch.Tensor:
    """``[B, 1, H, W]``; a single image is a view, not a copy (see :func:`iter_batches`)."""
    return staged[0][None] if len(staged) == 1 else torch.stack(staged)


def _key(t: torch.Tensor) -> tuple:
    return tuple(t.shape), t.dtype, t.device


def iter_batches(source: Iterable, batch_size: int) -> Iterator[Batch]:
    """Group ``source`` into batches of at most ``batch_size`` same-size images, in order."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    frames: list[Frame] = []
    staged: list[torch.Tensor] = []
    try:
        for i, item in enumerate(source):
            frame = as_frame(item, i)
            t = stage_image(frame.image)
            if staged and _key(t) != _key(staged[0]):
                yield Batch(frames, _stack(staged))
                frames, staged = [], []
            frames.append(frame)
            staged.append(t)
            if len(frames) == batch_size:
                yield Batch(frames, _stack(staged))
                frames, staged = [], []
    except Exception:
        if frames:  # a failing source still delivers the frames it gave before failing
            yield Batch(frames, _stack(staged))
        raise
    if frames:  # a source that ends mid-batch flushes what it has
        yield Batch(frames, _stack(staged))
