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

import mdtraj
import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator

from .landscape import (
    Landscape,
    folded_unfolded_basins,
    free_energy_2d,
    mbar_free_energy_2d,
)
from .plots import plot_conformation_errors, plot_landscapes, plot_remd, plot_rmsd_band
from .remd_stats import round_trips
from .rundir import RunData
from .structure import chignolin_cvs, rmsd

__all__ = ["conformation_errors_report", "landscape_report", "remd_report", "rmsd_report"]

CV_LABELS = ("Asp3 O – Gly7 N distance (Å)", "Glu5 O – Thr8 N distance (Å)")
KCAL_PER_EV = 1.0 / (units.kcal / units.mol)


def _native(topology: mdtraj.Topology) -> np.ndarray:
    """The shipped native chignolin, (N, 3) Å; ValueError if ``topology`` is another system."""
    from ..data.molecules import load_chignolin

    native = load_chignolin()
    if topology.n_atoms != native.topology.n_atoms or [r.name for r in topology.residues] != [
            r.name for r in native.topology.residues]:
        raise ValueError(f"the run's topology ({topology.n_atoms} atoms, "
                         f"{topology.n_residues} residues) is not the shipped chignolin; "
                         "pass the native structure explicitly")
    return native.native_positions


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


def landscape_report(run: RunData, out_dir: str | os.PathLike, temperature_index: int = 0,
                     discard: float = 0.2, bins: int = 30, folded_radius: float = 1.5,
                     unfolded_radius: float = 3.0) -> dict[str, object]:
    """The chignolin landscape over the paper's two distances, from the histogram of the
    frames at ladder index ``temperature_index`` and, when the run has several
    temperatures, reweighted with MBAR from all frames.

    Writes ``landscape.png``, ``landscape_histogram.csv``, ``landscape_mbar.csv`` (with
    several temperatures) and ``basins.csv``; returns the basins per method and the paths.
    """
    out = Path(out_dir)
    native = chignolin_cvs(_native(run.topology), run.topology)[0]
    positions, _ = run.frames_at(temperature_index, discard)
    target_cvs = chignolin_cvs(positions, run.topology)
    first = int(np.floor(discard * run.n_frames))
    all_positions = run.positions[:, first:].reshape(-1, run.topology.n_atoms, 3)
    all_cvs = chignolin_cvs(all_positions, run.topology)
    ranges = _cv_ranges(all_cvs, native)
    temperature = float(run.temperatures[temperature_index])

    panels = [("histogram", free_energy_2d(target_cvs[:, 0], target_cvs[:, 1], temperature,
                                           bins, ranges))]
    _landscape_csv(out / "landscape_histogram.csv", panels[0][1])
    if np.unique(run.temperatures).size > 1:
        # (R, F') -> flat in the same replica-major order as all_positions.
        energies = run.energies[first:].T.reshape(-1)
        sampled = run.sampled_temperatures()[first:].T.reshape(-1)
        mbar = mbar_free_energy_2d(all_cvs[:, 0], all_cvs[:, 1], energies, sampled,
                                   temperature, bins, ranges)
        panels.append(("MBAR over all temperatures", mbar))
        _landscape_csv(out / "landscape_mbar.csv", mbar)

    basins = {name: folded_unfolded_basins(landscape, tuple(native), folded_radius,
                                           unfolded_radius)
              for name, landscape in panels}
    rows = [[method, b.name, *(f"{v:.4f}" for v in (b.free_energy, b.x, b.y))]
            for method, pair in basins.items() for b in pair]
    _write_csv(out / "basins.csv", ["method", "basin", "free_energy_kcal_mol", "x_A", "y_A"],
               rows)
    title = (f"chignolin free-energy landscape, {run.label}; first {discard:.0%} of frames "
             "discarded")
    png = plot_landscapes(panels, list(basins.values()), tuple(native), CV_LABELS, title,
                          out / "landscape.png")
    return {"png": png, "native_cvs": native.tolist(), "n_target_frames": len(target_cvs),
            "basins": {method: [asdict(b) for b in pair] for method, pair in basins.items()}}


