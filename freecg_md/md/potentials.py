"""Potentials for the MD engines: FreeCG on a batch of replicas, or any ASE calculator.

A potential maps the positions of R replicas of one system to their energies and forces::

    energies, forces = potential.evaluate(positions)   # (R, N, 3) Å -> (R,) eV, (R, N, 3) eV/Å

Inputs and outputs are float64 on the device of ``positions`` (the engines keep the state on
the CPU); a potential converts at its own boundary to whatever its model runs in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import chemical_symbols

from ..calculator import MIN_DISTANCE, prepare_model, resolve_device, resolve_dtype
from ..committee import Committee
from ..domain import DomainWatcher, domain_of_model
from ..neighbors import NeighborListCache, build_neighbor_list
from ..nn import FreeCG
from ..nn.plan import plan_pass
from .distributed import replica_block
from .protocol import Potential
from .worker_processes import WorkerProcesses

__all__ = ["ASECalculatorPotential", "FreeCGPotential", "Potential", "check_potential",
           "check_results"]


def _check_positions(positions: torch.Tensor, n_atoms: int) -> np.ndarray:
    """(R, N, 3) float64 numpy copy of ``positions``; errors name the first bad replica."""
    if positions.ndim != 3 or tuple(positions.shape[1:]) != (n_atoms, 3):
        raise ValueError(
            f"positions has shape {tuple(positions.shape)}; expected (R, {n_atoms}, 3)"
        )
    array = positions.detach().to("cpu", torch.float64).numpy()
    finite = np.isfinite(array).all(axis=-1)
    if not finite.all():
        replica = int(np.nonzero(~finite.all(axis=-1))[0][0])
        atoms = np.nonzero(~finite[replica])[0][:10].tolist()
        raise ValueError(
            f"replica {replica} has NaN or infinite positions (atom indices {atoms})"
        )
    return array


def _check_overlaps(replica: int, positions: np.ndarray, edge_index: np.ndarray,
                    shifts: np.ndarray | None) -> np.ndarray:
    """The calculator's overlap check, naming the replica; returns the edges' lengths (Å)."""
    if edge_index.shape[1] == 0:
        return np.zeros(0)
    vectors = positions[edge_index[1]] - positions[edge_index[0]]
    if shifts is not None:
        vectors = vectors + shifts
    squared = np.einsum("ij,ij->i", vectors, vectors)
    closest = int(np.argmin(squared))
    if squared[closest] < MIN_DISTANCE**2:
        i, j = edge_index[:, closest]
        raise ValueError(
            f"replica {replica}: atoms {i} and {j} overlap ({np.sqrt(squared[closest]):.3g} Å "
            f"apart, less than {MIN_DISTANCE} Å); the structure is broken"
        )
    return np.sqrt(squared)


def _check_species(model: FreeCG, numbers: np.ndarray) -> None:
    unknown = sorted({int(z) for z in numbers} - set(model.species))
    if unknown:
        names = ", ".join(chemical_symbols[z] if 0 < z < len(chemical_symbols) else str(z)
                          for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in model.species)
        raise ValueError(
            f"numbers contains element(s) {names} that the model was not trained on; "
            f"it knows {known}"
        )


def _geometry(cell: np.ndarray | None, pbc: np.ndarray | bool | None
              ) -> tuple[np.ndarray, np.ndarray]:
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    if cell.shape != (3, 3):
        raise ValueError(f"cell has shape {cell.shape}; expected (3, 3) Å")
    pbc = np.broadcast_to(np.asarray(False if pbc is None else pbc, dtype=bool), (3,)).copy()
    return cell, pbc


class FreeCGPotential:
    """R replicas of one system through a FreeCG model: in one batched forward pass on a
    GPU, one replica per pass in worker processes on a CPU (``replicas_per_pass``,
    ``workers``).

    Each replica keeps its own Verlet neighbour list (a
    :class:`~freecg_md.neighbors.NeighborListCache`, the r-th serving row r of
    ``positions``); the lists are concatenated with atom offsets ``r * N`` and a batch index,
    so the model sees one graph of R disconnected molecules and returns R energies.

    With a committee (:class:`~freecg_md.committee.Committee`, or a list of models or
    paths) the forces are the members' mean, and after every call ``force_disagreement``
    holds each replica's largest per-atom force disagreement, (R,) eV/Å (None for a single
    model); the engines log it and can stop on it.

    Parameters
    ----------
    model:
        A :class:`~freecg_md.FreeCG`, a model file path, or a committee. A model in another
        dtype or device is converted as a copy; the caller's model is left as it is.
    numbers:
        (N,) atomic numbers of the system.
    cell, pbc:
        (3, 3) Å and periodic directions; None for a molecule.
    device, dtype:
        Where and in what precision the model runs (``"float32"`` as trained).
    skin:
        Verlet skin in Å (0: a new list every call).
    replicas_per_pass:
        At most this many replicas per forward pass; None puts all in one pass, ``"auto"``
        (the default) does that on a GPU and one replica per pass on a CPU. One pass is
        what a GPU wants. On a CPU the work of a pass grows with the edges whatever the
        batch, so batching saves only per-call overhead, and one replica per pass keeps a
        pass's tensors small.
    workers:
        CPU only: how many processes evaluate the passes side by side, each with its own
        copy of the model, a contiguous block of the replicas and
        ``torch.get_num_threads() // workers`` intra-op threads
        (:mod:`~freecg_md.md.worker_processes`; POSIX systems). ``"auto"`` (the default)
        takes one process per intra-op thread of this process, up to the number of passes
        (1 on other systems); 1 evaluates everything in this process. The workers start
        at the second call (the first runs here, with a worker's share of the threads so
        that it computes as they do, and builds the kernels once) and stop
        with :meth:`close`, at the end of a ``with`` block, or when the potential is
        collected. A chignolin pass keeps two intra-op threads busy only part of the time
        (element-wise ops on (E, 8, F) tensors are bound by memory bandwidth and split
        poorly), so single-thread passes side by side beat passes one after another with
        all threads; processes beat threads because each pass's few thousand torch calls
        re-take the GIL. Each replica is computed by one worker's threads in a fixed
        order, so with one thread each the results do not depend on ``workers``.
    compile:
        Run the network through ``torch.compile`` (:meth:`FreeCG.compile_network`): the
        first step compiles (minutes on a CPU), later steps are faster.
    matmul_precision:
        ``"float32"`` (default), ``"bfloat16"`` (CPUs with bfloat16 units) or ``"tf32"``
        (CUDA): reduced-precision products, in the workers too
        (:mod:`freecg_md.nn.precision`; cost and gain in benchmarks/README.md).
    """

    def __init__(
        self,
        model: FreeCG | Committee | str | os.PathLike | Sequence[FreeCG | str | os.PathLike],
        numbers: Sequence[int] | np.ndarray | torch.Tensor,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | bool | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        skin: float = 1.0,
        replicas_per_pass: int | str | None = "auto",
        workers: int | str = "auto",
        compile: bool = False,  # noqa: A002 - torch's name for it
        matmul_precision: str = "float32",
    ) -> None:
        self.device = resolve_device(device)
        if workers == "auto":
            # The workers get their socket as an inherited file descriptor: POSIX only.
            workers = (torch.get_num_threads()
                       if self.device.type == "cpu" and os.name == "posix" else 1)
        if isinstance(workers, str) or workers < 1:
            raise ValueError(f"workers={workers!r}: expected 'auto' or an integer >= 1")
        if workers > 1 and os.name != "posix":
            raise ValueError(f"workers={workers!r}: worker processes need a POSIX system "
                             "(Linux, macOS); expected 1 or 'auto' here")
        self.workers = int(workers) if self.device.type == "cpu" else 1
        self._worker_processes: WorkerProcesses | None = None
        self._called = False
        if replicas_per_pass == "auto":
            replicas_per_pass = None if self.device.type == "cuda" else 1
        elif replicas_per_pass is not None and (
                isinstance(replicas_per_pass, str) or replicas_per_pass < 1):
            raise ValueError(f"replicas_per_pass={replicas_per_pass!r}: expected 'auto', None "
                             "or an integer >= 1")
        self.replicas_per_pass = replicas_per_pass
        self.dtype = resolve_dtype(dtype)
        self.model = prepare_model(model, self.device, self.dtype, compile, matmul_precision)
        self.force_disagreement: torch.Tensor | None = None
        self.numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        if self.numbers.size == 0:
            raise ValueError("numbers is empty; expected at least one atom")
        _check_species(self.model, self.numbers)
        self.domain = DomainWatcher(domain_of_model(getattr(self.model, "metadata", {})),
                                    self.numbers)
        self.cell, self.pbc = _geometry(cell, pbc)
        if skin < 0:
            raise ValueError(f"skin={skin!r}: expected a distance >= 0 Å")
        self.skin = float(skin)
        self.compile = bool(compile)
        self.caches: list[NeighborListCache] = []

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.size)

    @property
    def neighbor_stats(self) -> dict[str, int]:
        """Builds and reuses summed over the replicas' neighbour lists (in this process and
        in the workers)."""
        stats = {
            "builds": sum(cache.n_builds for cache in self.caches),
            "reuses": sum(cache.n_reuses for cache in self.caches),
        }
        if self._worker_processes is not None:
            for key, value in self._worker_processes.neighbor_stats.items():
                stats[key] += value
        return stats

    def _edges(self, positions: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Edges of replicas ``first, first + 1, ...`` (rows of ``positions``) concatenated
        with atom offsets, (2, E), and their shifts (E, 3) Å or None."""
        n_replicas, n_atoms = positions.shape[:2]
        while len(self.caches) < first + n_replicas:
            self.caches.append(NeighborListCache(self.model.cutoff, self.skin))
        periodic = bool(self.pbc.any())
        edges, shifts = [], []
        for r in range(n_replicas):
            cache = self.caches[first + r]
            neighbors = cache.get(positions[r], self.numbers, self.cell, self.pbc)
            shift = neighbors.shift_vectors(self.cell) if periodic else None
            lengths = _check_overlaps(first + r, positions[r], neighbors.edge_index, shift)
            self.domain.check_distances(neighbors.edge_index, lengths)
            edges.append(neighbors.edge_index + r * n_atoms)
            shifts.append(shift)
        edge_index = np.concatenate(edges, axis=1)
        return edge_index, (np.concatenate(shifts) if periodic else None)

    def _forward(self, positions: np.ndarray, first: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One batched pass over rows ``positions`` (r, N, 3) Å, replicas ``first...``:
        energies, forces, and a committee's largest per-atom force disagreement (r,) eV/Å
        (None for a single model)."""
        n_replicas, n_atoms = positions.shape[:2]
        edge_index, shifts = self._edges(positions, first)

        def tensor(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(values, dtype=dtype, device=self.device)

        # One replica per pass (the CPU default) goes through the model as one structure,
        # as the calculator calls it, with no per-atom structure index to build and scatter.
        batch = (None if n_replicas == 1 else
                 torch.arange(n_replicas, device=self.device).repeat_interleave(n_atoms))
        with torch.enable_grad():
            out = self.model.energy_and_forces(
                tensor(np.tile(self.numbers, n_replicas), torch.long),
                tensor(positions.reshape(-1, 3), self.dtype),
                tensor(edge_index, torch.long),
                None if shifts is None else tensor(shifts, self.dtype),
                batch,
                n_replicas,
            )
        spread = None
        if "forces_std" in out:
            spread = out["forces_std"].detach().reshape(n_replicas, n_atoms).amax(dim=1)
        return (out["energy"].detach(), out["forces"].detach().reshape(n_replicas, n_atoms, 3),
                spread)

    def _workers(self, n_passes: int) -> WorkerProcesses:
        """The worker processes, started on first use (and after a worker failed):
        ``min(workers, n_passes)`` of them."""
        if self._worker_processes is None or not self._worker_processes.alive:
            n_workers = min(self.workers, n_passes)
            self._worker_processes = WorkerProcesses(
                self.model, n_workers, numbers=self.numbers.tolist(),
                cell=None if self.cell is None else self.cell.tolist(),
                pbc=None if self.pbc is None else self.pbc.tolist(),
                dtype=str(self.dtype).removeprefix("torch."), skin=self.skin,
                replicas_per_pass=self.replicas_per_pass, compile=self.compile,
                edge_chunk_size=self._first_network.edge_chunk_size,
                fused_kernels=self._first_network.fused_kernels,
                matmul_precision=self._first_network.matmul_precision,
                threads=_worker_threads(n_workers))
        return self._worker_processes

    @property
    def _first_network(self) -> FreeCG:
        """The model, or a committee's first member: where the execution settings live."""
        return self.model.members[0] if isinstance(self.model, Committee) else self.model

    def close(self) -> None:
        """Stop the worker processes, if any were started (the potential can still be used:
        it starts new ones)."""
        if self._worker_processes is not None:
            self._worker_processes.close()
            self._worker_processes = None

    def __enter__(self) -> FreeCGPotential:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def evaluate_block(self, positions: np.ndarray, first: int
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies (r,) eV and forces (r, N, 3) eV/Å, float64 on this potential's device,
        of the checked ``positions`` (r, N, 3) Å of replicas ``first .. first + r - 1``,
        evaluated in this process."""
        per_pass = self.replicas_per_pass or positions.shape[0]
        parts = [self._forward(positions[start:start + per_pass], first + start)
                 for start in range(0, positions.shape[0], per_pass)]
        if parts and parts[0][2] is not None:
            self.force_disagreement = torch.cat([p[2] for p in parts]).to(torch.float64)
        return (torch.cat([p[0] for p in parts]).to(torch.float64),
                torch.cat([p[1] for p in parts]).to(torch.float64))

    def execution(self, positions: np.ndarray | torch.Tensor, n_replicas: int
                  ) -> dict[str, Any]:
        """How :meth:`evaluate` runs ``n_replicas`` replicas of a system like ``positions``
        (N, 3) Å: the device and dtype, the replicas per pass, the worker processes, and
        the :class:`~freecg_md.nn.plan.ExecutionPlan` of one pass, and ``description``, all
        of it in a line to print. Runs nothing; the run commands print it and record it in
        their ``config.json``."""
        positions = np.asarray(torch.as_tensor(positions, dtype=torch.float64).cpu(),
                               dtype=np.float64).reshape(self.n_atoms, 3)
        if n_replicas < 1:
            raise ValueError(f"n_replicas={n_replicas!r}: expected an integer >= 1")
        per_pass = self.replicas_per_pass or n_replicas
        n_passes = -(-n_replicas // per_pass)
        workers = min(self.workers, n_passes) if n_passes > 1 else 1
        neighbors = build_neighbor_list(positions, self.model.cutoff, self.cell, self.pbc)
        plan = plan_pass(self._first_network, self.device, self.n_atoms * min(per_pass,
                         n_replicas), neighbors.edge_index.shape[1] * min(per_pass, n_replicas))
        if workers > 1 and plan.in_runs and plan.frozen:
            # Each worker process shares the threads (see _workers).
            plan = dataclasses.replace(plan, threads=_worker_threads(workers))
        dtype = str(self.dtype).removeprefix("torch.")
        members = len(self.model.members) if isinstance(self.model, Committee) else 1
        description = (f"{dtype}, {min(per_pass, n_replicas)} replica(s) per pass, "
                       f"{n_passes} pass(es) per step in {workers} process(es)"
                       + (f", a committee of {members}" if members > 1 else "")
                       + f"; each pass: {plan.describe()}")
        return {"device": str(self.device), "dtype": dtype,
                "replicas_per_pass": min(per_pass, n_replicas), "passes": n_passes,
                "worker_processes": workers, "committee": members, "pass": plan.to_dict(),
                "description": description}

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies (R,) eV and forces (R, N, 3) eV/Å of ``positions`` (R, N, 3) Å, float64."""
        array = _check_positions(positions, self.n_atoms)
        n_replicas = array.shape[0]
        per_pass = self.replicas_per_pass or n_replicas
        n_passes = -(-n_replicas // per_pass)
        as_output = dict(device=positions.device, dtype=torch.float64)
        # The first call runs here: it builds (or loads) the kernels and, with compile=True,
        # compiles, once, before any worker starts.
        if self.workers > 1 and n_passes > 1 and self._called:
            workers = self._workers(n_passes)
            n_workers = min(workers.n_workers, n_passes)
            blocks = []
            for rank in range(n_workers):
                passes = replica_block(n_passes, n_workers, rank)
                blocks.append(slice(passes.start * per_pass,
                                    min(passes.stop * per_pass, n_replicas)))
            energies, forces, spread = workers.evaluate(array, blocks)
            if spread is not None:
                self.force_disagreement = torch.from_numpy(spread).to(torch.float64)
            return (torch.from_numpy(energies).to(**as_output),
                    torch.from_numpy(forces).to(**as_output))
        self._called = True
        threads = torch.get_num_threads()
        if self.workers > 1 and n_passes > 1:
            # With a worker's share of the threads, as every later call is computed: a run
            # resumed from a checkpoint makes its first call at a step the uninterrupted
            # run evaluated in a worker, and a pass planned for more threads cuts its edges
            # into other runs, which changes the float32 sums.
            threads = _worker_threads(min(self.workers, n_passes))
        with _intra_op_threads(threads):
            energies, forces = self.evaluate_block(array, 0)
        return energies.to(**as_output), forces.to(**as_output)


def _worker_threads(n_workers: int) -> int:
    """The intra-op threads of each of ``n_workers`` worker processes: this process's,
    shared out."""
    return max(1, torch.get_num_threads() // n_workers)


@contextlib.contextmanager
def _intra_op_threads(threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block, restored after."""
    before = torch.get_num_threads()
    if threads == before:
        yield
        return
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class ASECalculatorPotential:
    """R replicas evaluated one after another with ASE calculators, one object per replica.

    Each replica owns its calculator, so whatever a calculator caches between calls
    (neighbour lists, wavefunctions as an SCF guess) follows one trajectory.

    Parameters
    ----------
    calculators:
        A sequence of distinct calculators (one per replica), or a factory
        ``factory(replica_index) -> Calculator`` called the first time a replica is seen.
    numbers:
        (N,) atomic numbers.
    cell, pbc:
        (3, 3) Å and periodic directions; None for a molecule.
    """

    def __init__(
        self,
        calculators: Sequence[Calculator] | Callable[[int], Calculator],
        numbers: Sequence[int] | np.ndarray | torch.Tensor,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | bool | None = None,
    ) -> None:
        self.numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        if self.numbers.size == 0:
            raise ValueError("numbers is empty; expected at least one atom")
        self.cell, self.pbc = _geometry(cell, pbc)
        if callable(calculators) and not isinstance(calculators, Calculator):
            self._factory: Callable[[int], Calculator] | None = calculators
            self.calculators: list[Calculator] = []
        else:
            calculators = list(calculators)
            if len({id(c) for c in calculators}) != len(calculators):
                raise ValueError(
                    "calculators contains the same object more than once; expected one "
                    "calculator per replica (pass a factory to make them)"
                )
            self._factory = None
            self.calculators = calculators
        self._atoms: list[Atoms] = []

    def _atoms_of(self, replica: int) -> Atoms:
        while len(self._atoms) <= replica:
            index = len(self._atoms)
            if index >= len(self.calculators):
                if self._factory is None:
                    raise ValueError(
                        f"positions has {replica + 1}+ replicas but only "
                        f"{len(self.calculators)} calculators were given"
                    )
                self.calculators.append(self._factory(index))
            atoms = Atoms(numbers=self.numbers, cell=self.cell, pbc=self.pbc)
            atoms.calc = self.calculators[index]
            self._atoms.append(atoms)
        return self._atoms[replica]

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies (R,) eV and forces (R, N, 3) eV/Å of ``positions`` (R, N, 3) Å, float64."""
        array = _check_positions(positions, int(self.numbers.size))
        energies = np.empty(array.shape[0])
        forces = np.empty_like(array)
        for r in range(array.shape[0]):
            atoms = self._atoms_of(r)
            atoms.positions = array[r]
            try:
                energies[r] = atoms.get_potential_energy()
                forces[r] = atoms.get_forces()
            except ValueError as error:
                raise ValueError(f"replica {r}: {error}") from error
        as_tensor = dict(dtype=torch.float64, device=positions.device)
        return torch.as_tensor(energies, **as_tensor), torch.as_tensor(forces, **as_tensor)


def check_potential(potential: Potential, dtype: str, device: str,
                    numbers: np.ndarray | torch.Tensor | None = None) -> None:
    """TypeError unless ``potential`` has ``evaluate``; ValueError if it exposes a ``dtype``
    or ``device`` other than the run config's ``dtype``/``device``, or ``numbers`` (atomic
    numbers) other than the state's ``numbers``."""
    if not callable(getattr(potential, "evaluate", None)):
        raise TypeError(f"potential is a {type(potential).__name__} without evaluate(positions)")
    own_numbers = getattr(potential, "numbers", None)
    if own_numbers is not None and numbers is not None:
        own = np.asarray(own_numbers).reshape(-1)
        state = np.asarray(numbers).reshape(-1)
        if own.shape != state.shape:
            raise ValueError(f"the potential was built for {own.size} atoms but the state has "
                             f"{state.size}; build it with the state's atomic numbers")
        if not np.array_equal(own, state):
            first = int(np.argmax(own != state))
            raise ValueError(f"the potential was built for other atoms than the state's: atom "
                             f"{first} is Z={int(own[first])} in the potential and "
                             f"Z={int(state[first])} in the state (same atoms, same order "
                             "expected)")
    own_dtype, own_device = getattr(potential, "dtype", None), getattr(potential, "device", None)
    if isinstance(own_dtype, torch.dtype) and own_dtype != resolve_dtype(dtype):
        raise ValueError(f"config.dtype={dtype!r} but the potential runs in {own_dtype}")
    # Only the kind of device: under torchrun each rank's potential has its own GPU index.
    if isinstance(own_device, torch.device) and own_device.type != torch.device(device).type:
        raise ValueError(f"config.device={device!r} but the potential runs on {own_device}")


def check_results(energies: torch.Tensor, forces: torch.Tensor, previous: torch.Tensor | None,
                  max_force: float, max_jump: float, where: Callable[[int], str]
                  ) -> str | None:
    """Why a step's results are unusable, or None.

    ``energies`` (R,) eV and ``forces`` (R, N, 3) eV/Å must be finite, no force component
    may exceed ``max_force`` eV/Å and no energy may differ from ``previous`` (R,) by more
    than ``max_jump`` eV. The message begins with ``where(r)`` for the first bad replica r.
    """
    largest = forces.abs().flatten(1).amax(dim=1)
    jump = (energies - previous).abs() if previous is not None else torch.zeros_like(energies)
    bad = (~torch.isfinite(energies) | ~torch.isfinite(largest) | (largest > max_force)
           | (jump > max_jump))
    if not bool(bad.any()):
        return None
    r = int(torch.nonzero(bad)[0, 0])
    energy, force = float(energies[r]), float(largest[r])
    if not np.isfinite(energy):
        return f"{where(r)}: potential energy is {energy} eV"
    if not np.isfinite(force):
        return f"{where(r)}: forces are NaN or infinite"
    if force > max_force:
        return (f"{where(r)}: a force component of {force:.4g} eV/Å exceeds "
                f"max_force={max_force} eV/Å")
    return (f"{where(r)}: potential energy jumped from {float(previous[r]):.6g} to "
            f"{energy:.6g} eV in one step (limit {max_jump:.4g} eV)")
