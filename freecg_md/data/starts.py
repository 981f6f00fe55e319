"""Thermalised start states of chignolin: positions and velocities per temperature rung.

A start-state file is an ``.npz`` of plain arrays (no pickles) written by
:func:`save_start_states` (``simulations/prepare_starts.py`` makes the shipped one,
``chignolin_starts.npz``, equilibrated with the shipped model at each temperature of the
default ladder, 300-450 K in 8 geometric steps, rungs alternately folded and unfolded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
import torch
from ase import Atoms

from ..md.state import ReplicaState

__all__ = ["StartStates", "initial_replicas", "load_chignolin_starts", "load_start_states",
           "save_start_states"]

SHIPPED_STARTS = "chignolin_starts.npz"


@dataclass(frozen=True)
class StartStates:
    """R equilibrated states of one system, one per temperature.

    Attributes
    ----------
    positions:
        (R, N, 3) float64, Å.
    velocities:
        (R, N, 3) float64, Å/fs (ASE masses; centre-of-mass motion removed).
    temperatures:
        (R,) float64, K: the temperature each state was equilibrated at.
    cvs:
        (R, 2) float64, Å: Asp3 O - Gly7 N and Glu5 O - Thr8 N of each final state.
    started_unfolded:
        (R,) bool: the state's equilibration started from an unfolded conformation.
    model_fingerprint:
        :func:`~freecg_md.io.model_fingerprint` of the model that equilibrated them (its
        config and weights; a file whose metadata changed keeps it).
    info:
        Everything else recorded (equilibration length, friction, seed, diagnostics).
    path:
        The file they were read from.
    """

    positions: np.ndarray
    velocities: np.ndarray
    temperatures: np.ndarray
    cvs: np.ndarray
    started_unfolded: np.ndarray
    model_fingerprint: str
    info: dict[str, Any]
    path: Path

    def __repr__(self) -> str:  # the arrays would print thousands of numbers
        kelvin = ", ".join(f"{t:.0f}" for t in self.temperatures)
        return (f"StartStates({self.n_states} states of {self.positions.shape[1]} atoms at "
                f"{kelvin} K, {self.path.name})")

    @property
    def n_states(self) -> int:
        return int(self.positions.shape[0])

    def for_temperatures(self, temperatures: np.ndarray | list[float],
                         tolerance_K: float = 0.5) -> tuple[np.ndarray, np.ndarray | None]:
        """Start positions and velocities for replicas at ``temperatures`` (K).

        Replica r takes state ``r mod n_states``. The velocities come with them only when
        every replica's temperature is within ``tolerance_K`` of its state's (the states'
        own ladder); otherwise None, and the caller draws Maxwell-Boltzmann velocities.

        Returns
        -------
        positions:
            (R, N, 3) Å.
        velocities:
            (R, N, 3) Å/fs, or None.
        """
        temperatures = np.asarray(temperatures, np.float64).reshape(-1)
        chosen = np.arange(temperatures.size) % self.n_states
        positions = self.positions[chosen].copy()
        if np.all(np.abs(self.temperatures[chosen] - temperatures) <= tolerance_K):
            return positions, self.velocities[chosen].copy()
        return positions, None


def save_start_states(path: str | os.PathLike, *, positions: np.ndarray,
                      velocities: np.ndarray, temperatures: np.ndarray, cvs: np.ndarray,
                      started_unfolded: np.ndarray, model_fingerprint: str,
                      **info: Any) -> Path:
    """Write start states (see :class:`StartStates`); ``info`` must be JSON-serialisable
    (numpy arrays are stored as lists)."""
    positions = np.asarray(positions, np.float64)
    if positions.ndim != 3 or positions.shape[-1] != 3:
        raise ValueError(f"positions has shape {positions.shape}; expected (R, N, 3)")
    velocities = np.asarray(velocities, np.float64)
    if velocities.shape != positions.shape:
        raise ValueError(f"velocities has shape {velocities.shape}; expected {positions.shape}")
    plain = {key: value.tolist() if isinstance(value, np.ndarray) else value
             for key, value in info.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path, positions=positions, velocities=velocities,
        temperatures=np.asarray(temperatures, np.float64), cvs=np.asarray(cvs, np.float64),
        started_unfolded=np.asarray(started_unfolded, bool),
        model_fingerprint=np.asarray(model_fingerprint), info=np.asarray(json.dumps(plain)))
    return path


def load_start_states(path: str | os.PathLike) -> StartStates:
    """Read a file written by :func:`save_start_states`.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        The file lacks a field or its arrays disagree in shape.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"start-state file {str(path)!r} does not exist")
    fields = ("positions", "velocities", "temperatures", "cvs", "started_unfolded",
              "model_fingerprint", "info")
    with np.load(path, allow_pickle=False) as data:
        missing = [name for name in fields if name not in data.files]
        if missing:
            raise ValueError(f"{path} lacks {missing}; expected a file written by "
                             "freecg_md.data.save_start_states")
        arrays = {name: data[name] for name in fields}
    n_states = arrays["positions"].shape[0]
    for name in ("velocities", "temperatures", "cvs", "started_unfolded"):
        if arrays[name].shape[0] != n_states:
            raise ValueError(f"{path}: {name} has {arrays[name].shape[0]} rows; positions "
                             f"has {n_states}")
    return StartStates(arrays["positions"], arrays["velocities"], arrays["temperatures"],
                       arrays["cvs"], arrays["started_unfolded"], str(arrays["model_fingerprint"]),
                       json.loads(str(arrays["info"])), path)


