"""The worker's side of :mod:`freecg_md.md.worker_processes`: build the potential, answer.

Kept apart from the parent's side so that :mod:`~freecg_md.md.worker_processes` does not
import :mod:`~freecg_md.md.potentials`, which imports it.
"""

from __future__ import annotations

import ctypes
import pickle
import sys
import traceback
from multiprocessing.connection import Connection

import numpy as np

from ..committee import Committee
from ..io import load_model
from .potentials import FreeCGPotential
from .worker_processes import _USER_ERRORS, WorkerSpec

__all__ = ["keep_freed_memory", "serve"]

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
    it. For processes this package owns (the MD worker processes, which call it at start);
    a user's own process keeps its settings. Returns whether the settings took (False off
    glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        # mallopt takes a C int: the largest trim threshold is 2**31 - 1 bytes.
        return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False


def _error_reply(error: BaseException) -> tuple:
    if isinstance(error, _USER_ERRORS):
        try:
            pickle.dumps(error)
            return ("error", error)
        except Exception:  # an exception holding something unpicklable
            pass
    return ("error", "".join(traceback.format_exception(error)).rstrip())


def serve(connection: Connection) -> None:
    """The worker's loop: build the potential from the spec, then answer requests."""
    keep_freed_memory()
    try:
        import torch

        spec = WorkerSpec(**connection.recv())
        torch.set_num_threads(spec.threads)
        members = [load_model(path) for path in spec.model_paths]
        for member in members:
            member.edge_chunk_size = spec.edge_chunk_size
            member.fused_kernels = spec.fused_kernels
        model = members[0] if len(members) == 1 else Committee(members)
        potential = FreeCGPotential(
            model, spec.numbers, None if spec.cell is None else np.array(spec.cell),
            None if spec.pbc is None else np.array(spec.pbc), dtype=spec.dtype,
            skin=spec.skin, replicas_per_pass=spec.replicas_per_pass, workers=1,
            compile=spec.compile, matmul_precision=spec.matmul_precision)
    except Exception as error:  # reported to the parent, which raises it
        connection.send(_error_reply(error))
        return
    connection.send(("ready",))
    while True:
        try:
            request = connection.recv()
        except (EOFError, OSError):
            return  # the parent has gone
        if request[0] != "evaluate":
            return
        _, first, positions = request
        try:
            energies, forces = potential.evaluate_block(positions, first)
            spread = potential.force_disagreement
            reply = ("result", energies.numpy(), forces.numpy(), potential.neighbor_stats,
                     None if spread is None else spread.numpy())
        except Exception as error:
            reply = _error_reply(error)
        connection.send(reply)
