"""Labelled datasets as extxyz files that ASE reads: energy in ``info``, forces in ``arrays``.

``ase.io.read(path, ":")`` gives Atoms whose ``get_potential_energy()`` (eV) and
``get_forces()`` (eV/Å) are the labels. Every structure is validated on reading, so a
malformed file fails with the file, the frame and the problem named, not during training.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
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
            # pathlib's glob also matches dot-files: skip the ``.chunk_*.tmp.extxyz`` that a
            # running labeller is still writing, or a half-written chunk would be read.
            found = sorted(entry.glob("*.extxyz")) + sorted(entry.glob("*.extxyz.gz"))
            files.extend(f for f in found if not f.name.startswith("."))
        elif entry.exists():
            files.append(entry)
        else:
            raise FileNotFoundError(f"dataset path {str(entry)!r} does not exist")
    return files


def _label(getter: Callable[[], Any], missing: str) -> Any:
    """``getter()``, or :class:`DatasetError` ``missing`` when the structure lacks the label.

    ASE signals a missing label with a RuntimeError: without a calculator, and from a
    single-point calculator that lacks the property (its error class derives from
    RuntimeError).
    """
    try:
        return getter()
    except (RuntimeError, AttributeError):
        raise DatasetError(missing) from None


def _relabel(atoms: Atoms, energy_key: str, forces_key: str, where: str) -> None:
    """Attach ``atoms.info[energy_key]`` and ``atoms.arrays[forces_key]`` as the labels."""
    info_keys = sorted(atoms.info)
    array_keys = sorted(set(atoms.arrays) - {"numbers", "positions"})
    if energy_key not in atoms.info:
        raise DatasetError(f"{where}: no energy under info[{energy_key!r}] (energy_key); "
                           f"its info has {info_keys}")
    if forces_key not in atoms.arrays:
        raise DatasetError(f"{where}: no forces under arrays[{forces_key!r}] (forces_key); "
                           f"its per-atom arrays are {array_keys}")
    atoms.calc = SinglePointCalculator(atoms, energy=float(atoms.info[energy_key]),
                                       forces=np.asarray(atoms.arrays[forces_key], float))


def _validate(atoms: Atoms, where: str) -> None:
    # Positions first: ASE compares them with the calculator's copy, and NaN != NaN would
    # make a NaN-position frame look unlabelled.
    if not np.all(np.isfinite(atoms.positions)):
        raise DatasetError(f"{where}: non-finite positions")
    energy = _label(atoms.get_potential_energy,
                    f"{where}: no energy label (read ASE's calculator results, as extxyz "
                    "stores them under 'energy'; pass energy_key=... for another name, e.g. "
                    f"'REF_energy'; its info has {sorted(atoms.info)})")
    forces = _label(atoms.get_forces,
                    f"{where}: no forces label (read ASE's calculator results, as extxyz "
                    "stores them under 'forces'; pass forces_key=... for another name, e.g. "
                    "'REF_forces'; its per-atom arrays are "
                    f"{sorted(set(atoms.arrays) - {'numbers', 'positions'})})")
    if np.shape(forces) != (len(atoms), 3):
        raise DatasetError(f"{where}: forces have shape {np.shape(forces)}, expected "
                           f"({len(atoms)}, 3)")
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        raise DatasetError(f"{where}: non-finite energy or forces")


def read_dataset(
    paths: str | Path | Iterable[str | Path],
    allowed_numbers: Iterable[int] | None = None,
    energy_key: str | None = None,
    forces_key: str | None = None,
) -> list[Atoms]:
    """Read and validate labelled structures from extxyz files or directories of
    ``*.extxyz`` / ``*.extxyz.gz`` chunks (sorted by name; hidden temporary files skipped).

    Parameters
    ----------
    paths:
        A file, a directory, or several of either.
    allowed_numbers:
        If given, atomic numbers the structures may contain; checking here lets the error
        name the file and the frame of an unknown element.
    energy_key, forces_key:
        Read the labels from ``atoms.info[energy_key]`` (eV) and
        ``atoms.arrays[forces_key]`` (eV/Å), as other tools write them (e.g.
        ``"REF_energy"``, ``"REF_forces"``); None reads ASE's calculator results. Give
        both or neither.

    Returns
    -------
    list of ase.Atoms
        Each with a calculator holding ``energy`` (eV) and ``forces`` (n_atoms, 3) eV/Å.

    Raises
    ------
    DatasetError
        A structure lacks energy or forces, has forces of the wrong shape, non-finite
        values or an element outside ``allowed_numbers``; the message names the file and
        the frame.
    """
    if (energy_key is None) != (forces_key is None):
        raise ValueError(f"energy_key={energy_key!r}, forces_key={forces_key!r}: give both "
                         "label names or neither")
    allowed = None if allowed_numbers is None else {int(z) for z in allowed_numbers}
    structures: list[Atoms] = []
    for path in _files(paths):
        try:
            frames = read(path, index=":")
        except Exception as error:  # noqa: BLE001 - ASE raises many types for bad files
            raise DatasetError(f"{path}: not a readable extxyz file ({error})") from None
        for index, atoms in enumerate(frames):
            if energy_key is not None:
                _relabel(atoms, energy_key, forces_key, f"{path}, frame {index}")
            _validate(atoms, f"{path}, frame {index}")
            if allowed is not None:
                _check_one(atoms, allowed, f"{path}, frame {index}")
            structures.append(atoms)
    if not structures:
        raise DatasetError(f"no structures found in {paths}")
    return structures


def _check_one(atoms: Atoms, allowed: set[int], where: str) -> None:
    unknown = sorted(set(atoms.numbers.tolist()) - allowed)
    if unknown:
        names = ", ".join(chemical_symbols[z] for z in unknown)
        known = ", ".join(chemical_symbols[z] for z in sorted(allowed))
        raise DatasetError(f"{where}: contains element(s) {names}; expected only {known}")


def check_elements(structures: list[Atoms], allowed_numbers: Iterable[int]) -> None:
    """Raise :class:`DatasetError` naming any element outside ``allowed_numbers``.

    The message names the structure's position in ``structures`` and, for structures from
    :func:`label_frames`, its ``frame_index`` in the sampling file. Use
    ``read_dataset(..., allowed_numbers=...)`` to have the file named too.
    """
    allowed = {int(z) for z in allowed_numbers}
    for index, atoms in enumerate(structures):
        where = f"structure {index}"
        if "frame_index" in atoms.info:
            where += f" (frame_index {atoms.info['frame_index']})"
        _check_one(atoms, allowed, where)


def write_dataset(structures: list[Atoms], path: str | Path) -> Path:
    """Validate and write labelled structures as one extxyz file.

    A path ending in ``.gz`` is gzip-compressed: ASE compresses on write and decompresses
    on read by the suffix (checked with ASE 3.29; about 3x smaller for chignolin).
    """
    for index, atoms in enumerate(structures):
        _validate(atoms, f"structure {index}")
    path = Path(path)
    write(path, structures, format="extxyz")
    return path


def merge_chunks(chunk_dir: str | Path, out_path: str | Path) -> Path:
    """Validate the chunks of ``chunk_dir`` (sorted by name) and write them as one extxyz
    file, ``out_path`` (``.extxyz.gz`` to compress)."""
    return write_dataset(read_dataset(chunk_dir), out_path)
