"""Is a chignolin run converged enough to quote a free energy? Explicit criteria, computed.

:func:`assess_run` reads what a verdict needs from a run directory's arrays and checks:

- **round trips**: every replica went from the lowest temperature to the highest and back
  at least ``min_round_trips`` times (replica exchange only);
- **kinetic temperature**: at every ladder temperature, the mean kinetic temperature of
  all the production frames simulated there is within ``max_temperature_deviation`` of it
  (the whole run: the equilibrated region below is that of the target temperature's
  observables, and cutting every rung to it only adds noise to a thermostat check);
- **samples per basin**: at the target temperature, at least ``min_samples_per_basin``
  decorrelated frames in the folded basin and as many outside it;
- **uncertainty**: the folding free energy's bootstrap standard error at most
  ``max_folding_error`` kcal/mol.

The equilibrated region starts where pymbar's equilibration detection says, taking the
latest start over the target temperature's potential energy and both distances, and the
samples are decorrelated with the largest statistical inefficiency of those series. A run
that misses any criterion gets ``converged: False`` with the reasons in words; figures and
summaries then show where the run went, without basin depths.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .remd_stats import round_trips
from .rundir import RunData

if TYPE_CHECKING:
    from .reduced import ReducedRun
from .statistics import (
    check_finite,
    decorrelated_indices,
    detect_equilibration,
    folded_mask,
    folding_free_energy,
)

__all__ = ["ConvergenceCriteria", "RunAssessment", "assess_run", "basin_changes"]


@dataclass(frozen=True)
class ConvergenceCriteria:
    """Thresholds of :func:`assess_run` (see the module docstring)."""

    min_round_trips: int = 2
    max_temperature_deviation: float = 0.03
    min_samples_per_basin: int = 20
    max_folding_error: float = 0.5
    folded_radius: float = 1.5


@dataclass
class RunAssessment:
    """The numbers behind a verdict, as written to ``convergence.json``.

    Attributes
    ----------
    temperature:
        K, the target temperature.
    start_frame, inefficiency:
        First equilibrated frame and the statistical inefficiency (frames) used.
    decorrelated_frames:
        Indices of the target temperature's decorrelated frames.
    n_folded, n_unfolded:
        Decorrelated frames in and outside the folded basin at the target temperature.
    n_transitions:
        Changes of basin between consecutive decorrelated frames at the target temperature
        (:func:`basin_changes`), folding and unfolding together.
    folded_fraction, folded_fraction_error:
        At the target temperature.
    folding_free_energy, folding_free_energy_error:
        kcal/mol, or None when a basin is empty (the error also when it is unbounded:
        some bootstrap resamples hold one basin only).
    round_trips:
        Per replica (empty without exchanges).
    kinetic_temperature_ratio:
        Per ladder temperature, mean kinetic temperature / target.
    converged:
        Every criterion holds.
    reasons:
        The criteria missed, in words.
    """

    temperature: float
    start_frame: int
    inefficiency: float
    decorrelated_frames: list[int]
    n_folded: int
    n_unfolded: int
    n_transitions: int
    folded_fraction: float
    folded_fraction_error: float
    folding_free_energy: float | None
    folding_free_energy_error: float | None
    round_trips: list[int]
    kinetic_temperature_ratio: list[float]
    converged: bool
    reasons: list[str] = field(default_factory=list)
    criteria: dict = field(default_factory=dict)

    def write(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = asdict(self)
        payload["decorrelated_frames"] = [int(f) for f in self.decorrelated_frames]
        path.write_text(json.dumps(payload, indent=2) + "\n")
        return path

    def verdict(self) -> str:
        """One line: converged, or not and why."""
        if self.converged:
            return "converged by the run's criteria"
        return "not converged: " + "; ".join(self.reasons)


def basin_changes(folded: np.ndarray) -> int:
    """How often consecutive samples change basin: ``sum(folded[k] != folded[k-1])``.

    ``folded`` (n,) bool, a time series of basin labels. Over the decorrelated frames of a
    replica-exchange run's temperature (the demultiplexed ensemble) consecutive samples may
    come from different replicas, so an exchange that brings an unfolded replica to that
    temperature counts as a change as well as folding within one trajectory; each counted
    change is between samples far enough apart to be independent.
    """
    folded = np.asarray(folded, dtype=bool).reshape(-1)
    return int(np.count_nonzero(folded[1:] != folded[:-1]))


def assess_run(run: RunData | ReducedRun, native_cvs: np.ndarray, temperature_index: int = 0,
               criteria: ConvergenceCriteria | None = None) -> RunAssessment:
    """Check a chignolin run against ``criteria`` at ladder index ``temperature_index``.

    Parameters
    ----------
    run:
        The run (:func:`~freecg_md.analysis.rundir.read_run`) or its reduced numbers
        (:class:`~freecg_md.analysis.reduced.ReducedRun`).
    native_cvs:
        (2,) Å, the native structure's two distances (the folded basin's centre).
    temperature_index:
        The target temperature's ladder index.
    criteria:
        Thresholds; the defaults of :class:`ConvergenceCriteria` when None.
    """
    criteria = criteria or ConvergenceCriteria()
    native_cvs = check_finite("native_cvs", native_cvs, ndim=1)
    if not 0 <= temperature_index < len(run.temperatures):
        raise ValueError(f"temperature_index={temperature_index}: the ladder has "
                         f"{len(run.temperatures)} temperatures")
    if run.n_frames < 3:
        raise ValueError(f"{run.label} has {run.n_frames} frames; expected at least 3")
    cvs, energies = run.cvs_at(temperature_index)
    series = [energies, cvs[:, 0], cvs[:, 1]]
    found = [detect_equilibration(s) for s in series]
    start = max(e.start for e in found)
    inefficiency = max(e.inefficiency for e in found)
    if start >= run.n_frames - 1:
        start = run.n_frames - 2
    frames = decorrelated_indices(run.n_frames, inefficiency, start)
    folded = folded_mask(cvs[frames], native_cvs, criteria.folded_radius)
    temperature = float(run.temperatures[temperature_index])
    # The decorrelated frames are independent samples: blocks of one.
    estimate = (folding_free_energy(folded, temperature) if len(frames) >= 2 else None)

    reasons = []
    trips: list[int] = []
    history = run.exchange_states()
    if history is not None and len(run.temperatures) > 1:
        start_row = np.arange(run.n_replicas)[None]
        trips = round_trips(np.concatenate([start_row, history])).tolist()
        if min(trips) < criteria.min_round_trips:
            reasons.append(f"round trips per replica {trips}, fewer than "
                           f"{criteria.min_round_trips} for some")
    ratios = []
    for k, target in enumerate(run.temperatures):
        at_k = run.temperature_index == k
        ratios.append(float(run.kinetic_temperature[at_k].mean() / target)
                      if at_k.any() else float("nan"))
    off = [f"{t:.0f} K: {r:.3f}" for t, r in zip(run.temperatures, ratios, strict=True)
           if not abs(r - 1) <= criteria.max_temperature_deviation]
    if off:
        reasons.append("mean kinetic temperature off its target by more than "
                       f"{criteria.max_temperature_deviation:.0%} ({', '.join(off)})")
    n_folded, n_unfolded = int(folded.sum()), int((~folded).sum())
    if min(n_folded, n_unfolded) < criteria.min_samples_per_basin:
        reasons.append(f"{n_folded} folded and {n_unfolded} unfolded decorrelated samples at "
                       f"{temperature:.0f} K (fewer than {criteria.min_samples_per_basin} in a "
                       "basin)")
    error = None if estimate is None else estimate.free_energy_error
    if error is None or not error <= criteria.max_folding_error:
        if error is None:
            why = "undefined (a basin is empty)"
        elif not np.isfinite(error):
            why = "unbounded in error (some bootstrap resamples hold one basin only)"
        else:
            why = f"uncertain by {error:.2f} kcal/mol"
        reasons.append(f"folding free energy {why} (limit {criteria.max_folding_error} "
                       "kcal/mol)")
    if error is not None and not np.isfinite(error):
        error = None  # recorded as null: strict JSON has no Infinity; the reason says why
    return RunAssessment(
        temperature=temperature, start_frame=int(start), inefficiency=float(inefficiency),
        decorrelated_frames=frames.tolist(), n_folded=n_folded, n_unfolded=n_unfolded,
        n_transitions=basin_changes(folded),
        folded_fraction=float("nan") if estimate is None else estimate.fraction,
        folded_fraction_error=float("nan") if estimate is None else estimate.fraction_error,
        folding_free_energy=None if estimate is None else estimate.free_energy,
        folding_free_energy_error=error, round_trips=trips,
        kinetic_temperature_ratio=ratios, converged=not reasons, reasons=reasons,
        criteria=asdict(criteria))
