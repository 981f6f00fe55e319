"""From a run directory to figures and the CSV files behind them.

Each ``*_report`` function reads what it needs from a :class:`~.rundir.RunData`, computes
with the pure functions of this package, writes PNG and CSV files into ``out_dir`` and
returns the numbers (for scripts, the flagship's summary and tests).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator

from .conformations import errors_in_kcal
from .convergence import ConvergenceCriteria, assess_run
from .landscape import (
    Landscape,
    folded_unfolded_basins,
    free_energy_2d,
    mbar_free_energy_2d,
)
from .plots import (
    plot_conformation_errors,
    plot_landscapes,
    plot_melting_curve,
    plot_overlay,
    plot_remd,
    plot_rmsd_band,
)
from .reduced import ReducedRun
from .remd_stats import acceptance_per_pair, exchange_counts, round_trips
from .rundir import RunData
from .statistics import (
    decorrelated_indices,
    folded_mask,
    folding_free_energy,
    melting_temperature,
    statistical_inefficiency,
)
from .structure import chignolin_cvs

__all__ = ["basin_summary", "conformation_errors_report", "landscape_report", "overlay_report",
           "remd_report", "rmsd_report"]

CV_LABELS = ("Asp3 O – Gly7 N distance (Å)", "Glu5 O – Thr8 N distance (Å)")


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _landscape_csv(path: Path, landscape: Landscape) -> Path:
    rows = [[f"{x:.4f}", f"{y:.4f}", "" if np.isnan(f) else f"{f:.4f}"]
            for i, x in enumerate(landscape.x_centers)
            for j, y in enumerate(landscape.y_centers)
            for f in [landscape.free_energy[i, j]]]
    return _write_csv(path, ["x_A", "y_A", "free_energy_kcal_mol"], rows)


def _cv_ranges(values: np.ndarray, native: np.ndarray) -> tuple[tuple[float, float], ...]:
    """Histogram ranges covering every sample and the native point, padded by 0.25 Å."""
    low = np.minimum(values.min(axis=0), native) - 0.25
    high = np.maximum(values.max(axis=0), native) + 0.25
    return tuple((float(a), float(b)) for a, b in zip(low, high, strict=True))


def _decorrelated_cvs_at(run: RunData | ReducedRun, temperature_index: int, start: int,
                         inefficiency: float, own: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Distances (F', 2) Å and energies (F',) eV of the decorrelated frames simulated at
    ladder index ``temperature_index``, from frame ``start`` on, ``inefficiency`` frames
    apart or, with ``own``, this temperature's own statistical inefficiency of its energies
    and distances from ``start`` where that is longer (the melting curve counts each
    temperature's frames as independent samples)."""
    cvs, energies = run.cvs_at(temperature_index)
    if own and start < run.n_frames - 1:
        inefficiency = max(inefficiency, *(statistical_inefficiency(series[start:])
                                           for series in (energies, cvs[:, 0], cvs[:, 1])))
    frames = decorrelated_indices(run.n_frames, inefficiency, start)
    return cvs[frames], energies[frames]


