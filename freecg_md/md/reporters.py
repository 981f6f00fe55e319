"""The run directory: topology, per-replica trajectories, logs, demultiplexing index, config.

Layout of a run directory (all written by :class:`RunWriter`)::

    config.json          the run configuration, system size and package versions
    topology.pdb         the system (initial positions of replica 0)
    replica_000.dcd ...  one DCD per replica, positions in Å (DCD's unit; mdtraj.load
                         converts to nm), frame f taken at step frames.csv[f].step
    frames.csv           demultiplexing index: per saved frame, the step and, for every
                         temperature index k, the replica that held temperature k
                         (``replica_at_t{k}``); frame f of temperature k's trajectory is
                         frame f of ``replica_{replica_at_t{k}}.dcd``
    log.csv              per report: step, time, and per replica the potential and kinetic
                         energy (eV), instantaneous temperature (K; both from the BAOAB
                         mid-step velocities, see ReplicaState) and temperature index,
                         then per replica the largest force on any atom (eV/Å) and,
                         with a committee potential, its largest per-atom force
                         disagreement (eV/Å, ``fstd_r{r}_eV_A``)
    exchange.csv         per exchange attempt: step, attempt number, the temperature index of
                         every replica after it, and per neighbouring pair 1 (accepted),
                         0 (rejected) or -1 (not attempted in this round)
    remd_stats.json      acceptance matrices and round trips (rewritten at checkpoints)
    checkpoint.pt        see :mod:`freecg_md.md.checkpoint`

A frame records the temperature index its replica was simulated at while reaching it (the
report at a step comes before that step's exchange). Trajectory frames are buffered and
written ``flush_every`` at a time; ``frames.csv`` rows are written with them, so its length
always equals the number of frames on disk. The logs are flushed at every line. A checkpoint
is taken only after a flush, so its frame count never exceeds what is on disk, and on resume
:meth:`RunWriter.reopen` truncates every file back to the checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
from mdtraj.formats import DCDTrajectoryFile

from ..analysis.remd_stats import check_index
from ..io import write_text_atomic
from ..units import ANGSTROM_PER_NM

__all__ = [
    "FrameIndex",
    "RunWriter",
    "load_replica_trajectory",
    "load_temperature_trajectory",
    "package_versions",
    "read_frame_index",
    "topology_from_numbers",
    "trajectory_path",
]


RUN_DIRECTORY_README = """\
A run directory of freecg_md (units: Angstrom, fs, eV, K; mdtraj converts to nm and ps).

Times. A DCD file carries no times: mdtraj.load("replica_000.dcd", top="topology.pdb")
numbers its frames 0, 1, 2, ... The frames' steps and times are in frames.csv (columns
step and time_fs); frame f of every replica_*.dcd was taken at frames.csv row f. The
first frame is taken one report interval after the start, not at the start; the start
structure of replica 0 is topology.pdb. To get the times in ps:

    from freecg_md.md import load_replica_trajectory
    trajectory = load_replica_trajectory("THIS_DIRECTORY", 0)   # trajectory.time in ps

or, with mdtraj alone:

    import mdtraj, numpy
    trajectory = mdtraj.load("replica_000.dcd", top="topology.pdb")
    trajectory.time = numpy.loadtxt("frames.csv", delimiter=",", skiprows=1,
                                    usecols=2, ndmin=1) / 1000.0

Files: config.json (the run's settings and package versions), log.csv (per report: step,
time_fs, and per replica the potential and kinetic energy in eV, kinetic temperature in K
(both from the velocities in the middle of the Langevin step) and temperature index, then
per replica the largest force on an atom in eV/A, and with a committee of models its
largest per-atom force disagreement in eV/A), frames.csv
(per saved frame: which replica held each temperature), exchange.csv and remd_stats.json
(replica exchange), checkpoint.pt (to resume), equilibration/ (the equilibration stage, a
run directory of its own).
"""


def trajectory_path(directory: str | os.PathLike, replica: int) -> Path:
    """``directory/replica_{replica:03d}.dcd``."""
    return Path(directory) / f"replica_{replica:03d}.dcd"


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a run depends on."""
    import ase
    import e3nn
    import torch

    from .. import __version__

    return {
        "python": platform.python_version(), "freecg_md": __version__,
        "torch": torch.__version__, "numpy": np.__version__, "ase": ase.__version__,
        "mdtraj": mdtraj.__version__, "e3nn": e3nn.__version__,
    }


