"""Potentials for the MD engines: FreeCG on a batch of replicas, or any ASE calculator.

A potential maps the positions of R replicas of one system to their energies and forces::

    energies, forces = potential.evaluate(positions)   # (R, N, 3) Å -> (R,) eV, (R, N, 3) eV/Å

Inputs and outputs are float64 on the device of ``positions`` (the engines keep the state on
the CPU); a potential converts at its own boundary to whatever its model runs in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.data import chemical_symbols

from ..calculator import MIN_DISTANCE, prepare_model, resolve_device, resolve_dtype
from ..neighbors import NeighborListCache
from ..nn import FreeCG

__all__ = ["ASECalculatorPotential", "FreeCGPotential", "Potential", "check_potential",
           "check_results"]


@runtime_checkable
class Potential(Protocol):
    """Energies and forces of R replicas of one N-atom system."""

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` (R, N, 3) float64 Å -> ``(energies (R,) eV, forces (R, N, 3) eV/Å)``,
        both float64 on the device of ``positions``."""
        ...


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
                    shifts: np.ndarray | None) -> None:
    """The calculator's overlap check, naming the replica."""
    if edge_index.shape[1] == 0:
        return
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
    """R replicas of one system through a FreeCG model in one batched forward pass.

    Each replica keeps its own Verlet neighbour list (a
    :class:`~freecg_md.neighbors.NeighborListCache`, the r-th serving row r of
    ``positions``); the lists are concatenated with atom offsets ``r * N`` and a batch index,
    so the model sees one graph of R disconnected molecules and returns R energies.

    Parameters
    ----------
    model:
        A :class:`~freecg_md.FreeCG` or a model file path. A model in another dtype or device
        is converted as a copy; the caller's model is left as it is.
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
        batch, so batching saves only per-call overhead; the model cuts a batch's edges into
        runs that stay in the caches and shares them among threads (see
        :class:`~freecg_md.FreeCG`), which made 8 chignolins in one pass as fast as one
        replica per pass with 2 workers, within the machine's noise, on 2 cores
        (``benchmarks/bench_replicas.py``; before runs, one pass was 3.5x slower).
    workers:
        CPU only: how many passes run at once, each in its own thread with
        ``torch.get_num_threads() // workers`` intra-op threads. ``"auto"`` (the default)
        takes one worker per intra-op thread of this process (up to the number of passes);
        1 runs the passes one after another. A chignolin pass keeps two intra-op threads
        busy only part of the time (element-wise ops on (E, 8, F) tensors are bound by
        memory bandwidth and split poorly), so two single-threaded passes side by side on
        2 cores beat two passes one after another with two threads each. Each replica is
        still computed by one thread in a fixed order, so results do not depend on
        ``workers``.
    compile:
        Run the network through ``torch.compile`` (:meth:`FreeCG.compile_network`): the
        first step compiles (minutes on a CPU), later steps are faster.
    """

    def __init__(
        self,
        model: FreeCG | str | os.PathLike,
        numbers: Sequence[int] | np.ndarray | torch.Tensor,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | bool | None = None,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        skin: float = 1.0,
        replicas_per_pass: int | str | None = "auto",
        workers: int | str = "auto",
        compile: bool = False,  # noqa: A002 - torch's name for it
    ) -> None:
        self.device = resolve_device(device)
        if workers == "auto":
            workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        if isinstance(workers, str) or workers < 1:
            raise ValueError(f"workers={workers!r}: expected 'auto' or an integer >= 1")
        self.workers = int(workers) if self.device.type == "cpu" else 1
        self._pool: ThreadPoolExecutor | None = None
        self._pool_shape = (0, 0)  # (threads, intra-op threads of each)
        self._called = False
        if replicas_per_pass == "auto":
            replicas_per_pass = None if self.device.type == "cuda" else 1
        elif replicas_per_pass is not None and (
                isinstance(replicas_per_pass, str) or replicas_per_pass < 1):
            raise ValueError(f"replicas_per_pass={replicas_per_pass!r}: expected 'auto', None "
                             "or an integer >= 1")
        self.replicas_per_pass = replicas_per_pass
        self.dtype = resolve_dtype(dtype)
        self.model = prepare_model(model, self.device, self.dtype, compile)
        self.numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        if self.numbers.size == 0:
            raise ValueError("numbers is empty; expected at least one atom")
        _check_species(self.model, self.numbers)
        self.cell, self.pbc = _geometry(cell, pbc)
        if skin < 0:
            raise ValueError(f"skin={skin!r}: expected a distance >= 0 Å")
        self.skin = float(skin)
        self.caches: list[NeighborListCache] = []

    @property
    def n_atoms(self) -> int:
        return int(self.numbers.size)

    @property
    def neighbor_stats(self) -> dict[str, int]:
        """Builds and reuses summed over the replicas' neighbour lists."""
        return {
            "builds": sum(cache.n_builds for cache in self.caches),
            "reuses": sum(cache.n_reuses for cache in self.caches),
        }

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
            _check_overlaps(first + r, positions[r], neighbors.edge_index, shift)
            edges.append(neighbors.edge_index + r * n_atoms)
            shifts.append(shift)
        edge_index = np.concatenate(edges, axis=1)
        return edge_index, (np.concatenate(shifts) if periodic else None)

    def _forward(self, positions: np.ndarray, first: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One batched pass over rows ``positions`` (r, N, 3) Å, replicas ``first...``."""
        n_replicas, n_atoms = positions.shape[:2]
        edge_index, shifts = self._edges(positions, first)

        def tensor(values: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(values, dtype=dtype, device=self.device)

        batch = torch.arange(n_replicas, device=self.device).repeat_interleave(n_atoms)
        with torch.enable_grad():
            out = self.model.energy_and_forces(
                tensor(np.tile(self.numbers, n_replicas), torch.long),
                tensor(positions.reshape(-1, 3), self.dtype),
                tensor(edge_index, torch.long),
                None if shifts is None else tensor(shifts, self.dtype),
                batch,
                n_replicas,
            )
        return out["energy"].detach(), out["forces"].detach().reshape(n_replicas, n_atoms, 3)

    def _thread_pool(self, size: int) -> ThreadPoolExecutor:
        """A pool of ``size`` threads sharing this process's intra-op threads."""
        # torch.set_num_threads in a thread sets that thread's OpenMP team size only.
        shape = (size, max(1, torch.get_num_threads() // size))
        if self._pool is None or self._pool_shape != shape:
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(size, thread_name_prefix="freecg-pass",
                                            initializer=torch.set_num_threads,
                                            initargs=(shape[1],))
            self._pool_shape = shape
        return self._pool

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Energies (R,) eV and forces (R, N, 3) eV/Å of ``positions`` (R, N, 3) Å, float64."""
        array = _check_positions(positions, self.n_atoms)
        step = self.replicas_per_pass or array.shape[0]
        firsts = range(0, array.shape[0], step)
        # Neighbour caches are made here, not in the threads, so none is made twice.
        while len(self.caches) < array.shape[0]:
            self.caches.append(NeighborListCache(self.model.cutoff, self.skin))
        # The first call runs serially: with compile=True it compiles, once, in this thread.
        if self.workers > 1 and len(firsts) > 1 and self._called:
            pool = self._thread_pool(min(self.workers, len(firsts)))
            parts = list(pool.map(lambda first: self._forward(array[first:first + step], first),
                                  firsts))
        else:
            parts = [self._forward(array[first:first + step], first) for first in firsts]
        self._called = True
        energies = torch.cat([energy for energy, _ in parts])
        forces = torch.cat([force for _, force in parts])
        as_output = dict(device=positions.device, dtype=torch.float64)
        return energies.to(**as_output), forces.to(**as_output)


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


def check_potential(potential: Potential, dtype: str, device: str) -> None:
    """TypeError unless ``potential`` has ``evaluate``; ValueError if it exposes a ``dtype``
    or ``device`` other than the run config's ``dtype``/``device``."""
    if not callable(getattr(potential, "evaluate", None)):
        raise TypeError(f"potential is a {type(potential).__name__} without evaluate(positions)")
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
