"""Labelled datasets as extxyz files that ASE reads: energy in ``info``, forces in ``arrays``.

``ase.io.read(path, ":")`` gives Atoms whose ``get_potential_energy()`` (eV) and
``get_forces()`` (eV/Å) are the labels. Every structure is validated on reading, so a
malformed file fails with the file, the frame and the problem named, not during training.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.data import chemical_symbols
from ase.io import read, write

__all__ = ["DatasetError", "check_elements", "merge_chunks", "read_dataset", "write_dataset"]


class DatasetError(ValueError):
    """A labelled structure is missing a label or has labels of the wrong shape."""


def _files(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            files.extend(sorted(entry.glob("*.extxyz")) + sorted(entry.glob("*.extxyz.gz")))
        elif entry.exists():
            files.append(entry)
        else:
            raise FileNotFoundError(f"dataset path {str(entry)!r} does not exist")
    return files


def _validate(atoms: Atoms, where: str) -> None:
    try:
        energy = atoms.get_potential_energy()
    except (RuntimeError, PropertyNotImplementedError, AttributeError):
        raise DatasetError(f"{where}: no energy label") from None
    try:
        forces = atoms.get_forces()
    except (RuntimeError, PropertyNotImplementedError, AttributeError):
        raise DatasetError(f"{where}: no forces label") from None
    if np.shape(forces) != (len(atoms), 3):
        raise DatasetError(f"{where}: forces have shape {np.shape(forces)}, expected "
                           f"({len(atoms)}, 3)")
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        raise DatasetError(f"{where}: non-finite energy or forces")
    if not np.all(np.isfinite(atoms.positions)):
        raise DatasetError(f"{where}: non-finite positions")


def read_dataset(paths: str | Path | Iterable[str | Path]) -> list[Atoms]:
    """Read and validate labelled structures from extxyz files or directories of
    ``*.extxyz`` chunks (sorted by name).

    Raises
    ------
    DatasetError
        A structure lacks energy or forces, has forces of the wrong shape or non-finite
        values; the message names the file and the frame.
    """
    structures: list[Atoms] = []
    for path in _files(paths):
        try:
            frames = read(path, index=":")
        except Exception as error:  # noqa: BLE001 - ASE raises many types for bad files
            raise DatasetError(f"{path}: not a readable extxyz file ({error})") from None
        for index, atoms in enumerate(frames):
            _validate(atoms, f"{path}, frame {index}")
            structures.append(atoms)
    if not structures:
        raise DatasetError(f"no structures found in {paths}")
    return structures


def check_elements(structures: list[Atoms], allowed_numbers: Iterable[int]) -> None:
    """Raise :class:`DatasetError` naming any element outside ``allowed_numbers``."""
    allowed = set(int(z) for z in allowed_numbers)
    for index, atoms in enumerate(structures):
        unknown = sorted(set(atoms.numbers.tolist()) - allowed)
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in sorted(allowed))
            raise DatasetError(f"structure {index} contains element(s) {names}; the model "
                               f"knows {known}")


def write_dataset(structures: list[Atoms], path: str | Path) -> Path:
    """Write labelled structures as extxyz (``.extxyz.gz`` compresses)."""
    for index, atoms in enumerate(structures):
        _validate(atoms, f"structure {index}")
    path = Path(path)
    write(path, structures, format="extxyz")
    return path


def merge_chunks(chunk_dir: str | Path, out_path: str | Path) -> Path:
    """One extxyz file from a directory of labelled chunks."""
    return write_dataset(read_dataset(chunk_dir), out_path)
