"""Replicas evaluated side by side in worker processes (CPU).

:class:`~freecg_md.md.FreeCGPotential` hands contiguous blocks of replicas to
:class:`WorkerProcesses`, one block per process, each process evaluating its block with its
own copy of the model and its own neighbour-list caches. Processes and not threads: a
chignolin pass makes a few thousand torch calls, and each one re-takes the GIL between its
C++ parts, so two passes in threads of one process wait on each other
(``benchmarks/bench_replicas.py`` measures both).

A worker is started as a fresh ``python -c`` running :func:`~freecg_md.md.worker_serve.serve`
(a module of its own, so that this one does not import the potential that uses it) on one
end of a socket
pair, so nothing of the caller's ``__main__`` is imported again
(``multiprocessing``'s spawn would re-run an unguarded script). The protocol is a sequence of
pickled tuples on that socket, one request and one reply at a time:

* parent → worker ``("evaluate", first, positions)``, positions (r, N, 3) float64 Å of
  replicas ``first .. first + r - 1``; reply ``("result", energies, forces, stats,
  spread)`` with float64 arrays (r,) eV and (r, N, 3) eV/Å, the worker's neighbour-list
  counts, and a committee's largest per-atom force disagreement (r,) eV/Å (None for one
  model), or ``("error", exception_or_text)``;
* ``("close",)``, or the parent's end closing (its process exiting), ends the worker.

The worker answers every request, errors included, so one bad replica does not leave the
others' replies unread.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import weakref
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..committee import Committee
    from ..nn import FreeCG

__all__ = ["WorkerError", "WorkerProcesses", "WorkerSpec"]

# The worker loads torch, the model and the compiled kernels before it says it is ready,
# and the first use on a machine builds the kernels with its C++ compiler: the limit leaves
# room for that build on a slow, busy machine, while a worker that never starts still
# fails the run rather than hanging it.
READY_TIMEOUT_S = 600.0
# Exceptions a worker sends back as they are: they describe the caller's input (an overlap
# in a replica, say). Others come back as a WorkerError with the worker's traceback.
_USER_ERRORS = (ValueError, FloatingPointError)
# The worker's command (``-c``, not ``-m``: running a module of an imported package as
# __main__ would load it twice).
_WORKER_MAIN = ("import sys; from multiprocessing.connection import Connection; "
                "from freecg_md.md.worker_serve import serve; "
                "serve(Connection(int(sys.argv[1])))")


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the same :class:`FreeCGPotential` as its parent."""

    model_paths: list[str]
    numbers: list[int]
    cell: list[list[float]] | None
    pbc: list[bool] | None
    dtype: str
    skin: float
    replicas_per_pass: int | None
    compile: bool
    edge_chunk_size: int | str | None
    fused_kernels: bool
    threads: int
    matmul_precision: str = "float32"


class WorkerError(RuntimeError):
    """A worker process failed or exited."""


