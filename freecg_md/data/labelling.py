"""Labelling conformations with a reference method through any ASE calculator.

The default reference is GFN2-xTB in ALPB(water) implicit solvent at charge -2, through
tblite's ASE calculator: in vacuum the SCF of the charged chignolin does not converge.
Frames are labelled in chunks; each finished chunk is written atomically as an extxyz
file, so a killed run loses at most one chunk and a rerun skips what is done. A frame whose
calculation fails (SCF not converged, non-finite results) is logged and skipped, never
written with a wrong label.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from tqdm.auto import tqdm

from .molecules import CHIGNOLIN_CHARGE

__all__ = ["REFERENCE_METHOD", "default_reference_calculator", "label_frames",
           "reference_method"]

# Where the record of a labelling directory lives (chunk size and frames it labels).
LABELLING_RECORD = "labelling.json"


def reference_method(charge: int = CHIGNOLIN_CHARGE) -> str:
    """The reference method as each labelled structure's ``info["method"]`` names it."""
    return f"GFN2-xTB/ALPB(water), charge {charge} (tblite)"


REFERENCE_METHOD = reference_method()


def default_reference_calculator(charge: int = CHIGNOLIN_CHARGE) -> Calculator:
    """tblite's GFN2-xTB with ALPB water at total ``charge`` (e), quiet. Its OpenMP threads
    are those of the process's OpenMP runtime, which torch shares: set them with
    ``torch.set_num_threads`` (OMP_NUM_THREADS is read once, when the runtime starts)."""
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", charge=charge, solvation=("alpb", "water"), verbosity=0,
                  max_iterations=300)


def _label_one(atoms: Atoms, calculator: Calculator) -> tuple[float, np.ndarray]:
    atoms.calc = calculator
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # tblite warns, not raises, on some SCF failures
        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(), dtype=np.float64)
    if not np.isfinite(energy) or not np.all(np.isfinite(forces)):
        raise ValueError("non-finite energy or forces")
    return energy, forces


