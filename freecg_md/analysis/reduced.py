"""The numbers of a chignolin run without its trajectories: small enough to ship.

A :class:`ReducedRun` keeps, per replica and saved frame, the two distances of the
landscape, the Cα RMSD to the native structure, the potential energy, the kinetic
temperature, the largest force and the temperature index, plus the exchange history, the
run's config and the model's fingerprint. :func:`reduce_run` makes one from a run
directory, :func:`save_reduced` writes it as a compressed ``.npz`` (a few hundred kB for
tens of ps of 8 replicas), and the reports of :mod:`freecg_md.analysis.reports`
(landscape, convergence, melting curve, exchanges, RMSD) take either a
:class:`~freecg_md.analysis.rundir.RunData` or a :class:`ReducedRun`, so every shipped
figure is redrawn from the shipped numbers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .remd_stats import frames_at_temperature
from .rundir import RunData, read_run, run_label

__all__ = ["ReducedRun", "default_plot_dir", "load_reduced", "load_run", "reduce_run",
           "save_reduced"]

_ARRAYS = ("temperatures", "steps", "time_ps", "cvs", "ca_rmsd", "energies",
           "kinetic_temperature", "largest_force", "temperature_index", "exchange",
           "native")


@dataclass(frozen=True)
class ReducedRun:
    """A run's per-frame numbers (see the module docstring); shapes as in RunData.

    Attributes
    ----------
    name:
        A short name for titles (the run directory's name).
    config:
        The run's ``config.json``.
    temperatures:
        (K,) K.
    steps, time_ps:
        (F,).
    cvs:
        (R, F, 2) Å: Asp3 O - Gly7 N and Glu5 O - Thr8 N of replica r at frame f.
    ca_rmsd:
        (R, F) Å to the native structure.
    energies, kinetic_temperature, largest_force:
        (F, R): eV, K, eV/Å.
    temperature_index:
        (F, R).
    exchange:
        (A, R) temperature index of every replica after each exchange attempt ((0, R)
        without exchanges).
    native:
        (2,) Å, the native structure's two distances.
    model_fingerprint:
        :func:`~freecg_md.io.model_fingerprint` of the model that ran it ("" if unknown).
    """

    name: str
    config: dict
    temperatures: np.ndarray
    steps: np.ndarray
    time_ps: np.ndarray
    cvs: np.ndarray
    ca_rmsd: np.ndarray
    energies: np.ndarray
    kinetic_temperature: np.ndarray
    largest_force: np.ndarray
    temperature_index: np.ndarray
    exchange: np.ndarray
    native: np.ndarray
    model_fingerprint: str = ""

    def __repr__(self) -> str:  # the arrays would print thousands of numbers
        return f"ReducedRun({self.label}, model {self.model_fingerprint[:12] or 'unknown'})"

    @property
    def n_replicas(self) -> int:
        return int(self.cvs.shape[0])

    @property
    def n_frames(self) -> int:
        return int(self.cvs.shape[1])

    @property
    def label(self) -> str:
        return run_label(self.name, self.config, self.n_replicas, self.time_ps)

    def sampled_temperatures(self) -> np.ndarray:
        return self.temperatures[self.temperature_index]

    def cvs_at(self, temperature_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(F, 2) Å distances and (F,) eV energies of the frames simulated at ladder index
        ``temperature_index`` (demultiplexed)."""
        holders = frames_at_temperature(self.temperature_index, temperature_index)
        frames = np.arange(self.n_frames)
        return self.cvs[holders, frames], self.energies[frames, holders]

    def native_cvs(self) -> np.ndarray:
        return self.native

    def exchange_states(self) -> np.ndarray | None:
        """(A, R) temperature indices after each exchange attempt, or None."""
        return self.exchange if len(self.exchange) else None

    def rmsd(self) -> np.ndarray:
        """(R, F) Å, the Cα RMSD to the native structure."""
        return self.ca_rmsd


def reduce_run(run: RunData, model_fingerprint: str = "", name: str | None = None
               ) -> ReducedRun:
    """The per-frame numbers of a chignolin run directory, named ``name`` in figures
    (default: the directory's name)."""
    cvs = np.stack([run.cvs_of_replica(r) for r in range(run.n_replicas)])
    exchange = run.exchange_states()
    return ReducedRun(
        name or run.directory.name, run.config, run.temperatures, run.steps, run.time_ps, cvs,
        run.rmsd(), run.energies, run.kinetic_temperature, run.largest_force,
        run.temperature_index,
        np.zeros((0, run.n_replicas), np.int64) if exchange is None else exchange,
        run.native_cvs(), model_fingerprint)


def save_reduced(reduced: ReducedRun, path: str | os.PathLike) -> Path:
    """Write a compressed ``.npz`` of plain arrays (no pickles)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {name: np.asarray(getattr(reduced, name)) for name in _ARRAYS}
    np.savez_compressed(path, **arrays, name=np.asarray(reduced.name),
                        config=np.asarray(json.dumps(reduced.config)),
                        model_fingerprint=np.asarray(reduced.model_fingerprint))
    return path


def load_reduced(path: str | os.PathLike) -> ReducedRun:
    """Read a file written by :func:`save_reduced`.

    Raises
    ------
    FileNotFoundError
        No such file.
    ValueError
        A field is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reduced run {str(path)!r} does not exist")
    with np.load(path, allow_pickle=False) as data:
        missing = [n for n in (*_ARRAYS, "name", "config", "model_fingerprint")
                   if n not in data.files]
        if missing:
            raise ValueError(f"{path} lacks {missing}; expected a file written by "
                             "freecg_md.analysis.reduced.save_reduced")
        arrays = {name: data[name] for name in _ARRAYS}
        return ReducedRun(str(data["name"]), json.loads(str(data["config"])),
                          model_fingerprint=str(data["model_fingerprint"]), **arrays)


def load_run(path: str | os.PathLike) -> RunData | ReducedRun:
    """A run directory (:func:`~freecg_md.analysis.rundir.read_run`) or a reduced run's
    ``.npz`` (:func:`load_reduced`), by what ``path`` is."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return load_reduced(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; expected a run directory or a "
                                "reduced run (.npz)")
    return read_run(path)


def default_plot_dir(path: str | os.PathLike) -> Path:
    """Where the analysis scripts write by default: ``RUN/plots``, or ``plots/`` beside a
    reduced run's file."""
    path = Path(path)
    return path.parent / "plots" if path.is_file() else path / "plots"
