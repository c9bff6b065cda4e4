"""Reduced-precision inference for the dense networks: which dtype, and the autocast around it.

``auto`` means bf16 autocast on CPUs that execute bf16 natively (AVX512-BF16 or AMX: oneDNN then
runs the backbone about 1.5x faster than fp32, measured in ``frontend/README.md``) and fp32
everywhere else, where bf16 would be emulated and slower. Networks keep numerically sensitive
heads in fp32 themselves (LiteNet's policy head: bf16 logits reorder the top-k).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

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


def autocast_context(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for a resolved ``bf16``/``fp16``; a no-op for ``fp32``."""
    if precision not in AMP_DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=AMP_DTYPES[precision])