def rmsd_report(run: RunData, out_dir: str | os.PathLike, selection: str = "ca",
                reference: np.ndarray | None = None) -> dict[str, object]:
    """RMSD to the native structure of every replica's trajectory: ``rmsd.png`` (mean with
    a ±1 standard deviation band) and ``rmsd.csv`` (time, mean, std, one column per
    replica)."""
    out = Path(out_dir)
    reference = _native(run.topology) if reference is None else np.asarray(reference)
    values = np.stack([rmsd(run.positions[r], reference, run.topology, selection)
                       for r in range(run.n_replicas)])
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


def _exchange_history(directory: Path, n_replicas: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, R) temperature index after each attempt and (A, K-1) outcomes from
    ``exchange.csv``."""
    path = directory / "exchange.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run had no exchanges")
    data = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2).astype(np.int64)
    return data[:, 2:2 + n_replicas], data[:, 2 + n_replicas:]


def remd_report(run: RunData, out_dir: str | os.PathLike) -> dict[str, object]:
    """Acceptance per neighbouring pair and the replicas' walks: ``remd.png``,
    ``acceptance.csv`` and ``remd_summary.json`` (acceptance, round trips per replica)."""
    out = Path(out_dir)
    history, outcomes = _exchange_history(run.directory, run.n_replicas)
    attempted = (outcomes >= 0).sum(axis=0)
    accepted = (outcomes == 1).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        acceptance = accepted / attempted
    start = np.arange(run.n_replicas)[None]
    trips = round_trips(np.concatenate([start, history])) if len(history) else np.zeros(
        run.n_replicas, dtype=int)
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


def _pick(cvs: np.ndarray, point: tuple[float, float], count: int, taken: set[int]
          ) -> list[int]:
    """``count`` frames nearest to ``point`` in CV space, skipping ``taken``, spaced so no
    two are consecutive frames (which would be near copies)."""
    order = np.argsort(np.hypot(cvs[:, 0] - point[0], cvs[:, 1] - point[1]))
    chosen: list[int] = []
    for frame in order.tolist():
        if frame in taken or any(abs(frame - c) < 2 for c in chosen):
            continue
        chosen.append(frame)
        if len(chosen) == count:
            break
    return chosen


def conformation_errors_report(run: RunData, models: Mapping[str, Calculator],
                               reference: Calculator, out_dir: str | os.PathLike,
                               temperature_index: int = 0, discard: float = 0.2,
                               per_basin: int = 3, charge: int | None = -2
                               ) -> dict[str, object]:
    """Energy and force errors of each model against ``reference`` on conformations picked
    from the landscape: ``per_basin`` frames nearest the folded basin's minimum and
    ``per_basin`` nearest the unfolded basin's (figure 5b of the FreeCG paper).

    When the run never left the folded basin (a short run), the "unfolded" picks are the
    frames farthest from the native point and are labelled ``far`` instead.
    Writes ``conformation_errors.csv`` and ``conformation_errors.png`` (kcal/mol).
    """
    out = Path(out_dir)
    native = chignolin_cvs(_native(run.topology), run.topology)[0]
    positions, _ = run.frames_at(temperature_index, discard)
    cvs = chignolin_cvs(positions, run.topology)
    temperature = float(run.temperatures[temperature_index])
    landscape = free_energy_2d(cvs[:, 0], cvs[:, 1], temperature, 30,
                               _cv_ranges(cvs, native))
    folded, unfolded = folded_unfolded_basins(landscape, tuple(native))
    folded_point = (folded.x, folded.y) if np.isfinite(folded.free_energy) else tuple(native)
    picks = [("folded", f) for f in _pick(cvs, folded_point, per_basin, set())]
    if np.isfinite(unfolded.free_energy):
        second = _pick(cvs, (unfolded.x, unfolded.y), per_basin, {f for _, f in picks})
        picks += [("unfolded", f) for f in second]
    else:
        far = np.argsort(-np.hypot(cvs[:, 0] - native[0], cvs[:, 1] - native[1]))
        taken = {f for _, f in picks}
        picks += [("far", int(f)) for f in far if int(f) not in taken][:per_basin]

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
        label = f"{basin} {len(names) % per_basin + 1}"
        names.append(label)
        row = [label, frame, f"{cvs[frame, 0]:.3f}", f"{cvs[frame, 1]:.3f}"]
        for name, calculator in models.items():
            probe = atoms.copy()
            probe.calc = calculator
            d_energy = (probe.get_potential_energy() - ref_energy) * KCAL_PER_EV
            d_forces = np.abs(probe.get_forces() - ref_forces).mean() * KCAL_PER_EV
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