def landscape_report(run: RunData | ReducedRun, out_dir: str | os.PathLike,
                     temperature_index: int = 0, bins: int = 30,
                     folded_radius: float | None = None, unfolded_radius: float = 3.0,
                     criteria: ConvergenceCriteria | None = None) -> dict[str, object]:
    """The chignolin landscape over the paper's two distances at ladder index
    ``temperature_index``, with its convergence verdict.

    The run is assessed first (:func:`~.convergence.assess_run`: equilibration detection,
    decorrelation, round trips, kinetic temperatures, samples per basin, the folding free
    energy's error). The histogram uses the decorrelated frames at the target temperature;
    with several temperatures, MBAR reweights the decorrelated frames of all of them, and
    the folded fraction per temperature (a melting curve) is estimated with bootstrap errors.
    Basin depths are drawn and returned only for a converged run; otherwise the figure's
    title says why not and the panels show the sampled bins.

    Writes ``landscape.png``, for a converged run ``landscape_histogram.csv`` and
    ``landscape_mbar.csv`` (with several temperatures), ``basins.csv``, ``melting.csv``,
    ``melting.json`` (a two-state fit's melting temperature,
    :func:`~.statistics.melting_temperature`, with the run's verdict) and ``melting.png``
    (with several temperatures; the fit drawn only for a converged run) and
    ``convergence.json``; returns the verdict, basins and paths.
    """
    out = Path(out_dir)
    native = run.native_cvs()
    # One radius decides folded for the verdict, the melting curve and the basins: the
    # criteria's (1.5 Å by default), or folded_radius where given.
    if criteria is None:
        criteria = ConvergenceCriteria() if folded_radius is None else ConvergenceCriteria(
            folded_radius=folded_radius)
    elif folded_radius is not None and folded_radius != criteria.folded_radius:
        raise ValueError(f"folded_radius={folded_radius} and criteria.folded_radius="
                         f"{criteria.folded_radius}: expected one radius (give it once)")
    folded_radius = criteria.folded_radius
    assessment = assess_run(run, native, temperature_index, criteria)
    assessment.write(out / "convergence.json")
    start, g = assessment.start_frame, assessment.inefficiency
    # The target's frames are the assessment's; with a ladder, the other temperatures'
    # spacing is at least their own (their frames enter MBAR and the melting curve).
    ladder = np.unique(run.temperatures).size > 1
    per_temperature = [_decorrelated_cvs_at(run, k, start, g,
                                            own=ladder and k != temperature_index)
                       for k in range(len(run.temperatures))]
    all_cvs = [cvs for cvs, _ in per_temperature]
    target_cvs = all_cvs[temperature_index]
    ranges = _cv_ranges(np.concatenate(all_cvs), native)
    temperature = float(run.temperatures[temperature_index])

    panels = [("histogram", free_energy_2d(target_cvs[:, 0], target_cvs[:, 1], temperature,
                                           bins, ranges))]
    result: dict[str, object] = {}
    if np.unique(run.temperatures).size > 1:
        cvs = np.concatenate(all_cvs)
        energies = np.concatenate([e for _, e in per_temperature])
        sampled = np.concatenate([np.full(len(e), t) for (_, e), t
                                  in zip(per_temperature, run.temperatures, strict=True)])
        mbar = mbar_free_energy_2d(cvs[:, 0], cvs[:, 1], energies, sampled, temperature,
                                   bins, ranges)
        panels.append(("MBAR over all temperatures", mbar))
        melting = [folding_free_energy(folded_mask(c, native, criteria.folded_radius), t)
                   if len(c) >= 2 else None
                   for c, t in zip(all_cvs, run.temperatures, strict=True)]
        fraction = np.array([np.nan if m is None else m.fraction for m in melting])
        error = np.array([np.nan if m is None else m.fraction_error for m in melting])
        _write_csv(out / "melting.csv", ["temperature_K", "decorrelated_samples",
                                         "folded_fraction", "folded_fraction_error"],
                   [[f"{t:.2f}", len(c), f"{f:.4f}", f"{e:.4f}"] for t, c, f, e
                    in zip(run.temperatures, all_cvs, fraction, error, strict=True)])
        samples = np.array([len(c) for c in all_cvs])
        fit = melting_temperature(run.temperatures, fraction, error, samples)
        (out / "melting.json").write_text(json.dumps({
            "model": "two-state, temperature-independent enthalpy: folded fraction "
                     "1 / (1 + exp(dH (1 - T/Tm) / kT)), weighted least squares",
            "fit": None if fit is None else asdict(fit),
            "converged": assessment.converged}, indent=2) + "\n")
        result["melting_fit"] = None if fit is None else asdict(fit)
        result["melting_png"] = plot_melting_curve(
            run.temperatures, fraction, error,
            f"folded fraction (within {criteria.folded_radius} Å of native), {run.label}; "
            + ("converged by the run's criteria" if assessment.converged else
               "NOT CONVERGED, the fractions say where the replicas were, not an "
               f"equilibrium: {assessment.verdict().removeprefix('not converged: ')}"),
            # The fitted curve only for a converged run: otherwise the fractions are where
            # the replicas happened to be, and a melting temperature would read as a result.
            out / "melting.png", fit=fit if assessment.converged else None)
    for name, landscape in panels:
        if assessment.converged:
            _landscape_csv(out / f"landscape_{name.split()[0].lower()}.csv", landscape)

    basins = {name: folded_unfolded_basins(landscape, tuple(native), folded_radius,
                                           unfolded_radius)
              for name, landscape in panels}
    depth = assessment.converged
    rows = [[method, b.name, f"{b.free_energy:.4f}" if depth and np.isfinite(b.free_energy)
             else "", *(f"{v:.4f}" for v in (b.x, b.y))]
            for method, pair in basins.items() for b in pair]
    _write_csv(out / "basins.csv", ["method", "basin", "free_energy_kcal_mol", "x_A", "y_A"],
               rows)
    title = (f"chignolin, {run.label}: {len(target_cvs)} decorrelated frames at "
             f"{temperature:.0f} K (from frame {start}, every {g:.1f}); "
             + ("converged by the run's criteria" if depth else
                "NOT CONVERGED, no depths shown:\n" + "; ".join(assessment.reasons)))
    png = plot_landscapes(panels, list(basins.values()), tuple(native), CV_LABELS, title,
                          out / "landscape.png", depths=depth)
    summary = {method: [{**asdict(b), "free_energy": b.free_energy if depth else None,
                         "visited": bool(np.isfinite(b.x))} for b in pair]
               for method, pair in basins.items()}
    return {"png": png, "native_cvs": native.tolist(), "n_target_frames": len(target_cvs),
            "converged": depth, "verdict": assessment.verdict(),
            "assessment": asdict(assessment), "basins": summary, **result}


