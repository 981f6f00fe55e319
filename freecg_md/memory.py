"""glibc's malloc settings for a process that evaluates the model many times.

One function, :func:`keep_freed_memory`: a process-wide setting, so the package applies it
only in processes it owns (the MD engines' worker processes).
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """Make glibc's malloc in this process serve large allocations from its heap and keep
    freed memory there (``mallopt``: no mmap, the largest trim threshold), as
    ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`` would at start-up.

    A pass frees and allocates the same tensors on every call. Above malloc's mmap
    threshold each is mapped afresh and page-faulted in again, a visible share of a
    one-thread chignolin pass (benchmarks/README.md, replicas); from the heap the next pass
    reuses pages already mapped. The process keeps its peak memory instead of returning
    it. The MD worker processes call it at start; in a user's own process (an ASE
    calculator's MD, say) it is the user's choice, since the settings hold for the whole
    process: call it once before the run (``benchmarks/bench_malloc.py`` measures the
    gain). Returns whether the settings took (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt takes a C int: the largest trim threshold is 2**31 - 1 bytes.
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
