"""What machine a number was measured on: CPU model, vector extensions, threads, GPU, torch.

One helper for every speed figure the repository prints or writes: the result schema's
``machine`` block (:func:`machine_info`) and the line printed under each speed table
(:func:`machine_line`). The CPU's vector extensions decide which precision is fast (bf16 is
native only with AVX512-BF16 or AMX; without them oneDNN emulates it and is several times slower
than fp32), so they are stated beside the precision every method ran.

Sources: ``/proc/cpuinfo`` (model name and flags, Linux) and
``torch.backends.cpu.get_cpu_capability()`` (the widest SIMD level torch's kernels dispatch to).
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path

import torch

# /proc/cpuinfo flag -> the name shown in tables, in order of width
VECTOR_FLAGS = {
    "avx2": "avx2",
    "avx512f": "avx512",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "amx_tile": "amx",
    "amx_bf16": "amx_bf16",
    "amx_fp16": "amx_fp16",
}
CPUINFO = Path("/proc/cpuinfo")


@lru_cache(maxsize=4)
def _cpuinfo(path: Path = CPUINFO) -> tuple[str | None, frozenset[str]]:
    """(model name, flags) of the first processor listed in ``path``; ``(None, {})`` if unreadable."""
    try:
        text = path.read_text()
    except OSError:
        return None, frozenset()
    name, flags = None, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and name is None:
            name = value.strip()
        elif key in ("flags", "Features") and not flags:  # x86 / ARM spelling
            flags = frozenset(value.split())
        if name is not None and flags:
            break
    return name, flags


def cpu_name(path: Path = CPUINFO) -> str:
    """The CPU model name (``/proc/cpuinfo``; else :func:`platform.processor` / the architecture)."""
    return _cpuinfo(path)[0] or platform.processor() or platform.machine()


def vector_extensions(path: Path = CPUINFO) -> list[str]:
    """The CPU's SIMD/matrix extensions relevant to inference, e.g. ``["avx2", "avx512", "avx512_bf16"]``.

    From ``/proc/cpuinfo`` flags; without that file, from torch's own CPU probes.
    """
    _, flags = _cpuinfo(path)
    if flags:
        return [name for flag, name in VECTOR_FLAGS.items() if flag in flags]
    probes = {"avx2": "_is_avx2_supported", "avx512": "_is_avx512_supported",
              "avx512_bf16": "_is_avx512_bf16_supported", "amx": "_is_amx_tile_supported"}  # fmt: skip
    return [name for name, fn in probes.items() if getattr(torch.cpu, fn, lambda: False)()]


def torch_cpu_capability() -> str:
    """The SIMD level torch's CPU kernels dispatch to (``DEFAULT``, ``AVX2``, ``AVX512``, ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # pragma: no cover - very old torch
        return "unknown"


def gpu_name() -> str | None:
    """Name of CUDA device 0, or ``None`` without CUDA."""
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


#: environment variables that cap the instruction sets torch, oneDNN and OpenCV dispatch to (read when
#: the libraries load): ``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 OPENCV_CPU_DISABLE=AVX512-SKX``
#: runs an AVX-512 machine as an AVX2-only one, the class of most laptops (``benchmarks/README.md``)
ISA_CAP_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "OPENCV_CPU_DISABLE")


def isa_caps() -> dict[str, str]:
    """The instruction-set caps set in the environment (:data:`ISA_CAP_VARIABLES`), by variable."""
    return {k: os.environ[k] for k in ISA_CAP_VARIABLES if os.environ.get(k)}


def machine_info() -> dict:
    """The ``machine`` block of the result schema (DESIGN.md section 6).

    Returns:
        ``{"cpu", "vector_extensions" [list], "cpu_capability", "threads", "gpu", "torch", "isa_caps"}``;
        ``threads`` is torch's intra-op thread count at the time of the call; ``isa_caps`` the
        instruction-set caps of the environment (:func:`isa_caps`, ``{}`` when none).
    """
    return {
        "cpu": cpu_name(),
        "vector_extensions": vector_extensions(),
        "cpu_capability": torch_cpu_capability(),
        "threads": torch.get_num_threads(),
        "gpu": gpu_name(),
        "torch": torch.__version__,
        "isa_caps": isa_caps(),
    }


def machine_line(machine: dict | None = None, precision: str | dict[str, str] | None = None) -> str:
    """One line to print under a speed table: CPU, extensions, threads, GPU and precision.

    Args:
        machine: a :func:`machine_info` block (``None``: this machine now).
        precision: the precision that ran, or ``{method: precision}`` when methods differ.

    Example:
        ``machine: AMD EPYC | avx2 avx512 avx512_bf16 (torch AVX512) | 2 threads | gpu none |
        precision traqpoint-lite=bf16 orb=n/a``
    """
    m = machine or machine_info()
    ext = " ".join(m.get("vector_extensions") or []) or "no avx2"
    parts = [
        f"machine: {m.get('cpu')}",
        f"{ext} (torch {m.get('cpu_capability', 'unknown')})",
        f"{m.get('threads')} threads",
        f"gpu {m.get('gpu') or 'none'}",
    ]
    if m.get("isa_caps"):  # the vector units the CPU has are not all in use
        parts.append("ISA capped: " + " ".join(f"{k}={v}" for k, v in m["isa_caps"].items()))
    if isinstance(precision, dict):
        parts.append("precision " + " ".join(f"{k}={v}" for k, v in precision.items()))
    elif precision:
        parts.append(f"precision {precision}")
    return " | ".join(parts)
