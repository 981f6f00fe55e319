"""Errors of models on conformations from their own MD, per basin (the paper's figure 5b).

:func:`pick_conformations` takes frames from several trajectories, at least ``spacing_ps``
apart within each, classified as folded (both distances within ``folded_radius`` of the
native point) or unfolded (farther than ``unfolded_radius``; the border between is left
out), taking from the trajectories in turn so that the picks spread over runs.
:func:`basin_statistics` summarises per-conformation errors per basin: the mean energy
error (the bias, signed), the mean absolute energy error and the force MAE, each with its
standard error over the conformations. :func:`errors_in_kcal` scores one model on one
labelled conformation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from ..units import KCAL_MOL_PER_EV
from .statistics import check_finite, mean_and_standard_error

__all__ = ["BasinErrors", "Pick", "basin_statistics", "errors_in_kcal", "pick_conformations"]


def errors_in_kcal(calculator: Calculator, atoms: Atoms, reference_energy: float,
                   reference_forces: np.ndarray) -> tuple[float, float]:
    """``calculator``'s energy error on ``atoms`` (model minus reference, kcal/mol) and its
    force MAE (kcal/mol/Å) against the reference energy (eV) and forces (N, 3) eV/Å."""
    probe = atoms.copy()  # without the reference's calculator
    probe.calc = calculator
    energy_error = (probe.get_potential_energy() - reference_energy) * KCAL_MOL_PER_EV
    force_mae = np.abs(probe.get_forces() - reference_forces).mean() * KCAL_MOL_PER_EV
    return float(energy_error), float(force_mae)


@dataclass(frozen=True)
class Pick:
    """One picked frame: trajectory index, frame index, time (ps), basin, distances (Å)."""

    trajectory: int
    frame: int
    time_ps: float
    basin: str
    cvs: tuple[float, float]


def pick_conformations(cvs: Sequence[np.ndarray], time_ps: Sequence[np.ndarray],
                       native: np.ndarray, per_basin: int = 20, spacing_ps: float = 1.0,
                       folded_radius: float = 1.5, unfolded_radius: float = 3.0,
                       start_ps: float = 0.0, spread: bool = False) -> list[Pick]:
    """Up to ``per_basin`` folded and ``per_basin`` unfolded frames.

    Parameters
    ----------
    cvs:
        Per trajectory, (F_t, 2) Å, the two distances of each frame.
    time_ps:
        Per trajectory, (F_t,) ps.
    native:
        (2,) Å, the native structure's point.
    per_basin, spacing_ps, folded_radius, unfolded_radius:
        See the module docstring.
    start_ps:
        Frames before this time are left out (an equilibration period).
    spread:
        Take each trajectory's picks evenly over all of its qualifying frames rather than
        the earliest ones: for a long run, so that the picks stand for all of it.

    Returns
    -------
    The picks, folded first, each basin in the order taken.
    """
    if len(cvs) != len(time_ps) or not cvs:
        raise ValueError(f"got {len(cvs)} trajectories of distances and {len(time_ps)} of "
                         "times; expected the same number, at least one")
    native = check_finite("native", native, ndim=1)
    if not 0 < folded_radius <= unfolded_radius or spacing_ps < 0 or per_basin < 1:
        raise ValueError(f"folded_radius={folded_radius}, unfolded_radius={unfolded_radius}, "
                         f"spacing_ps={spacing_ps}, per_basin={per_basin}: expected 0 < "
                         "folded <= unfolded, spacing >= 0, per_basin >= 1")
    candidates: dict[str, list[list[int]]] = {"folded": [], "unfolded": []}
    for t, (values, times) in enumerate(zip(cvs, time_ps, strict=True)):
        values = check_finite(f"cvs[{t}]", values, ndim=2)
        times = check_finite(f"time_ps[{t}]", times, ndim=1)
        if len(values) != len(times):
            raise ValueError(f"trajectory {t}: {len(values)} frames of distances, "
                             f"{len(times)} times")
        distance = np.linalg.norm(values - native, axis=1)
        for basin, inside in (("folded", distance <= folded_radius),
                              ("unfolded", distance > unfolded_radius)):
            spaced, last = [], -np.inf
            for frame in np.flatnonzero(inside & (times >= start_ps)).tolist():
                if times[frame] - last >= spacing_ps:
                    spaced.append(frame)
                    last = times[frame]
            candidates[basin].append(spaced)
    if spread:
        share = -(-per_basin // len(cvs))  # ceil: every trajectory's share of a basin
        for per_trajectory in candidates.values():
            for t, spaced in enumerate(per_trajectory):
                if len(spaced) > share:
                    keep = np.unique(np.linspace(0, len(spaced) - 1, share).round().astype(int))
                    per_trajectory[t] = [spaced[k] for k in keep]
    picks: list[Pick] = []
    for basin, per_trajectory in candidates.items():
        taken = 0
        queues = [list(frames) for frames in per_trajectory]
        while taken < per_basin and any(queues):
            for t, queue in enumerate(queues):  # one from each trajectory in turn
                if queue and taken < per_basin:
                    frame = queue.pop(0)
                    picks.append(Pick(t, frame, float(time_ps[t][frame]), basin,
                                      (float(cvs[t][frame][0]), float(cvs[t][frame][1]))))
                    taken += 1
    return picks


@dataclass(frozen=True)
class BasinErrors:
    """One model's errors on one basin's conformations (kcal/mol, kcal/mol/Å).

    ``bias`` is the mean signed energy error (model - reference); every ``*_error`` is a
    standard error of the mean over the ``n`` conformations.
    """

    model: str
    basin: str
    n: int
    bias: float
    bias_error: float
    energy_mae: float
    energy_mae_error: float
    force_mae: float
    force_mae_error: float


def basin_statistics(model: str, basins: Sequence[str], energy_error: np.ndarray,
                     force_mae: np.ndarray) -> list[BasinErrors]:
    """Per basin: bias, mean absolute energy error and force MAE with standard errors.

    ``basins`` (C,) the basin of each conformation, ``energy_error`` (C,) signed energy
    errors, ``force_mae`` (C,) per-conformation force MAEs.
    """
    basins = np.asarray(basins)
    energy_error = check_finite("energy_error", energy_error, ndim=1)
    force_mae = check_finite("force_mae", force_mae, ndim=1)
    if not len(basins) == len(energy_error) == len(force_mae):
        raise ValueError(f"{len(basins)} basins, {len(energy_error)} energy errors and "
                         f"{len(force_mae)} force MAEs: expected one of each per conformation")
    found = []
    for basin in dict.fromkeys(basins.tolist()):
        mine = basins == basin
        bias = mean_and_standard_error(energy_error[mine])
        absolute = mean_and_standard_error(np.abs(energy_error[mine]))
        forces = mean_and_standard_error(force_mae[mine])
        found.append(BasinErrors(model, str(basin), int(mine.sum()), *bias, *absolute,
                                 *forces))
    return found
