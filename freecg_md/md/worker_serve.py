"""The worker's side of :mod:`freecg_md.md.worker_processes`: build the potential, answer.

Kept apart from the parent's side so that :mod:`~freecg_md.md.worker_processes` does not
import :mod:`~freecg_md.md.potentials`, which imports it.
"""

from __future__ import annotations

import pickle
import traceback
from multiprocessing.connection import Connection

import numpy as np

from ..committee import Committee
from ..io import load_model
from ..memory import keep_freed_memory
from .potentials import FreeCGPotential
from .worker_processes import _USER_ERRORS, WorkerSpec

__all__ = ["serve"]

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