def basin_summary(basins: list[dict[str, object]]) -> str:
    """One line per landscape for a printed summary: a depth only where one was computed
    (a converged run), "not visited" where the run never went."""
    parts = []
    for b in basins:
        if not b["visited"]:
            parts.append(f"{b['name']} not visited")
        elif b["free_energy"] is None:
            parts.append(f"{b['name']} visited around ({b['x']:.2f}, {b['y']:.2f}) Å")
        else:
            parts.append(f"{b['name']} {b['free_energy']:.2f} kcal/mol at ({b['x']:.2f}, "
                         f"{b['y']:.2f}) Å")
    return "; ".join(parts)


def rmsd_report(run: RunData | ReducedRun, out_dir: str | os.PathLike, selection: str = "ca",
                reference: np.ndarray | None = None) -> dict[str, object]:
    """RMSD to the native structure of every replica's trajectory: ``rmsd.png`` (mean with
    a ±1 standard deviation band) and ``rmsd.csv`` (time, mean, std, one column per
    replica). A reduced run has the Cα RMSD only."""
    out = Path(out_dir)
    if isinstance(run, RunData):
        values = run.rmsd(selection, reference)
    elif selection != "ca" or reference is not None:
        raise ValueError("a reduced run has the Cα RMSD to the native structure only; "
                         "expected selection='ca' and no reference")
    else:
        values = run.rmsd()
    mean, std = values.mean(axis=0), values.std(axis=0)
    rows = [[f"{t:.4f}", f"{m:.4f}", f"{s:.4f}", *(f"{v:.4f}" for v in values[:, f])]
            for f, (t, m, s) in enumerate(zip(run.time_ps, mean, std, strict=True))]
    _write_csv(out / "rmsd.csv", ["time_ps", "mean_A", "std_A"]
               + [f"replica_{r}_A" for r in range(run.n_replicas)], rows)
    label = {"ca": "Cα", "backbone": "backbone", "heavy": "heavy-atom"}.get(selection,
                                                                           selection)
    temps = sorted({f"{t:.0f} K" for t in run.temperatures})
    png = plot_rmsd_band(run.time_ps, values, f"{label} RMSD, {run.label}, {', '.join(temps)}",
                         out / "rmsd.png", label)
    return {"png": png, "final_mean_A": float(mean[-1]), "final_std_A": float(std[-1]),
            "overall_mean_A": float(values.mean())}


def remd_report(run: RunData | ReducedRun, out_dir: str | os.PathLike) -> dict[str, object]:
    """Acceptance per neighbouring pair and the replicas' walks: ``remd.png``,
    ``acceptance.csv`` and ``remd_summary.json`` (acceptance, round trips per replica)."""
    out = Path(out_dir)
    history = run.exchange_states()
    if history is None:
        raise FileNotFoundError(f"{run.label} has no exchanges")
    # Every replica starts at its own temperature index, before the first attempt.
    states = np.concatenate([np.arange(run.n_replicas)[None], history])
    accepted, attempted = exchange_counts(states)
    acceptance = acceptance_per_pair(states)
    trips = round_trips(states)
    t = run.temperatures
    _write_csv(out / "acceptance.csv",
               ["pair", "T_low_K", "T_high_K", "attempts", "accepted", "acceptance"],
               [[k, f"{t[k]:.2f}", f"{t[k + 1]:.2f}", int(attempted[k]), int(accepted[k]),
                 "" if np.isnan(acceptance[k]) else f"{acceptance[k]:.4f}"]
                for k in range(len(t) - 1)])
    summary = {"temperatures_K": t.tolist(), "attempts": len(history),
               "acceptance": [None if np.isnan(a) else float(a) for a in acceptance],
               "round_trips": trips.tolist()}
    (out / "remd_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    png = plot_remd(t, acceptance, run.time_ps, run.temperature_index,
                    f"replica exchange, {run.label}", out / "remd.png")
    return {"png": png, **summary}