def topology_from_numbers(numbers: np.ndarray) -> mdtraj.Topology:
    """A minimal mdtraj topology: one chain, one residue ``MOL``, atoms named by element."""
    topology = mdtraj.Topology()
    residue = topology.add_residue("MOL", topology.add_chain())
    for z in np.asarray(numbers).tolist():
        element = mdtraj.element.Element.getByAtomicNumber(int(z))
        topology.add_atom(element.symbol, element, residue)
    return topology


def _cell_parameters(cell: np.ndarray, pbc: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """DCD unit cell (lengths Å, angles degrees), or None for a molecule."""
    if not np.any(pbc):
        return None
    a, b, c, alpha, beta, gamma = mdtraj.utils.box_vectors_to_lengths_and_angles(*cell)
    return np.array([a, b, c], np.float32), np.array([alpha, beta, gamma], np.float32)


def _truncate_csv(path: Path, last_step: int) -> int:
    """Keep the header and the rows whose ``step`` <= ``last_step``; returns rows kept."""
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][0] not in ("step", "frame"):
        raise ValueError(f"{path} has no header row; it is not a file this writer made")
    column = rows[0].index("step")
    kept = [row for row in rows[1:] if int(row[column]) <= last_step]
    text = "".join(",".join(row) + "\n" for row in [rows[0], *kept])
    write_text_atomic(path, text)
    return len(kept)


def _number(value: float) -> str:
    # repr round-trips a float64 exactly, so logs of identical runs are byte-identical.
    return repr(float(value))


