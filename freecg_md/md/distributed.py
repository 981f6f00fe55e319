"""Replicas spread over processes with torch.distributed (gloo on CPUs, nccl on GPUs).

Launch one process per device with torchrun (``env://`` initialisation)::

    torchrun --nproc-per-node 4 my_remd.py

and in the script::

    comm = init_distributed()                      # gloo, or nccl when CUDA is available
    potential = FreeCGPotential(model, numbers, device=local_device(comm))
    result = run_replicas(potential, state, config, comm=comm)

Every process builds the same full :class:`ReplicaState` and config; the run gives each
rank a contiguous block of replicas (:func:`replica_block`) which it propagates and
evaluates as one batch. Because each replica's noise comes from its own generator seeded by
its global index, and the exchange generator is seeded identically everywhere, the result
equals a single-process run with the same seed (up to floating-point differences the
force field may show between batch sizes; bit for bit for batch-independent potentials).

Communication, and why it is shaped this way:

* Exchanges: the (R,) energies are all-gathered and every rank runs the same Metropolis
  decisions from its own copy of the exchange generator; no broadcast is needed and the
  ranks cannot disagree, since they see the same bytes.
* Writing: rank 0 is the only writer. At report and checkpoint steps it gathers positions
  (and, at checkpoints, velocities, forces and generator states) of all replicas and writes
  the run directory exactly as a single process would. One writer means one frame count,
  one checkpoint file, and a run that can resume on a different number of processes.
* Guards: a flag is all-reduced every step so that when one rank meets a NaN or an
  explosion, all ranks stop at the same step (instead of waiting forever in a collective);
  the rank that saw it raises the detailed error. This costs one small collective per step.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["SerialComm", "TorchDistributedComm", "init_distributed", "local_device",
           "replica_block"]


def replica_block(n_replicas: int, world_size: int, rank: int) -> slice:
    """The contiguous replicas of ``rank``: the first ``n_replicas % world_size`` ranks take
    one replica more than the others."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: expected 0 <= rank < size")
    if n_replicas < world_size:
        raise ValueError(
            f"n_replicas={n_replicas} is less than world_size={world_size}; expected at "
            "least one replica per process"
        )
    base, extra = divmod(n_replicas, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (rank < extra))


class SerialComm:
    """The single-process stand-in for :class:`TorchDistributedComm`."""

    rank = 0
    world_size = 1

    @property
    def is_writer(self) -> bool:
        return True

    def block(self, n_replicas: int) -> slice:
        return slice(0, n_replicas)

    def all_gather(self, local: np.ndarray) -> np.ndarray:
        """Concatenate every rank's (r, ...) array along axis 0, rank order."""
        return np.asarray(local)

    def all_gather_objects(self, obj: Any) -> list[Any]:
        return [obj]

    def any_failed(self, failed: bool) -> bool:
        return failed

    def barrier(self) -> None:
        return None


class TorchDistributedComm(SerialComm):
    """Collectives over an initialised torch.distributed process group."""

    def __init__(self, group: Any = None) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised; call init_distributed()")
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.backend = dist.get_backend(group)
        # nccl collectives need CUDA tensors; gloo takes CPU tensors.
        self.device = (torch.device("cuda", torch.cuda.current_device())
                       if self.backend == "nccl" else torch.device("cpu"))

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def block(self, n_replicas: int) -> slice:
        return replica_block(n_replicas, self.world_size, self.rank)

    def all_gather(self, local: np.ndarray) -> np.ndarray:
        # Objects rather than tensors: blocks may differ in size by one, and these gathers
        # happen only at report, exchange and checkpoint steps.
        return np.concatenate(self.all_gather_objects(np.asarray(local)), axis=0)

    def all_gather_objects(self, obj: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj, group=self.group)
        return gathered

    def any_failed(self, failed: bool) -> bool:
        flag = torch.tensor([int(failed)], dtype=torch.int32, device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())

    def barrier(self) -> None:
        dist.barrier(group=self.group)


def init_distributed(backend: str | None = None) -> TorchDistributedComm:
    """Join the process group torchrun set up (``env://``) and return its communicator.

    ``backend`` defaults to ``"nccl"`` when CUDA is available and ``"gloo"`` otherwise; with
    nccl each process binds to GPU ``LOCAL_RANK``. An already initialised group is reused.
    """
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed")
    if not dist.is_initialized():
        missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
                   if k not in os.environ]
        if missing:
            raise RuntimeError(f"environment variables {missing} are not set; launch with "
                               "torchrun (or set them for env:// initialisation)")
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"backend={backend!r}: expected 'gloo' or 'nccl'")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, init_method="env://")
    return TorchDistributedComm()


def local_device(comm: SerialComm) -> str:
    """``"cuda:<index>"`` for an nccl communicator, else ``"cpu"``: where this rank's model
    should run."""
    device = getattr(comm, "device", torch.device("cpu"))
    return str(device)
