"""Energy conservation of chignolin in NVE with the shipped model: float32 against float64
(and float32 with the bfloat16 mode, ``--dtypes bfloat16``).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_nve_drift.py --ps 10 --threads 1

Runs velocity Verlet (ASE's ``VelocityVerlet``) on the 166-atom chignolin with
``FreeCGCalculator(model, dtype=...)`` for each dtype (``bfloat16``: float32 with
``matmul_precision="bfloat16"``) from the same start (native structure,
Maxwell-Boltzmann velocities at ``--temperature`` from ``--seed``, no centre-of-mass motion;
``--hydrogen-mass`` repartitions mass onto the hydrogens first, for a longer ``--timestep``).
The runs advance in alternating chunks, so their ms per step share the machine's load.
Prints, per dtype: the linear drift of the total energy (least-squares slope, meV per atom
per ps), its largest excursion from the start (meV/atom), the rms fluctuation about the
linear fit, and ms per step, plus the float64/float32 time ratio when both ran. With
``--csv`` every sampled total energy is appended (and flushed) as it is made, so a run cut
short keeps its series; ``--summarise CSV`` prints the same figures from such a file.

On 2 cores the two dtypes can run as two 1-thread processes side by side:

    bench_nve_drift.py --dtypes float32 --threads 1 --csv nve_f32.csv &
    bench_nve_drift.py --dtypes float64 --threads 1 --csv nve_f64.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import time
import warnings

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import units  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

from freecg_md import FreeCGCalculator  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402
from freecg_md.md import repartition_hydrogen_masses  # noqa: E402
from freecg_md.md.guards import find_bonds  # noqa: E402

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "..", "models", "chignolin.pt")
DTYPES = ("float32", "float64", "bfloat16")
CSV_HEADER = ["dtype", "step", "time_ps", "total_energy_eV", "seconds"]


def drift_figures(time_ps: np.ndarray, energy_eV: np.ndarray, n_atoms: int) -> str:
    """Linear drift, largest excursion and rms about the fit of a total-energy series.

    Parameters
    ----------
    time_ps, energy_eV : np.ndarray, shape (n_samples,)
        Sample times (ps) and total energies (eV); the first sample is the start.
    n_atoms : int
        Atoms in the system, to report per atom.
    """
    e = (energy_eV - energy_eV[0]) / n_atoms * 1e3  # meV/atom from the start
    slope, intercept = np.polyfit(time_ps, e, 1)
    rms = float(np.sqrt(np.mean((e - (slope * time_ps + intercept)) ** 2)))
    return (f"drift {slope:+.4f} meV/atom/ps over {time_ps[-1]:.2f} ps, largest excursion "
            f"{np.abs(e).max():.4f} meV/atom, rms about the fit {rms:.4f} meV/atom")


def summarise_csv(paths: list[str]) -> None:
    """Print the drift figures of series written with ``--csv`` (finished or cut short)."""
    n_atoms = len(load_chignolin().atoms)
    series: dict[str, list[tuple[float, float, float, float]]] = {}
    for path in paths:
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                series.setdefault(row["dtype"], []).append(
                    (float(row["step"]), float(row["time_ps"]), float(row["total_energy_eV"]),
                     float(row["seconds"])))
    for dtype, rows in series.items():
        step, t, e, seconds = (np.asarray(column) for column in zip(*rows, strict=True))
        per_step = f", {seconds[-1] / step[-1] * 1e3:.1f} ms/step" if step[-1] > 0 else ""
        print(f"{dtype}: {drift_figures(t, e, n_atoms)}{per_step}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model file (default: shipped)")
    parser.add_argument("--ps", type=float, default=10.0, help="simulated time per dtype, ps")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K, initial velocities")
    parser.add_argument("--hydrogen-mass", type=float, default=None,
                        help="amu: hydrogen mass repartitioning (e.g. 3.024), the mass taken "
                             "from each hydrogen's bonded heavy atom")
    parser.add_argument("--sample-every", type=int, default=10, help="steps between energies")
    parser.add_argument("--chunk", type=int, default=100, help="steps per turn of each dtype")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES[:2]),
                        help="bfloat16: float32 with the bfloat16 mode (matmul_precision)")
    parser.add_argument("--csv", help="append dtype, time_ps, total energy (eV) rows here")
    parser.add_argument("--summarise", nargs="+", metavar="CSV",
                        help="print the figures of earlier --csv files and exit")
    args = parser.parse_args()
    if args.summarise:
        summarise_csv(args.summarise)
        return
    torch.set_num_threads(args.threads)

    start_atoms = load_chignolin().atoms
    if args.hydrogen_mass is not None:
        bonds, _, _ = find_bonds(start_atoms.positions, start_atoms.numbers)
        start_atoms.set_masses(np.asarray(repartition_hydrogen_masses(
            start_atoms.get_masses(), start_atoms.numbers, bonds, args.hydrogen_mass)))
    with warnings.catch_warnings():  # ASE 3.29 renamed it; older ASE we support lacks the new name
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(start_atoms, temperature_K=args.temperature,
                                     rng=np.random.default_rng(args.seed))
    Stationary(start_atoms)
    n_steps = round(args.ps * 1000.0 / args.timestep)
    writer = None
    if args.csv:
        new_file = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
        handle = open(args.csv, "a", newline="")  # noqa: SIM115 - kept open for the whole run
        writer = csv.writer(handle)
        if new_file:
            writer.writerow(CSV_HEADER)
    runs = {}
    # A series' label: its dtype, and its hydrogen mass when repartitioned (so that series
    # of both kinds appended to one --csv file stay apart in --summarise).
    suffix = "" if args.hydrogen_mass is None else f", H {args.hydrogen_mass:g} amu"
    for dtype in args.dtypes:
        atoms = start_atoms.copy()
        reduced = dtype == "bfloat16"
        atoms.calc = FreeCGCalculator(args.model, dtype="float32" if reduced else dtype,
                                      matmul_precision=dtype if reduced else "float32")
        dynamics = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
        runs[dtype] = {"atoms": atoms, "dyn": dynamics, "t": [0.0],
                       "e": [atoms.get_total_energy()], "seconds": 0.0}
        if writer is not None:
            writer.writerow([dtype + suffix, 0, 0.0, runs[dtype]["e"][0], 0.0])

    done = 0
    while done < n_steps:
        chunk = min(args.chunk, n_steps - done)
        for dtype, run in runs.items():
            for _ in range(chunk // args.sample_every):
                start = time.perf_counter()
                run["dyn"].run(args.sample_every)
                run["seconds"] += time.perf_counter() - start
                run["t"].append(run["dyn"].nsteps * args.timestep / 1000.0)
                run["e"].append(run["atoms"].get_total_energy())
                if writer is not None:
                    writer.writerow([dtype + suffix, run["dyn"].nsteps, run["t"][-1], run["e"][-1],
                                     run["seconds"]])
            if writer is not None:
                handle.flush()
            if not np.isfinite(run["e"][-1]):
                raise SystemExit(f"total energy became {run['e'][-1]} at t = {run['t'][-1]} ps")
        done += chunk
        print(f"{done}/{n_steps} steps", flush=True)

    n_atoms = len(start_atoms)
    masses = ("natural masses" if args.hydrogen_mass is None
              else f"hydrogens of {args.hydrogen_mass} amu")
    print(f"NVE chignolin ({n_atoms} atoms, {masses}), {args.model}, velocity Verlet "
          f"{args.timestep} fs, "
          f"{n_steps} steps ({args.ps} ps) per dtype, start "
          f"{args.temperature} K, seed {args.seed}, {torch.get_num_threads()} threads")
    ms = {}
    for dtype, run in runs.items():
        ms[dtype] = run["seconds"] / run["dyn"].nsteps * 1e3
        print(f"{dtype}: {drift_figures(np.asarray(run['t']), np.asarray(run['e']), n_atoms)}, "
              f"{ms[dtype]:.1f} ms/step")
    for other in ("float64", "bfloat16"):
        if other in ms and "float32" in ms:
            print(f"{other} / float32 time per step: {ms[other] / ms['float32']:.2f}x")


if __name__ == "__main__":
    main()