def _pick(cvs: np.ndarray, time_ps: np.ndarray, point: tuple[float, float], count: int,
          taken: list[int], min_spacing_ps: float) -> list[int]:
    """``count`` frames nearest to ``point`` in CV space, each at least ``min_spacing_ps``
    of simulated time from every frame already chosen (and from ``taken``), so that no two
    picks are near copies of one another."""
    order = np.argsort(np.hypot(cvs[:, 0] - point[0], cvs[:, 1] - point[1]))
    chosen: list[int] = []
    for frame in order.tolist():
        if any(abs(time_ps[frame] - time_ps[c]) < min_spacing_ps for c in [*taken, *chosen]):
            continue
        chosen.append(frame)
        if len(chosen) == count:
            break
    return chosen


def conformation_errors_report(run: RunData, models: Mapping[str, Calculator],
                               reference: Calculator, out_dir: str | os.PathLike,
                               temperature_index: int = 0, discard: float = 0.2,
                               per_basin: int = 3, charge: int | None = -2,
                               min_spacing_ps: float = 1.0) -> dict[str, object]:
    """Energy and force errors of each model against ``reference`` on conformations picked
    from the landscape: ``per_basin`` frames nearest the folded basin's minimum and
    ``per_basin`` nearest the unfolded basin's (figure 5b of the FreeCG paper).

    Picks lie at least ``min_spacing_ps`` apart in simulated time (fewer are taken when the
    run is too short for that). When the run never left the folded basin, the "unfolded"
    picks are the frames farthest from the native point and are labelled ``far`` instead.
    Writes ``conformation_errors.csv`` and ``conformation_errors.png`` (kcal/mol).
    """
    out = Path(out_dir)
    native = run.native_cvs()
    positions, _ = run.frames_at(temperature_index, discard)
    time_ps = run.time_ps[run.n_frames - len(positions):]
    cvs = chignolin_cvs(positions, run.topology)
    temperature = float(run.temperatures[temperature_index])
    landscape = free_energy_2d(cvs[:, 0], cvs[:, 1], temperature, 30,
                               _cv_ranges(cvs, native))
    folded, unfolded = folded_unfolded_basins(landscape, tuple(native))
    folded_point = (folded.x, folded.y) if np.isfinite(folded.free_energy) else tuple(native)
    picks = [("folded", f) for f in _pick(cvs, time_ps, folded_point, per_basin, [],
                                          min_spacing_ps)]
    taken = [f for _, f in picks]
    if np.isfinite(unfolded.free_energy):
        second = _pick(cvs, time_ps, (unfolded.x, unfolded.y), per_basin, taken,
                       min_spacing_ps)
        picks += [("unfolded", f) for f in second]
    else:
        farthest = np.argmax(np.hypot(cvs[:, 0] - native[0], cvs[:, 1] - native[1]))
        second = _pick(cvs, time_ps, tuple(cvs[farthest]), per_basin, taken, min_spacing_ps)
        picks += [("far", f) for f in second]

    numbers = np.array([a.element.atomic_number for a in run.topology.atoms])
    rows, names = [], []
    energy_error = {name: [] for name in models}
    force_mae = {name: [] for name in models}
    for basin, frame in picks:
        atoms = Atoms(numbers=numbers, positions=positions[frame].astype(np.float64))
        if charge is not None:
            atoms.info["charge"] = charge
        atoms.calc = reference
        ref_energy, ref_forces = atoms.get_potential_energy(), atoms.get_forces()
        label = f"{basin} {sum(name.split()[0] == basin for name in names) + 1}"
        names.append(label)
        row = [label, frame, f"{cvs[frame, 0]:.3f}", f"{cvs[frame, 1]:.3f}"]
        for name, calculator in models.items():
            d_energy, d_forces = errors_in_kcal(calculator, atoms, ref_energy, ref_forces)
            energy_error[name].append(d_energy)
            force_mae[name].append(d_forces)
            row += [f"{d_energy:.4f}", f"{d_forces:.4f}"]
        rows.append(row)
    header = ["conformation", "frame", "cv1_A", "cv2_A"]
    for name in models:
        header += [f"{name}_energy_error_kcal_mol", f"{name}_force_mae_kcal_mol_A"]
    _write_csv(out / "conformation_errors.csv", header, rows)
    png = plot_conformation_errors(
        names, {k: np.array(v) for k, v in energy_error.items()},
        {k: np.array(v) for k, v in force_mae.items()},
        f"errors against the reference on conformations of {run.label}",
        out / "conformation_errors.png")
    return {"png": png, "conformations": names,
            "energy_error_kcal_mol": energy_error, "force_mae_kcal_mol_A": force_mae}


