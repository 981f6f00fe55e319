"""Labelled structures as tensors, splits and batches for training."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from ..neighbors import build_neighbor_list


@dataclass
class Structure:
    """One labelled structure; tensors on the CPU.

    numbers (N,) long; positions (N, 3) Å float64; energy () eV float64; forces (N, 3)
    eV/Å float64; edge_index (2, E) long (pairs within the cutoff, computed once: training
    positions never move); shifts (E, 3) Å Cartesian image shifts, or None for a molecule.
    """

    numbers: torch.Tensor
    positions: torch.Tensor
    energy: torch.Tensor
    forces: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor | None


def structures_from_atoms(atoms_list: list[Atoms], cutoff: float) -> list[Structure]:
    """Convert validated ASE structures (energy and forces attached) to tensors."""
    out = []
    for atoms in atoms_list:
        nl = build_neighbor_list(atoms.positions, cutoff, atoms.cell.array, atoms.pbc)
        shifts = None
        if atoms.pbc.any():
            shifts = torch.from_numpy(nl.shift_vectors(atoms.cell.array))
        out.append(
            Structure(
                numbers=torch.as_tensor(atoms.numbers, dtype=torch.long),
                positions=torch.as_tensor(atoms.positions, dtype=torch.float64),
                energy=torch.tensor(atoms.get_potential_energy(), dtype=torch.float64),
                forces=torch.as_tensor(atoms.get_forces(), dtype=torch.float64),
                edge_index=torch.from_numpy(nl.edge_index),
                shifts=shifts,
            )
        )
    return out


def dataset_fingerprint(paths: list[Path], cutoff: float, energy_key: str | None = None,
                        forces_key: str | None = None) -> str:
    """Hash of the data files' names, sizes and modification times plus the cutoff and the
    label names: the key of the tensor cache."""
    labels = ("" if energy_key is None and forces_key is None
              else f";labels={energy_key},{forces_key}")
    digest = hashlib.sha256(f"cutoff={cutoff}{labels}".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def structures_fingerprint(structures: list[Structure]) -> str:
    """SHA-256 (first 16 hex digits) of the structures' atomic numbers, positions, energies
    and forces, in order: the identity of a run's data, the same on every machine and
    checkout (unlike :func:`dataset_fingerprint`, which reads file names and times)."""
    digest = hashlib.sha256()
    for structure in structures:
        for tensor in (structure.numbers, structure.positions, structure.energy,
                       structure.forces):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def save_structures(structures: list[Structure], path: Path) -> None:
    """Tensor cache, loadable with ``weights_only=True``."""
    payload = {
        "n": len(structures),
        **{f"{field}_{i}": getattr(s, field) for i, s in enumerate(structures)
           for field in ("numbers", "positions", "energy", "forces", "edge_index")},
        **{f"shifts_{i}": s.shifts for i, s in enumerate(structures) if s.shifts is not None},
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_structures(path: Path) -> list[Structure]:
    payload = torch.load(path, weights_only=True)
    return [
        Structure(
            *(payload[f"{field}_{i}"] for field in
              ("numbers", "positions", "energy", "forces", "edge_index")),
            shifts=payload.get(f"shifts_{i}"),
        )
        for i in range(payload["n"])
    ]


def split_indices(n: int, val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[int]]:
    """Random train/val/test split of ``range(n)``: training and validation get at least one
    item each, test at least one unless ``test_fraction`` is 0."""
    if n < 3:
        raise ValueError(f"the dataset has {n} structures; at least 3 are needed to split "
                         f"into train, validation and test")
    n_val = max(1, round(val_fraction * n))
    n_test = max(1, round(test_fraction * n)) if test_fraction > 0 else 0
    if n - n_val - n_test < 1:
        raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} of "
                         f"{n} structures hold out {n_val} + {n_test}, leaving none to train "
                         "on; expected smaller fractions or more data")
    return random_parts(n, n_val, n_test, seed)


def random_parts(n: int, n_val: int, n_test: int, seed: int,
                 offset: int = 0) -> dict[str, list[int]]:
    """``n_val`` and ``n_test`` random indices of ``range(offset, offset + n)`` for
    validation and test, the rest for training; each part sorted."""
    order = offset + np.random.default_rng(seed).permutation(n)
    return {
        "val": sorted(order[:n_val].tolist()),
        "test": sorted(order[n_val:n_val + n_test].tolist()),
        "train": sorted(order[n_val + n_test:].tolist()),
    }


def split_size(split: dict[str, list[int]]) -> int:
    """Structures a train/val/test split covers."""
    return sum(len(indices) for indices in split.values())


@dataclass
class Batch:
    """Structures concatenated as flat atoms plus a structure index."""

    numbers: torch.Tensor
    positions: torch.Tensor
    edge_index: torch.Tensor
    shifts: torch.Tensor | None
    batch: torch.Tensor
    num_graphs: int
    num_atoms: torch.Tensor  # (B,) float
    energy: torch.Tensor  # (B,) eV
    forces: torch.Tensor  # (N, 3) eV/Å

    def to(self, device: torch.device, dtype: torch.dtype) -> Batch:
        def move(t: torch.Tensor | None, floating: bool) -> torch.Tensor | None:
            if t is None:
                return None
            return t.to(device=device, dtype=dtype) if floating else t.to(device)

        return Batch(
            numbers=move(self.numbers, False), positions=move(self.positions, True),
            edge_index=move(self.edge_index, False), shifts=move(self.shifts, True),
            batch=move(self.batch, False), num_graphs=self.num_graphs,
            num_atoms=self.num_atoms.to(device), energy=self.energy.to(device),
            forces=move(self.forces, True),
        )


def collate(structures: list[Structure]) -> Batch:
    """One batch from several structures (edge indices offset by the atoms before them)."""
    offsets = np.cumsum([0] + [len(s.numbers) for s in structures[:-1]])
    any_periodic = any(s.shifts is not None for s in structures)
    shifts = None
    if any_periodic:
        shifts = torch.cat([
            s.shifts if s.shifts is not None else torch.zeros(s.edge_index.shape[1], 3,
                                                               dtype=torch.float64)
            for s in structures
        ])
    return Batch(
        numbers=torch.cat([s.numbers for s in structures]),
        positions=torch.cat([s.positions for s in structures]),
        edge_index=torch.cat([s.edge_index + int(o) for s, o in zip(structures, offsets,
                                                                     strict=True)], dim=1),
        shifts=shifts,
        batch=torch.cat([torch.full((len(s.numbers),), i, dtype=torch.long)
                         for i, s in enumerate(structures)]),
        num_graphs=len(structures),
        num_atoms=torch.tensor([float(len(s.numbers)) for s in structures],
                               dtype=torch.float64),
        energy=torch.stack([s.energy for s in structures]),
        forces=torch.cat([s.forces for s in structures]),
    )