def label_frames(
    frames_npz: str | Path,
    out_dir: str | Path,
    calculator_factory: Callable[[], Calculator] = default_reference_calculator,
    chunk_size: int = 50,
    worker: int = 0,
    n_workers: int = 1,
    progress: bool = True,
    method: str = REFERENCE_METHOD,
) -> list[Path]:
    """Label the frames of a sampling file (see :func:`sample_conformations`).

    Parameters
    ----------
    frames_npz:
        ``.npz`` with ``positions`` (n, N, 3) Å, ``numbers`` (N,), ``temperature`` (n,) K.
    out_dir:
        Receives ``chunk_{index:05d}.extxyz.gz`` (energy eV, forces eV/Å, and the info keys
        ``frame_index``, ``temperature``, ``method``) and ``failed_w{worker}.csv``.
    calculator_factory:
        Makes the reference calculator (called once per worker).
    chunk_size:
        Frames per chunk file.
    worker, n_workers:
        This process takes the chunks with ``index % n_workers == worker``; several
        processes with different ``worker`` share one ``out_dir`` safely.
    progress:
        Show a tqdm bar (frames).
    method:
        Written to each structure's ``info["method"]``.

    Returns
    -------
    list of Path
        The chunk files this call wrote (existing chunks are skipped, not rewritten).

    Raises
    ------
    ValueError
        ``worker`` / ``n_workers`` / ``chunk_size`` out of range.
    """
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker={worker} must be in [0, n_workers={n_workers})")
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size}: expected >= 1")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with np.load(frames_npz) as data:
        positions, numbers = data["positions"], data["numbers"]
        temperatures = data["temperature"] if "temperature" in data else np.zeros(len(positions))
    _check_record(out_dir, chunk_size, positions, numbers, method)
    n_chunks = -(-len(positions) // chunk_size)
    todo = [c for c in range(n_chunks)
            if c % n_workers == worker and not _chunk_done(out_dir, c)]
    calculator = calculator_factory() if todo else None
    failed_log = out_dir / f"failed_w{worker}.csv"
    written = []
    bar = tqdm(total=sum(min(chunk_size, len(positions) - c * chunk_size) for c in todo),
               disable=not progress, unit="frame", desc=f"labelling (worker {worker})")
    for chunk in todo:
        labelled = []
        for index in range(chunk * chunk_size, min((chunk + 1) * chunk_size, len(positions))):
            atoms = Atoms(numbers=numbers, positions=positions[index].astype(np.float64))
            try:
                energy, forces = _label_one(atoms, calculator)
            except Exception as error:  # noqa: BLE001 - any failure of the reference is logged
                _log_failure(failed_log, index, error)
                calculator = calculator_factory()  # a failed SCF can leave bad state behind
            else:
                atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
                atoms.info.update(frame_index=int(index), temperature=float(temperatures[index]),
                                  method=method)
                labelled.append(atoms)
            bar.update(1)
        if not labelled:
            # An empty extxyz file is no readable data set: a hidden marker (data_files
            # skips hidden files) says the chunk is done, its failures in the log.
            (out_dir / f".chunk_{chunk:05d}.all_failed").write_text(
                f"every frame of chunk {chunk} failed; see {failed_log.name}\n")
            continue
        path = out_dir / f"chunk_{chunk:05d}.extxyz.gz"
        tmp = out_dir / f".chunk_{chunk:05d}.tmp.extxyz.gz"
        write(tmp, labelled, format="extxyz")
        os.replace(tmp, path)
        written.append(path)
    bar.close()
    return written


def _chunk_done(out_dir: Path, chunk: int) -> bool:
    # Chunks are written gzipped (a third of the size, so the data set fits in the
    # repository); plain ones from earlier runs count as done too, and so does a chunk
    # whose every frame failed.
    return any((out_dir / name).exists()
               for name in (f"chunk_{chunk:05d}.extxyz", f"chunk_{chunk:05d}.extxyz.gz",
                            f".chunk_{chunk:05d}.all_failed"))


def _check_record(out_dir: Path, chunk_size: int, positions: np.ndarray,
                  numbers: np.ndarray, method: str) -> None:
    """Record which frames ``out_dir``'s chunks label, in chunks of what size and by which
    method, or, when recorded, refuse others: a chunk counts as done by its index alone, so
    another chunk size or frames file would skip or repeat frames without a word, and
    another charge would mix two reference methods in one data set."""
    digest = hashlib.sha256(np.ascontiguousarray(numbers, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(positions, dtype=np.float64).tobytes())
    record = {"chunk_size": int(chunk_size), "n_frames": int(len(positions)),
              "frames_sha256": digest.hexdigest()[:16], "method": method}
    path = out_dir / LABELLING_RECORD
    if path.exists():
        before = json.loads(path.read_text())
        changed = [f"{key} {before[key]} -> {value}" for key, value in record.items()
                   if key in before and before[key] != value]
        if changed:
            raise ValueError(f"{out_dir} holds chunks of other frames, another chunk size or "
                             f"another method ({'; '.join(changed)}); label into a new "
                             "directory, or with the frames, chunk size and charge it was "
                             "begun with")
        return
    _check_unrecorded_chunks(out_dir, chunk_size, method)
    # Workers sharing the directory write the same record; each write is atomic.
    tmp = out_dir / f".{LABELLING_RECORD}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def _check_unrecorded_chunks(out_dir: Path, chunk_size: int, method: str) -> None:
    """Chunks written before the record: each must hold frames of its own index's range
    and the same method; an empty one (every frame failed) becomes the marker that now
    stands for it, since an empty extxyz file is no readable data set."""
    from ase.io import read

    for path in sorted(out_dir.glob("chunk_*.extxyz*")):
        chunk = int(path.name.split("_")[1].split(".")[0])
        if path.stat().st_size == 0 or not _has_frames(path):
            (out_dir / f".chunk_{chunk:05d}.all_failed").write_text(
                f"every frame of chunk {chunk} failed (an empty chunk file, replaced)\n")
            path.unlink()
            continue
        frames = read(path, index=":")
        indices = [int(atoms.info["frame_index"]) for atoms in frames]
        methods = {str(atoms.info.get("method", method)) for atoms in frames}
        if not all(chunk * chunk_size <= i < (chunk + 1) * chunk_size for i in indices) \
                or methods != {method}:
            raise ValueError(f"{path} holds frames {min(indices)}-{max(indices)} by "
                             f"{sorted(methods)}; chunk {chunk} of size {chunk_size} by "
                             f"{method!r} would hold {chunk * chunk_size}-"
                             f"{(chunk + 1) * chunk_size - 1}: resume with the chunk size "
                             "and charge the directory was begun with")


def _has_frames(path: Path) -> bool:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as handle:
        return bool(handle.readline().strip())


def _log_failure(path: Path, index: int, error: Exception) -> None:
    # A chunk interrupted after a failure is redone on resume: log each frame once.
    if path.exists():
        with path.open(newline="") as handle:
            if any(row and row[0] == str(index) for row in csv.reader(handle)):
                return
    new = not path.exists()
    message = str(error).splitlines()[0][:200] if str(error).strip() else ""
    with path.open("a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["frame_index", "reason"])
        writer.writerow([index, f"{type(error).__name__}: {message}" if message
                         else type(error).__name__])