class WorkerProcesses:
    """``n_workers`` processes, each evaluating the replicas it is given.

    Parameters
    ----------
    model:
        The parent's prepared (frozen, converted) :class:`~freecg_md.FreeCG`, or a
        :class:`~freecg_md.committee.Committee` of them; it is written to temporary model
        files (one per member) that each worker loads, then removed.
    n_workers:
        Processes to start.
    spec:
        Everything but the model paths of :class:`WorkerSpec`, as keyword arguments.
    """

    def __init__(self, model: FreeCG | Committee, n_workers: int, **spec: object) -> None:
        from ..committee import Committee
        from ..io import save_model

        self.connections: list[Connection] = []
        self.processes: list[subprocess.Popen] = []
        self.stats: list[dict[str, int]] = []
        # Closes the workers when this object is collected or at interpreter exit.
        self._finalizer = weakref.finalize(self, _stop, self.connections, self.processes)
        with tempfile.TemporaryDirectory(prefix="freecg-workers-") as directory:
            members = model.members if isinstance(model, Committee) else [model]
            model_paths = []
            for index, member in enumerate(members):
                model_paths.append(str(Path(directory) / f"model_{index}.pt"))
                # With its metadata: the training domain lets the workers warn as well.
                save_model(member, model_paths[-1], metadata=getattr(member, "metadata", None))
            worker_spec = WorkerSpec(model_paths=model_paths, **spec)
            for _ in range(n_workers):
                self._start(worker_spec)
            # All load the model file at once; it is removed once every one has read it.
            for index in range(n_workers):
                reply = self._receive(index, timeout=READY_TIMEOUT_S, doing="starting")
                if reply[0] != "ready":
                    self.close()
                    _raise(reply, f"worker process {index} failed to start")
                self.stats.append({"builds": 0, "reuses": 0})

    def _start(self, spec: WorkerSpec) -> None:
        parent, child = socket.socketpair()
        env = dict(os.environ)
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(spec.threads)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        # The worker imports this freecg_md, installed or not.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        # A session of its own: Ctrl-C in a terminal interrupts the parent only, which then
        # stops the workers, instead of every worker printing a KeyboardInterrupt too.
        with child:
            process = subprocess.Popen(
                [sys.executable, "-c", _WORKER_MAIN, str(child.fileno())],
                pass_fds=(child.fileno(),), env=env, stdin=subprocess.DEVNULL,
                start_new_session=True)
        connection = Connection(parent.detach())
        self.processes.append(process)
        self.connections.append(connection)
        connection.send(asdict(spec))

    @property
    def alive(self) -> bool:
        """False once closed, or stopped after a worker failed."""
        return self._finalizer.alive

    @property
    def n_workers(self) -> int:
        return len(self.processes)

    def _receive(self, index: int, timeout: float | None, doing: str) -> tuple:
        """The next reply of worker ``index``; a :class:`WorkerError` if it exits first."""
        connection, process = self.connections[index], self.processes[index]
        waited = 0.0
        while not connection.poll(1.0):
            waited += 1.0
            if process.poll() is not None or (timeout is not None and waited >= timeout):
                self._failed(index, doing, timeout)
        try:
            return connection.recv()
        except (EOFError, OSError):
            self._failed(index, doing, timeout)

    def _failed(self, index: int, doing: str, timeout: float | None = None) -> None:
        """Stop all workers and raise a :class:`WorkerError` on worker ``index``."""
        process = self.processes[index]
        try:
            code = process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            code = None
        self.close()
        if code is not None:
            state = f"exited with code {code}"
        elif timeout is not None:
            state = f"did not answer within {timeout:.0f} s"
        else:
            state = "closed its connection"
        raise WorkerError(f"worker process {index} (pid {process.pid}) {state} while "
                          f"{doing}; its error output, if any, is above")

    def evaluate(self, positions: np.ndarray, blocks: list[slice]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Energies (R,) eV and forces (R, N, 3) eV/Å of ``positions`` (R, N, 3) Å, float64,
        and a committee's largest per-atom force disagreement (R,) eV/Å (None for a single
        model); worker ``i`` evaluates the replicas ``blocks[i]``."""
        if not self.alive:
            raise WorkerError("the worker processes were closed")
        doing = [f"evaluating replicas {block.start}-{block.stop - 1}" for block in blocks]
        for index, block in enumerate(blocks):
            try:
                self.connections[index].send(("evaluate", block.start, positions[block]))
            except OSError:
                self._failed(index, doing[index])
        replies = [self._receive(index, None, doing[index]) for index in range(len(blocks))]
        for reply in replies:
            if reply[0] != "result":
                _raise(reply, "a worker process failed")
        for index, reply in enumerate(replies):
            self.stats[index] = reply[3]
        energies = np.concatenate([reply[1] for reply in replies])
        forces = np.concatenate([reply[2] for reply in replies])
        spread = (np.concatenate([reply[4] for reply in replies])
                  if replies[0][4] is not None else None)
        return energies, forces, spread

    @property
    def neighbor_stats(self) -> dict[str, int]:
        return {key: sum(stats[key] for stats in self.stats) for key in ("builds", "reuses")}

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._finalizer()


def _stop(connections: list[Connection], processes: list[subprocess.Popen]) -> None:
    for connection in connections:
        try:
            connection.send(("close",))
        except OSError:
            pass  # already gone
        connection.close()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _raise(reply: tuple, context: str) -> None:
    error = reply[1]
    if isinstance(error, _USER_ERRORS):
        raise error
    raise WorkerError(f"{context}:\n{error}")
