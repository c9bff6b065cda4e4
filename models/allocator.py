"""Keep freed feature maps in the process heap instead of returning them to the OS (glibc).

A CPU forward allocates and frees the same few-MB activations every frame. glibc serves blocks
above its mmap threshold with fresh ``mmap`` pages and unmaps them on ``free``, so each frame
page-faults through every large activation again. Measured on lite2's policy path at 1248x384
(2 threads, AMD EPYC): four 8-channel layers at stride 2 took 4.5 ms in sequence against 1.4 ms
with the tuning below, with identical outputs. The fix is what jemalloc/tcmalloc do by default and
what PyTorch's CPU performance guide recommends: raise the mmap threshold to glibc's maximum
(32 MiB on 64-bit) and stop trimming the heap top, so the activations are reused.

The price is resident memory: the heap keeps its peak (tens of MB for the lite networks), it is
not given back between frames. ``TRAQPOINT_MALLOC_TUNING=0`` turns it off; other C libraries
than glibc are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit
TRIM_THRESHOLD = 1024 * 1024 * 1024
ENV = "TRAQPOINT_MALLOC_TUNING"

_state: dict[str, bool | None] = {"applied": None}


def keep_freed_memory() -> bool:
    """Apply the glibc tuning once per process; returns whether it is in effect.

    A no-op (``False``) off Linux/glibc, when ``TRAQPOINT_MALLOC_TUNING=0``, or when glibc
    refuses a value; never raises.
    """
    if _state["applied"] is not None:
        return bool(_state["applied"])
    ok = False
    if os.environ.get(ENV, "1") != "0" and sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
            ok = False
    _state["applied"] = ok
    log.debug("glibc malloc tuning (mmap threshold %d MiB, no heap trim): %s", MMAP_THRESHOLD >> 20, ok)
    return ok
