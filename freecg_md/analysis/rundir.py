"""Reading a run directory of the MD engines into arrays (see :mod:`freecg_md.md.reporters`).

This is the one place where the analysis meets the files: positions come back in Å (DCD
stores Å; mdtraj hands out nm, converted here once), energies in eV, times in ps.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mdtraj
import numpy as np

from ..units import ANGSTROM_PER_NM
from .remd_stats import check_permutations, frames_at_temperature
from .structure import chignolin_cvs
from .structure import rmsd as superposed_rmsd

__all__ = ["RunData", "exchange_history", "read_run", "run_label"]


@dataclass(frozen=True)
class RunData:
    """Everything the plots need from one run directory.

    Attributes
    ----------
    directory:
        The run directory.
    config:
        ``config.json`` as written by the run (``config["run"]`` is the RunConfig).
    temperatures:
        (K,) K, the ladder (for a run without exchanges, each replica's own temperature).
    steps, time_ps:
        (F,) the step and time of each saved frame.
    positions:
        (R, F, N, 3) float32 Å, replica r's frame f.
    energies:
        (F, R) float64 eV, replica r's potential energy at frame f.
    temperature_index:
        (F, R) int64, the ladder index replica r was simulated at when frame f was taken.
    topology:
        mdtraj topology of the N atoms (from ``topology.pdb``).
    kinetic_temperature:
        (F, R) float64 K, replica r's instantaneous kinetic temperature at frame f.
    largest_force:
        (F, R) float64 eV/Å, the largest force on any atom of replica r at frame f (NaN
        for runs written before it was logged).
    force_disagreement:
        (F, R) float64 eV/Å, a committee potential's largest per-atom force disagreement
        (NaN for a single model).
    """

    directory: Path
    config: dict
    temperatures: np.ndarray
    steps: np.ndarray
    time_ps: np.ndarray
    positions: np.ndarray
    energies: np.ndarray
    temperature_index: np.ndarray
    topology: mdtraj.Topology
    kinetic_temperature: np.ndarray
    largest_force: np.ndarray
    force_disagreement: np.ndarray

    def __repr__(self) -> str:  # the arrays would print thousands of numbers
        return f"RunData({self.label}, {self.directory})"

    @property
    def n_replicas(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.positions.shape[1])

    @property
    def label(self) -> str:
        """A short description for plot titles (:func:`run_label`)."""
        return run_label(self.directory.name, self.config, self.n_replicas, self.time_ps)

    def sampled_temperatures(self) -> np.ndarray:
        """(F, R) K, the bath temperature of each replica at each frame."""
        return self.temperatures[self.temperature_index]

    def frames_at(self, temperature_index: int, discard: float = 0.0
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Positions (F', N, 3) Å and energies (F',) eV of the frames simulated at ladder
        index ``temperature_index``, after dropping the first ``discard`` fraction of frames
        (equilibration)."""
        first = _first_kept(self.n_frames, discard)
        holders = frames_at_temperature(self.temperature_index[first:], temperature_index)
        frames = np.arange(first, self.n_frames)
        return self.positions[holders, frames], self.energies[frames, holders]


    # -- the interface the reports share with a ReducedRun (chignolin runs) -----------
    def cvs_of_replica(self, replica: int) -> np.ndarray:
        """(F, 2) Å, Asp3 O - Gly7 N and Glu5 O - Thr8 N of one replica's frames."""
        return chignolin_cvs(self.positions[replica], self.topology)

    def cvs_at(self, temperature_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(F, 2) Å distances and (F,) eV energies of the frames simulated at ladder index
        ``temperature_index`` (demultiplexed)."""
        positions, energies = self.frames_at(temperature_index)
        return chignolin_cvs(positions, self.topology), energies

    def native_positions(self) -> np.ndarray:
        """The shipped native chignolin, (N, 3) Å; ValueError if the run is another system."""
        from ..data.molecules import load_chignolin

        native = load_chignolin()
        if self.topology.n_atoms != native.topology.n_atoms or [
                r.name for r in self.topology.residues] != [
                r.name for r in native.topology.residues]:
            raise ValueError(f"the run's topology ({self.topology.n_atoms} atoms, "
                             f"{self.topology.n_residues} residues) is not the shipped "
                             "chignolin; pass the native structure explicitly")
        return native.native_positions

    def native_cvs(self) -> np.ndarray:
        """(2,) Å, the native structure's two distances."""
        return chignolin_cvs(self.native_positions()[None], self.topology)[0]

    def exchange_states(self) -> np.ndarray | None:
        """(A, R) temperature indices after each exchange attempt (``exchange.csv``), or
        None for a run without exchanges."""
        if not (self.directory / "exchange.csv").is_file():
            return None
        history, _ = exchange_history(self.directory, self.n_replicas)
        return history if len(history) else None

    def rmsd(self, selection: str = "ca", reference: np.ndarray | None = None) -> np.ndarray:
        """(R, F) Å, RMSD to the native structure (or ``reference``) after superposition."""
        reference = self.native_positions() if reference is None else np.asarray(reference)
        return np.stack([superposed_rmsd(self.positions[r], reference, self.topology, selection)
                         for r in range(self.n_replicas)]).reshape(self.n_replicas, -1)


def _first_kept(n_frames: int, discard: float) -> int:
    if not 0.0 <= discard < 1.0:
        raise ValueError(f"discard={discard!r}: expected a fraction in [0, 1)")
    return int(np.floor(discard * n_frames))


@contextlib.contextmanager
def _quiet_c_stdout() -> Iterator[None]:
    """Silence output written by C code to file descriptor 1 (mdtraj's DCD plugin prints
    two lines per file it opens)."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no real stdout (e.g. some notebook kernels): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; is {path.parent} a run directory?")
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        raise ValueError(f"{path} is empty; expected a header row")
    header = rows[0]
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}, line {number}: {len(row)} values for the "
                             f"{len(header)} columns of the header")
        for name, value in zip(header, row, strict=True):
            try:
                float(value)
            except ValueError:
                raise ValueError(f"{path}, line {number}, column {name!r}: {value!r} is not "
                                 "a number") from None
    data = np.array(rows[1:], dtype=np.float64).reshape(len(rows) - 1, len(header))
    return header, data


def _columns(header: list[str], names: list[str], path: Path) -> list[int]:
    """Indices of ``names`` in ``header``; a ValueError names the file and the column."""
    missing = [name for name in names if name not in header]
    if missing:
        raise ValueError(f"{path} has no column {missing[0]!r} (expected one per replica: "
                         f"{', '.join(names[:3])}...); is it from another version or run?")
    return [header.index(name) for name in names]


def read_run(directory: str | os.PathLike) -> RunData:
    """Load a run directory written by :func:`freecg_md.md.run_replicas`.

    Frames are those on disk (``frames.csv``); log lines past the last flushed frame (a run
    that was killed) are ignored.
    """
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing; is {directory} a run directory?")
    try:
        config = json.loads(config_path.read_text())
        temperatures = np.asarray(config["run"]["temperatures"], dtype=np.float64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{config_path} is not a run's config (no run.temperatures: "
                         f"{error})") from None
    n_replicas = temperatures.size

    frame_header, frames = _read_csv(directory / "frames.csv")
    log_header, log = _read_csv(directory / "log.csv")
    step_column, time_column = _columns(frame_header, ["step", "time_fs"],
                                        directory / "frames.csv")
    steps = frames[:, step_column].astype(np.int64)
    row_of_step = {int(step): row for row, step in enumerate(log[:, 0].astype(np.int64))}
    missing = [int(s) for s in steps if int(s) not in row_of_step]
    if missing:
        raise ValueError(f"{directory}/log.csv has no line for frame steps {missing[:5]}")
    rows = log[[row_of_step[int(s)] for s in steps]]
    log_path = directory / "log.csv"

    def columns(name: str) -> np.ndarray:
        names = [name.format(r=r) for r in range(n_replicas)]
        return rows[:, _columns(log_header, names, log_path)]

    energies = columns("epot_r{r}_eV")
    tindex = columns("tindex_r{r}")
    kinetic_temperature = columns("T_r{r}_K")
    largest_force = (columns("fmax_r{r}_eV_A") if "fmax_r0_eV_A" in log_header
                     else np.full_like(energies, np.nan))
    force_disagreement = (columns("fstd_r{r}_eV_A") if "fstd_r0_eV_A" in log_header
                          else np.full_like(energies, np.nan))

    topology = mdtraj.load_topology(str(directory / "topology.pdb"))
    positions = np.empty((n_replicas, len(steps), topology.n_atoms, 3), np.float32)
    for r in range(n_replicas if len(steps) else 0):  # no frames: no DCD was written
        path = directory / f"replica_{r:03d}.dcd"
        with _quiet_c_stdout():
            trajectory = mdtraj.load_dcd(str(path), top=topology)
        if trajectory.n_frames < len(steps):
            raise ValueError(f"{path} has {trajectory.n_frames} frames; frames.csv lists "
                             f"{len(steps)}")
        positions[r] = trajectory.xyz[: len(steps)] * ANGSTROM_PER_NM
    return RunData(directory, config, temperatures, steps,
                   frames[:, time_column] * 1e-3, positions, energies,
                   tindex.astype(np.int64), topology, kinetic_temperature, largest_force,
                   force_disagreement)


def run_label(name: str, config: dict, n_replicas: int, time_ps: np.ndarray) -> str:
    """``name (R replicas, L ps)`` for plot titles; "trajectories" for a run without
    exchanges (its config's ``run.exchange_interval`` is 0), whose replicas are independent."""
    length = time_ps[-1] if len(time_ps) else 0.0
    kind = "replicas" if config.get("run", {}).get("exchange_interval") else "trajectories"
    return f"{name} ({n_replicas} {kind}, {length:.4g} ps)"


def exchange_history(directory: str | os.PathLike, n_replicas: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(A, R) temperature index of each replica after each exchange attempt and (A, K-1)
    outcomes (1 accepted, 0 rejected, -1 not attempted), from ``exchange.csv``.

    Raises
    ------
    FileNotFoundError
        The run had no exchanges.
    ValueError
        A row is not a permutation of the temperature indices, or columns are missing.
    """
    path = Path(directory) / "exchange.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run had no exchanges")
    columns = 2 + 2 * n_replicas - 1
    with path.open() as handle:
        handle.readline()
        header_only = not handle.readline().strip()
    # A run without exchanges writes the header only: no rows, and no loadtxt warning.
    data = (np.zeros((0, columns)) if header_only
            else np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2))
    if data.size and data.shape[1] != columns:
        raise ValueError(f"{path} has {data.shape[1]} columns; expected {columns} for "
                         f"{n_replicas} replicas")
    data = data.reshape(-1, columns)
    # Checked before the cast to integers, which would truncate a stray 2.5 to 2.
    if len(data):
        try:
            check_permutations("tindex columns", data[:, 2:2 + n_replicas])
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    data = data.astype(np.int64)
    return data[:, 2:2 + n_replicas], data[:, 2 + n_replicas:]