def load_chignolin_starts() -> StartStates:
    """The shipped start states of chignolin (see the module docstring)."""
    return load_start_states(Path(str(resources.files("freecg_md.data").joinpath(
        SHIPPED_STARTS))))


def initial_replicas(initial: str | os.PathLike | None, atoms: Atoms,
                     temperatures: np.ndarray | list[float]) -> tuple[ReplicaState, bool, str]:
    """The start of a run of ``len(temperatures)`` replicas of ``atoms``' system.

    Parameters
    ----------
    initial:
        ``"native"`` or None: every replica at ``atoms``' positions. ``"shipped"``: the
        shipped chignolin start states (:func:`load_chignolin_starts`). A path ending in
        ``.npz``: a start-state file (:func:`save_start_states`). Any other path: a file
        ASE reads (extxyz, pdb, traj...), replica r at frame ``r mod n_frames``.
    atoms:
        The system (numbers, masses, cell); the start's atoms must be these, in this order.
    temperatures:
        (R,) K, each replica's temperature.

    Returns
    -------
    state:
        The replicas; velocities are set when a start-state file matched the temperatures.
    draw_velocities:
        True when the run must draw Maxwell-Boltzmann velocities (none came with the start).
    description:
        One line saying where the replicas start, for the run's log.
    """
    temperatures = np.asarray(temperatures, np.float64).reshape(-1)
    n_replicas = temperatures.size
    if initial is None or str(initial) == "native":
        return ReplicaState.from_atoms(atoms, n_replicas), True, "the native structure"
    if str(initial) == "shipped" or str(initial).endswith(".npz"):
        starts = (load_chignolin_starts() if str(initial) == "shipped"
                  else load_start_states(initial))
        if starts.positions.shape[1] != len(atoms):
            raise ValueError(f"{starts.path} holds states of {starts.positions.shape[1]} atoms; "
                             f"the system has {len(atoms)}")
        positions, velocities = starts.for_temperatures(temperatures)
        state = ReplicaState.from_atoms(atoms, n_replicas)
        state.positions = torch.tensor(positions)
        if velocities is None:
            return state, True, (f"positions of {starts.path.name} (equilibrated at other "
                                 "temperatures; velocities drawn afresh)")
        state.velocities = torch.tensor(velocities)
        return state, False, (f"the equilibrated states of {starts.path.name} (positions and "
                              f"velocities; model fingerprint {starts.model_fingerprint[:12]})")
    frames = ase.io.read(initial, ":")
    if not np.array_equal(frames[0].numbers, atoms.numbers):
        raise ValueError(f"{initial}: its atoms are not the system's {len(atoms)} atoms in "
                         "the same order")
    state = ReplicaState.from_frames(frames, n_replicas)
    state.masses = torch.tensor(atoms.get_masses())
    return state, True, f"{len(frames)} conformations of {initial}"