class RunWriter:
    """Writes a run directory (see the module docstring); only one process may own it.

    Use :meth:`create` for a new run and :meth:`reopen` to continue from a checkpoint.
    """

    def __init__(self, directory: Path, n_replicas: int, cell: np.ndarray, pbc: np.ndarray,
                 flush_every: int) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every={flush_every}: expected a positive integer")
        self.directory = directory
        self.n_replicas = n_replicas
        self.flush_every = flush_every
        self.frames_written = 0
        self._cell = _cell_parameters(np.asarray(cell), np.asarray(pbc))
        self._pending: list[tuple[list[str], np.ndarray]] = []
        self._dcds: list[DCDTrajectoryFile] = []
        self._log = self._exchange = self._frames = None
        self._log_forces = True
        self._log_disagreement = False

    @classmethod
    def create(cls, directory: str | os.PathLike, topology: mdtraj.Topology,
               positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray,
               flush_every: int = 10, disagreement: bool = False) -> RunWriter:
        """Start a new run directory; ``positions`` (R, N, 3) Å are the initial positions;
        ``disagreement``: log a committee's force disagreement per replica."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        n_replicas, n_atoms = positions.shape[:2]
        if topology.n_atoms != n_atoms:
            raise ValueError(f"topology has {topology.n_atoms} atoms; the system has {n_atoms}")
        writer = cls(directory, n_replicas, cell, pbc, flush_every)
        frame = mdtraj.Trajectory(positions[:1] / ANGSTROM_PER_NM, topology)
        if np.any(pbc):
            frame.unitcell_vectors = (np.asarray(cell) / ANGSTROM_PER_NM)[None].astype(np.float32)
        frame.save_pdb(str(directory / "topology.pdb"))
        writer._dcds = [DCDTrajectoryFile(str(trajectory_path(directory, r)), "w")
                        for r in range(n_replicas)]
        (directory / "README.txt").write_text(RUN_DIRECTORY_README)
        replicas = range(n_replicas)
        log_header = ["step", "time_fs"] + [f"{name}_r{r}{unit}" for r in replicas for name, unit
                                           in (("epot", "_eV"), ("ekin", "_eV"), ("T", "_K"),
                                               ("tindex", ""))]
        # The largest force on any atom, per replica: last, so that the columns above keep
        # their places.
        log_header += [f"fmax_r{r}_eV_A" for r in replicas]
        if disagreement:
            log_header += [f"fstd_r{r}_eV_A" for r in replicas]
        writer._log_disagreement = disagreement
        writer._log = writer._open_csv("log.csv", log_header)
        writer._frames = writer._open_csv(
            "frames.csv", ["frame", "step", "time_fs"] + [f"replica_at_t{k}" for k in replicas])
        writer._exchange = writer._open_csv(
            "exchange.csv", ["step", "attempt"] + [f"tindex_r{r}" for r in replicas]
            + [f"pair_{k}_{k + 1}" for k in range(n_replicas - 1)])
        return writer

    @classmethod
    def reopen(cls, directory: str | os.PathLike, n_replicas: int, cell: np.ndarray,
               pbc: np.ndarray, n_frames: int, last_step: int, flush_every: int = 10
               ) -> RunWriter:
        """Continue a run directory from a checkpoint taken at ``last_step`` with ``n_frames``
        frames per trajectory: everything written after it is dropped."""
        directory = Path(directory)
        writer = cls(directory, n_replicas, cell, pbc, flush_every)
        for name in ("log.csv", "exchange.csv"):
            _truncate_csv(directory / name, last_step)
        kept = _truncate_csv(directory / "frames.csv", last_step)
        if kept != n_frames:
            raise ValueError(f"{directory}/frames.csv has {kept} frames up to step {last_step}; "
                             f"the checkpoint expects {n_frames}")
        writer._dcds = [writer._truncated_dcd(trajectory_path(directory, r), n_frames)
                        for r in range(n_replicas)]
        writer.frames_written = n_frames
        with open(directory / "log.csv") as handle:
            # A run begun before the largest forces were logged goes on without them.
            header = handle.readline()
            writer._log_forces = "fmax_r0_eV_A" in header
            writer._log_disagreement = "fstd_r0_eV_A" in header
        writer._log = open(directory / "log.csv", "a", newline="")  # noqa: SIM115
        writer._frames = open(directory / "frames.csv", "a", newline="")  # noqa: SIM115
        writer._exchange = open(directory / "exchange.csv", "a", newline="")  # noqa: SIM115
        return writer

    def _open_csv(self, name: str, header: list[str]):  # noqa: ANN202 - a text file
        handle = open(self.directory / name, "w", newline="")  # noqa: SIM115 - kept open
        handle.write(",".join(header) + "\n")
        handle.flush()
        return handle

    def _truncated_dcd(self, path: Path, n_frames: int) -> DCDTrajectoryFile:
        # mdtraj cannot append to a DCD: copy the frames to keep into a new file, move it
        # over the old one (atomic) and keep its handle open for the frames to come (the
        # open descriptor follows the renamed file).
        if n_frames == 0:  # nothing to keep (a run stopped before its first frame)
            path.unlink(missing_ok=True)
            return DCDTrajectoryFile(str(path), "w")
        with DCDTrajectoryFile(str(path), "r") as handle:
            available = len(handle)
            if available < n_frames:
                raise ValueError(f"{path} has {available} frames; the checkpoint expects "
                                 f"{n_frames}")
            xyz, lengths, angles = handle.read(n_frames=n_frames)
        tmp = path.with_name(f".{path.name}.tmp")
        handle = DCDTrajectoryFile(str(tmp), "w")
        handle.write(xyz, lengths, angles)
        os.replace(tmp, path)
        return handle

    def write_config(self, config: dict[str, Any]) -> None:
        """``config.json`` (atomically replaced): ``config`` plus package versions."""
        payload = {**config, "versions": package_versions()}
        write_text_atomic(self.directory / "config.json", json.dumps(payload, indent=2) + "\n")

    def report(self, step: int, time_fs: float, positions: np.ndarray, potential: np.ndarray,
               kinetic: np.ndarray, temperature: np.ndarray, tindex: np.ndarray,
               largest_force: np.ndarray, force_disagreement: np.ndarray | None = None
               ) -> None:
        """One report: positions (R, N, 3) Å, energies (R,) eV, temperature (R,) K, the
        temperature index (R,) each replica was simulated at, the largest force on any
        atom (R,) eV/Å and, with a committee, its largest per-atom force disagreement (R,)
        eV/Å."""
        values = [str(step), _number(time_fs)]
        for r in range(self.n_replicas):
            values += [_number(potential[r]), _number(kinetic[r]), _number(temperature[r]),
                       str(int(tindex[r]))]
        if self._log_forces:
            values += [_number(f) for f in largest_force]
        if self._log_disagreement:
            if force_disagreement is None:
                raise ValueError("this run logs a committee's force disagreement; the "
                                 "potential reported none (resumed with a single model?)")
            values += [_number(f) for f in force_disagreement]
        self._log.write(",".join(values) + "\n")
        self._log.flush()
        replica_at = np.argsort(np.asarray(tindex))
        index_row = [str(step), _number(time_fs)] + [str(int(r)) for r in replica_at]
        self._pending.append((index_row, np.asarray(positions, np.float32)))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def log_exchange(self, step: int, attempt: int, temperature_of_replica: np.ndarray,
                     outcome: np.ndarray) -> None:
        """One exchange round (see :meth:`ReplicaExchange.attempt`)."""
        values = [str(step), str(attempt)] + [str(int(t)) for t in temperature_of_replica]
        self._exchange.write(",".join(values + [str(int(o)) for o in outcome]) + "\n")
        self._exchange.flush()

    def write_stats(self, summary: dict[str, Any]) -> None:
        """``remd_stats.json`` (atomically replaced)."""
        write_text_atomic(self.directory / "remd_stats.json", json.dumps(summary, indent=2) + "\n")

    def flush(self) -> None:
        """Write the buffered frames and their index rows to disk."""
        if not self._pending:
            return
        xyz = np.stack([positions for _, positions in self._pending])  # (F, R, N, 3)
        cell = None
        if self._cell is not None:
            cell = [np.repeat(p[None], len(self._pending), axis=0) for p in self._cell]
        for r, handle in enumerate(self._dcds):
            handle.write(xyz[:, r], *(cell or (None, None)))
        for offset, (row, _) in enumerate(self._pending):
            self._frames.write(",".join([str(self.frames_written + offset), *row]) + "\n")
        self._frames.flush()
        self.frames_written += len(self._pending)
        self._pending = []

    def close(self) -> None:
        """Flush and close every file."""
        self.flush()
        for handle in self._dcds:
            handle.close()
        for handle in (self._log, self._frames, self._exchange):
            if handle is not None:
                handle.close()
        self._dcds = []
        self._log = self._frames = self._exchange = None


@dataclass(frozen=True)
class FrameIndex:
    """The demultiplexing index of a run directory (``frames.csv``).

    Attributes
    ----------
    steps:
        (F,) int64, the step of each saved frame.
    time_fs:
        (F,) float64.
    replica_of_temperature:
        (F, K) int64, the replica holding temperature index k at frame f.
    temperature_of_replica:
        (F, R) int64, its inverse: the temperature index of replica r at frame f.
    """

    steps: np.ndarray
    time_fs: np.ndarray
    replica_of_temperature: np.ndarray
    temperature_of_replica: np.ndarray


def read_frame_index(directory: str | os.PathLike) -> FrameIndex:
    """Read ``frames.csv`` of a run directory."""
    path = Path(directory) / "frames.csv"
    with open(path) as handle:
        columns = len(handle.readline().split(","))
        empty = not handle.readline().strip()  # a run stopped before its first frame
    data = (np.zeros((0, columns)) if empty
            else np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2).reshape(-1, columns))
    holders = data[:, 3:].astype(np.int64)
    return FrameIndex(data[:, 1].astype(np.int64), data[:, 2], holders,
                      np.argsort(holders, axis=1).astype(np.int64))


def load_replica_trajectory(directory: str | os.PathLike, replica: int) -> mdtraj.Trajectory:
    """Replica ``replica``'s trajectory (positions in nm, as mdtraj has them), with
    ``trajectory.time`` the frames' simulated times in ps (from ``frames.csv``; a plain
    ``mdtraj.load`` of a DCD numbers the frames 0, 1, 2... instead)."""
    directory = Path(directory)
    index = read_frame_index(directory)
    n_replicas = index.replica_of_temperature.shape[1]
    check_index("replica", replica, n_replicas, f" (the run has {n_replicas} replicas)")
    trajectory = mdtraj.load(str(trajectory_path(directory, replica)),
                             top=str(directory / "topology.pdb"))
    trajectory = trajectory[: len(index.steps)]
    trajectory.time = index.time_fs * 1e-3
    return trajectory


def load_temperature_trajectory(directory: str | os.PathLike, temperature_index: int
                                ) -> mdtraj.Trajectory:
    """The demultiplexed trajectory at ladder index ``temperature_index``: frame f taken from
    the replica that held that temperature at frame f."""
    index = read_frame_index(directory)
    n_replicas = index.replica_of_temperature.shape[1]
    check_index("temperature_index", temperature_index, n_replicas,
                f" (the run has {n_replicas} replicas)")
    holders = index.replica_of_temperature[:, temperature_index]
    first = None
    xyz = None
    for replica in np.unique(holders):
        trajectory = load_replica_trajectory(directory, int(replica))
        if xyz is None:
            first = trajectory
            xyz = np.empty((len(holders), trajectory.n_atoms, 3), np.float32)
        chosen = holders == replica
        xyz[chosen] = trajectory.xyz[: len(holders)][chosen]
    if first is None:
        raise ValueError(f"{directory}/frames.csv lists no frames")
    unitcell = None if first.unitcell_vectors is None else np.repeat(
        first.unitcell_vectors[:1], len(holders), axis=0)
    trajectory = mdtraj.Trajectory(xyz, first.topology, time=index.time_fs * 1e-3)
    trajectory.unitcell_vectors = unitcell
    return trajectory
