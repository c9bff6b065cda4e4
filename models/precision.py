"""Reduced-precision inference for the dense networks: which dtype, and the autocast around it.

``auto`` means bf16 autocast on CPUs that execute bf16 natively (AVX512-BF16 or AMX: oneDNN then
runs the backbone about 1.5x faster than fp32, measured in ``frontend/README.md``) and fp32
everywhere else, where bf16 would be emulated and slower. Networks keep numerically sensitive
heads in fp32 themselves (LiteNet's policy head: bf16 logits reorder the top-k).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
from typing import Literal

import torch

from .errors import BadInputError

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def native_bf16_cpu() -> bool:
    """This CPU runs bf16 matrix maths in hardware (AVX512-BF16 or AMX tiles)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``auto`` -> ``bf16`` on a CPU with native bf16, else ``fp32``; other names pass through."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cpu" and native_bf16_cpu() else "fp32"


def check_precision(precision: str, device: torch.device | str) -> str:
    """Resolve ``precision`` for ``device`` and refuse what that device cannot run; return the resolved name.

    ``auto`` follows :func:`resolve_precision`. ``bf16`` on a CPU without native bf16 runs
    (oneDNN emulates it) with a one-line warning that it is slow; ``fp16`` on the CPU, ``bf16`` on
    a GPU without bf16 and unknown names are one :class:`BadInputError`.
    """
    if precision not in PRECISIONS:
        raise BadInputError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    dev = torch.device(device)
    resolved = resolve_precision(precision, dev)
    if dev.type == "cpu" and resolved == "fp16":
        raise BadInputError("--precision fp16 is a GPU precision (CPU kernels emulate it); on the CPU use fp32 or bf16")
    if dev.type == "cpu" and resolved == "bf16" and not native_bf16_cpu():
        log.warning("bf16 is emulated on this CPU (no AVX512-BF16/AMX): it runs, several times slower than fp32")
    if dev.type == "cuda" and resolved == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise BadInputError(f"--precision bf16: {torch.cuda.get_device_name(dev)} has no bf16; use fp16 or fp32")
    return resolved


def extractor_precision(extractor: object) -> str:
    """What an extractor runs: its resolved ``precision``, ``fp32`` for a network without one, ``n/a`` for OpenCV."""
    precision = getattr(extractor, "precision", None)
    if isinstance(precision, str):
        return precision
    return "fp32" if getattr(extractor, "net", None) is not None else "n/a"


def add_precision_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The ``--precision`` option shared by every command that runs a network."""
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="network precision: auto = bf16 on a CPU with native bf16 (AVX512-BF16/AMX), else fp32; "
        "fp16 is for GPUs; methods without a network (ORB, SIFT) ignore it",
    )


def autocast_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for a resolved ``bf16``/``fp16``; a no-op for ``fp32``."""
    if precision not in AMP_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[precision])