def _cvs_at_temperature(run: RunData | ReducedRun, temperature: float) -> np.ndarray:
    """(F, 2) Å: every frame of ``run`` simulated at ``temperature`` (K, within 0.5 K):
    demultiplexed in a replica-exchange run, every such replica's in independent runs."""
    matches = np.nonzero(np.abs(run.temperatures - temperature) < 0.5)[0]
    if matches.size == 0:
        raise ValueError(f"{run.label} has no replica at {temperature:.1f} K (its "
                         f"temperatures: {np.round(run.temperatures, 1).tolist()} K)")
    if np.unique(run.temperatures).size == run.temperatures.size:
        return run.cvs_at(int(matches[0]))[0]
    per_replica = (run.cvs[r] if isinstance(run, ReducedRun) else run.cvs_of_replica(r)
                   for r in matches)
    return np.concatenate(list(per_replica))


def overlay_report(reference: RunData | ReducedRun, runs: list[RunData | ReducedRun],
                   out_dir: str | os.PathLike, temperature_index: int = 0, bins: int = 30,
                   criteria: ConvergenceCriteria | None = None) -> dict[str, object]:
    """Where ``runs`` went against a reference ensemble (the classical REMD): the
    reference's landscape at ladder index ``temperature_index`` from its decorrelated frames
    (free energies only where its convergence verdict holds; otherwise the bins it
    visited), and every frame of each run at the same temperature on the same axes and
    bins. Writes ``overlay.png`` and ``overlay.json`` (the verdict, the temperature, the
    frames per run and the fraction of each run's frames in bins the reference visited)."""
    out = Path(out_dir)
    if not runs:
        raise ValueError("runs is empty; expected at least one run to draw over the reference")
    native = reference.native_cvs()
    criteria = criteria or ConvergenceCriteria()
    assessment = assess_run(reference, native, temperature_index, criteria)
    temperature = float(reference.temperatures[temperature_index])
    reference_cvs, _ = _decorrelated_cvs_at(reference, temperature_index,
                                            assessment.start_frame, assessment.inefficiency)
    drawn = [(run.label, _cvs_at_temperature(run, temperature)) for run in runs]
    ranges = _cv_ranges(np.concatenate([reference_cvs, *(c for _, c in drawn)]), native)
    landscape = free_energy_2d(reference_cvs[:, 0], reference_cvs[:, 1], temperature, bins,
                               ranges)
    visited = np.isfinite(landscape.free_energy)

    def inside_visited(cvs: np.ndarray) -> float:
        i = np.clip(np.searchsorted(landscape.x_edges, cvs[:, 0], side="right") - 1, 0,
                    bins - 1)
        j = np.clip(np.searchsorted(landscape.y_edges, cvs[:, 1], side="right") - 1, 0,
                    bins - 1)
        return float(visited[i, j].mean())

    title = (f"{', '.join(name for name, _ in drawn)} over the reference {reference.label} "
             f"at {temperature:.0f} K ({len(reference_cvs)} decorrelated frames); reference "
             + ("converged: F in kcal/mol" if assessment.converged else
                f"NOT CONVERGED, sampled bins only: "
                f"{assessment.verdict().removeprefix('not converged: ')}"))
    png = plot_overlay(landscape, assessment.converged, drawn, tuple(native), CV_LABELS, title,
                       out / "overlay.png")
    summary = {"reference": reference.label, "temperature_K": temperature,
               "reference_converged": assessment.converged,
               "reference_verdict": assessment.verdict(),
               "reference_decorrelated_frames": len(reference_cvs),
               "runs": {name: {"frames": len(cvs),
                               "fraction_in_reference_bins": inside_visited(cvs)}
                        for name, cvs in drawn}}
    (out / "overlay.json").write_text(json.dumps(summary, indent=1))
    return {**summary, "png": png}
