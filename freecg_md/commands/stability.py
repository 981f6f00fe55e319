"""Stability of the model's own MD: independent hot trajectories of chignolin, failures counted.

    freecg-md stability                       # 8 x 10 ps at 450, 600, 800 K
    freecg-md stability --resume              # continue after a stop
    freecg-md stability --analyse-only        # tables and figure only

Each trajectory is a run of its own (``OUTPUT/T450/traj_0/`` ...), one replica, started
from the shipped start states (trajectory i from state i mod 8, velocities drawn at its
temperature) and integrated with the engine's guards on, so that one failure does not stop
the others. ``--jobs`` runs that many trajectories side by side (one CPU thread each). A
trajectory that the engine stops (its SimulationError) is recorded in ``failure.json``
with its step, time and reason, and counted as failed. After the runs every saved frame is
checked too: an X-H distance above 1.6 Å or below 0.8 Å, a bond between heavy atoms
stretched beyond 1.5 times its length in the native structure, or two atoms that are not
bonded there closer than 1.2 times their covalent radii (a new bond: a hydrogen pulled onto
an oxygen, say) is a failure at that frame's time. ``OUTPUT/stability.csv`` lists every
trajectory (length, failed or not, when and why, the largest force over the run),
``OUTPUT/stability_frames.csv.gz`` the per-frame
numbers, ``OUTPUT/stability_summary.json`` the failures per temperature and the fingerprint
of the model file behind the trajectories, and ``OUTPUT/stability.png`` the largest force
and the worst X-H distance over time.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from ..io import shipped_model

# The failure criteria checked on the saved frames (the engine's guards act every step).
# NEW_CONTACT: two atoms not bonded in the native structure closer than 1.2 times the sum
# of their covalent radii (the bonding criterion of find_bonds): a bond that should not be.
# The 4,620 classical frames of the training data never come below 1.36.
XH_MAX, XH_MIN, HEAVY_STRETCH, NEW_CONTACT = 1.6, 0.8, 1.5, 1.2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Hot Langevin trajectories of chignolin with a FreeCG model; failures "
                    "counted.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(shipped_model("chignolin")))
    parser.add_argument("--temperatures", type=float, nargs="+", default=[450.0, 600.0, 800.0])
    parser.add_argument("--trajectories", type=int, default=8, help="per temperature")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin gamma, 1/ps")
    parser.add_argument("--report-interval", type=int, default=50, help="steps")
    parser.add_argument("--checkpoint-interval", type=int, default=500, help="steps")
    parser.add_argument("--initial", default="shipped",
                        help="'shipped', 'native', a start-state .npz or an ASE-readable file")
    parser.add_argument("--jobs", type=int, default=2, help="trajectories run side by side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("runs") / "stability")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--analyse-only", action="store_true")
    return parser.parse_args(argv)


def trajectory_dir(output: Path, temperature: float, index: int) -> Path:
    return output / f"T{temperature:g}" / f"traj_{index}"


def trajectory_seed(seed: int, temperature: float, index: int) -> int:
    """The run seed of trajectory ``index`` at ``temperature`` (K), hashed from ``(seed,
    index, temperature in mK)`` (:func:`~freecg_md.md.state.derived_seed`), so no two
    trajectories of one ``--seed`` share a seed, whatever the temperatures (a sum such as
    ``seed + 1000 * index + T`` gives trajectory 1 at 450 K the seed of trajectory 0 at
    1450 K)."""
    from ..md.state import derived_seed

    return derived_seed(seed, index, int(round(1000 * float(temperature))))


def run_one(args: argparse.Namespace, temperature: float, index: int) -> str:
    """One trajectory (in a worker process); returns a line for the log."""
    import torch

    from ..data import initial_replicas, load_chignolin
    from ..io import model_fingerprint
    from ..md import FreeCGPotential, RunConfig, SimulationError, run_replicas
    from ..md.checkpoint import CHECKPOINT_NAME

    torch.set_num_threads(1)
    directory = trajectory_dir(args.output, temperature, index)
    if (directory / "failure.json").is_file():
        return f"{directory}: failed earlier, kept"
    chignolin = load_chignolin()
    state, draw, _ = initial_replicas(args.initial, chignolin.atoms, [temperature] * (index + 1))
    state = state.select(slice(index, index + 1))
    seed = trajectory_seed(args.seed, temperature, index)
    recorded = directory / "config.json"
    if args.resume and recorded.is_file():
        # A trajectory continues with the seed it began with (one begun before the seeds
        # were hashed has another, and a checkpoint refuses a changed seed).
        seed = int(json.loads(recorded.read_text())["run"]["seed"])
    config = RunConfig(temperatures=[temperature], n_steps=args.steps,
                       output_dir=str(directory), friction_per_ps=args.friction,
                       timestep_fs=args.timestep, report_interval=args.report_interval,
                       checkpoint_interval=args.checkpoint_interval,
                       seed=seed, draw_velocities=draw)
    potential = FreeCGPotential(args.model, chignolin.atoms.numbers, workers=1)
    resume = args.resume and (directory / CHECKPOINT_NAME).is_file()
    try:
        run_replicas(potential, state, config, topology=chignolin.topology,
                     bond_reference=chignolin.native_positions, resume=resume,
                     progress=False, metadata={"model": str(args.model),
                                               "model_fingerprint": model_fingerprint(args.model)})
    except SimulationError as error:
        step = error.step
        (directory / "failure.json").write_text(json.dumps(
            {"step": step, "time_ps": step * args.timestep * 1e-3, "reason": str(error)},
            indent=2) + "\n")
        return f"{directory}: stopped by the engine: {error}"
    finally:
        potential.close()
    return f"{directory}: {args.steps} steps done"


def analyse(args: argparse.Namespace) -> dict[str, object]:
    """Per-frame checks, the table, the reduced frames and the figure."""
    import csv
    import gzip
    import io

    from ase.data import covalent_radii

    from ..analysis.rundir import read_run
    from ..analysis.structure import rmsd
    from ..data import load_chignolin
    from ..md.guards import find_bonds

    chignolin = load_chignolin()
    pairs, _, lengths = find_bonds(chignolin.native_positions, chignolin.atoms.numbers)
    n_atoms = len(chignolin.atoms)
    i_all, j_all = np.triu_indices(n_atoms, k=1)
    bonded = np.zeros((n_atoms, n_atoms), bool)
    bonded[pairs[:, 0], pairs[:, 1]] = bonded[pairs[:, 1], pairs[:, 0]] = True
    free = ~bonded[i_all, j_all]
    i_free, j_free = i_all[free], j_all[free]
    radii = covalent_radii[chignolin.atoms.numbers]
    contact_scale = radii[i_free] + radii[j_free]
    hydrogen = chignolin.atoms.numbers[pairs] == 1
    xh = hydrogen.any(axis=1)
    heavy = ~xh
    rows, frame_rows = [], []
    for temperature in args.temperatures:
        for index in range(args.trajectories):
            directory = trajectory_dir(args.output, temperature, index)
            if not (directory / "frames.csv").is_file():
                continue
            run = read_run(directory)
            positions = run.positions[0].astype(np.float64)
            distance = np.linalg.norm(positions[:, pairs[:, 1]] - positions[:, pairs[:, 0]],
                                      axis=-1)
            xh_max = distance[:, xh].max(axis=1, initial=0.0)
            xh_min = distance[:, xh].min(axis=1, initial=np.inf)
            stretch = (distance[:, heavy] / lengths[heavy]).max(axis=1, initial=0.0)
            contact = (np.linalg.norm(positions[:, j_free] - positions[:, i_free], axis=-1)
                       / contact_scale).min(axis=1, initial=np.inf)
            bad = ((xh_max > XH_MAX) | (xh_min < XH_MIN) | (stretch > HEAVY_STRETCH)
                   | (contact < NEW_CONTACT))
            failure = (json.loads((directory / "failure.json").read_text())
                       if (directory / "failure.json").is_file() else None)
            times = [failure["time_ps"]] if failure else []
            reasons = ["engine guard: " + failure["reason"]] if failure else []
            if bad.any():
                first = int(np.argmax(bad))
                times.append(float(run.time_ps[first]))
                reasons.append(f"frame check at {run.time_ps[first]:.3f} ps: X-H "
                               f"{xh_min[first]:.2f}-{xh_max[first]:.2f} Å, heavy-atom "
                               f"stretch {stretch[first]:.2f}x, closest non-bonded pair "
                               f"{contact[first]:.2f}x the covalent radii")
            ca = (rmsd(positions, chignolin.native_positions, chignolin.topology, "ca")
                  if run.n_frames else np.zeros(0))
            length = float(run.time_ps[-1]) if run.n_frames else 0.0
            rows.append([f"{temperature:g}", index, f"{length:.3f}", int(bool(times)),
                         f"{min(times):.3f}" if times else "",
                         f"{np.nanmax(run.largest_force):.3f}" if run.n_frames else "",
                         f"{xh_min.min(initial=np.inf):.3f}",
                         f"{xh_max.max(initial=0.0):.3f}",
                         f"{stretch.max(initial=0.0):.3f}",
                         f"{contact.min(initial=np.inf):.3f}", " | ".join(reasons)])
            for f in range(run.n_frames):
                frame_rows.append([f"{temperature:g}", index, f"{run.time_ps[f]:.3f}",
                                   f"{run.energies[f, 0]:.5f}",
                                   f"{run.kinetic_temperature[f, 0]:.1f}",
                                   f"{run.largest_force[f, 0]:.4f}", f"{xh_min[f]:.4f}",
                                   f"{xh_max[f]:.4f}", f"{stretch[f]:.4f}",
                                   f"{contact[f]:.4f}", f"{ca[f]:.4f}"])
    header = ["temperature_K", "trajectory", "length_ps", "failed", "failure_time_ps",
              "max_force_eV_A", "min_xh_A", "max_xh_A", "max_heavy_stretch",
              "min_nonbonded_ratio", "reason"]
    with open(args.output / "stability.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    # mtime=0: the same frames give the same bytes, so shipping them again changes nothing.
    with (open(args.output / "stability_frames.csv.gz", "wb") as raw,
          gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed,
          io.TextIOWrapper(packed, newline="") as handle):
        csv.writer(handle).writerows([["temperature_K", "trajectory", "time_ps", "epot_eV",
                                       "kinetic_T_K", "max_force_eV_A", "min_xh_A",
                                       "max_xh_A", "max_heavy_stretch",
                                       "min_nonbonded_ratio", "ca_rmsd_A"],
                                      *frame_rows])
    summary = {}
    for temperature in args.temperatures:
        mine = [r for r in rows if r[0] == f"{temperature:g}"]
        summary[f"{temperature:g}"] = {
            "trajectories": len(mine), "failed": sum(r[3] for r in mine),
            "ps_simulated": round(sum(float(r[2]) for r in mine), 3)}
    # The results belong to the model that made them: every trajectory's, as its run
    # recorded it (a mixture would show as several).
    fingerprints = sorted({json.loads((trajectory_dir(args.output, t, i) / "config.json")
                                      .read_text()).get("model_fingerprint", "unknown")
                           for t in args.temperatures for i in range(args.trajectories)
                           if (trajectory_dir(args.output, t, i) / "config.json").is_file()})
    (args.output / "stability_summary.json").write_text(json.dumps(
        {"temperatures": summary, "model": Path(args.model).name,
         "model_fingerprints": fingerprints}, indent=2) + "\n")
    if rows:
        # Drawn from the tables just written, as analysis/plot_stability.py redraws it from
        # the shipped copies: one figure either way.
        redraw(args.output, args.output / "stability.png")
    return summary


def redraw(tables: Path, path: Path) -> Path:
    """``stability.png`` at ``path`` from the tables of a stability run in the directory
    ``tables`` (``stability.csv``, ``stability_frames.csv.gz``, ``stability_summary.json``:
    what the analysis writes and the study ships)."""
    import csv
    import gzip

    tables = Path(tables)
    names = ("stability.csv", "stability_frames.csv.gz", "stability_summary.json")
    missing = [name for name in names if not (tables / name).is_file()]
    if missing:
        raise ValueError(f"{tables} lacks {', '.join(missing)}; expected a stability run's "
                         "tables (freecg-md stability, or docs/results/stability/)")
    with open(tables / "stability.csv", newline="") as handle:
        failed_at = {(float(row["temperature_K"]), int(row["trajectory"])):
                     float(row["failure_time_ps"]) if row["failure_time_ps"] else None
                     for row in csv.DictReader(handle)}
    series: dict[tuple[float, int], list[list[float]]] = {}
    with gzip.open(tables / "stability_frames.csv.gz", "rt", newline="") as handle:
        for row in csv.DictReader(handle):
            key = (float(row["temperature_K"]), int(row["trajectory"]))
            series.setdefault(key, []).append(
                [float(row["time_ps"]), float(row["max_force_eV_A"]), float(row["max_xh_A"])])
    curves = {key: (*np.asarray(values).T, failed_at.get(key))
              for key, values in series.items()}
    summary = json.loads((tables / "stability_summary.json").read_text())
    fingerprints = summary.get("model_fingerprints", [])
    model = summary.get("model", "")
    if len(fingerprints) == 1:
        model = f"{model}, {fingerprints[0][:12]}" if model else fingerprints[0][:12]
    plot(curves, path, model)
    return path


def plot(curves: dict, path: Path, model: str = "") -> None:
    """The largest force and the longest X-H bond of every trajectory over time, a cross
    where a trajectory failed (``curves[(temperature, index)] = (time, force, xh,
    failure_time or None)``)."""
    from ..analysis.plots import new_figure

    temperatures = sorted({t for t, _ in curves})
    colours = dict(zip(temperatures, ("tab:blue", "tab:orange", "tab:red", "tab:purple"),
                       strict=False))
    figure, (left, right) = new_figure(1, 2, figsize=(12, 4.2))
    failed_label = "failed before the next frame"
    for (temperature, index), (time, force, xh, failed_at) in sorted(curves.items()):
        label = f"{temperature:g} K" if index == 0 else None
        left.plot(time, force, color=colours.get(temperature), lw=0.6, alpha=0.7, label=label)
        right.plot(time, xh, color=colours.get(temperature), lw=0.6, alpha=0.7, label=label)
        if failed_at is not None and len(time):
            # At the last saved frame at or before the failure (the engine stops between
            # frames).
            last = max(int(np.searchsorted(time, failed_at, side="right")) - 1, 0)
            for ax, values in ((left, force), (right, xh)):
                ax.plot([time[last]], [values[last]], "x", color="black", ms=7, mew=1.5,
                        label=failed_label)
            failed_label = None
    right.axhline(XH_MAX, color="black", ls="--", lw=0.8,
                  label=f"frame check: failure above {XH_MAX} Å")
    left.set_xlabel("time (ps)")
    left.set_ylabel("largest force on an atom (eV/Å)")
    right.set_xlabel("time (ps)")
    right.set_ylabel("longest X-H bond (Å)")
    left.legend(fontsize=8)
    right.legend(fontsize=8)
    figure.suptitle("chignolin, hot Langevin trajectories"
                    + (f" with {model}" if model else ""))
    figure.savefig(path, dpi=150, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.model).is_file():
        print(f"error: no model file at {args.model}; pass --model", file=sys.stderr)
        return 2
    if args.jobs < 1:
        print(f"error: --jobs {args.jobs}: expected >= 1", file=sys.stderr)
        return 2
    if args.seed < 0:
        print(f"error: --seed {args.seed}: expected a non-negative integer", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    if not args.analyse_only:
        jobs = [(t, i) for t in args.temperatures for i in range(args.trajectories)]
        begun = [trajectory_dir(args.output, t, i) for t, i in jobs
                 if (trajectory_dir(args.output, t, i) / "config.json").is_file()]
        if begun and not args.resume:
            # Said here, once: in the pool each such trajectory would raise on its own.
            print(f"error: {len(begun)} trajectories already exist in {args.output} (e.g. "
                  f"{begun[0]}); pass --resume to continue them, or choose another --output",
                  file=sys.stderr)
            return 2
        print(f"{len(jobs)} trajectories of {args.steps} steps of {args.timestep} fs at "
              f"{', '.join(f'{t:g}' for t in args.temperatures)} K, {args.jobs} at a time, "
              f"into {args.output}", flush=True)
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for line in pool.map(run_one, [args] * len(jobs), *zip(*jobs, strict=True)):
                print(line, flush=True)
    summary = analyse(args)
    for temperature, counts in summary.items():
        print(f"{temperature} K: {counts['failed']} of {counts['trajectories']} trajectories "
              f"failed ({counts['ps_simulated']} ps simulated)")
    print(f"wrote {args.output / 'stability.csv'} and {args.output / 'stability.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
