"""Energy conservation of chignolin in NVE with the shipped model: float32 against float64.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_nve_drift.py --ps 10 --threads 1

Runs velocity Verlet (ASE's ``VelocityVerlet``) on the 166-atom chignolin with
``FreeCGCalculator(model, dtype=...)`` for each dtype from the same start (native structure,
Maxwell-Boltzmann velocities at ``--temperature`` from ``--seed``, no centre-of-mass motion).
The two runs advance in alternating chunks, so their ms per step share the machine's load.
Prints, per dtype: the linear drift of the total energy (least-squares slope, meV per atom
per ps), its largest excursion from the start (meV/atom), the rms fluctuation about the
linear fit, and ms per step, plus the float64/float32 time ratio. With ``--csv`` the total
energy series is written too.
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

DEFAULT_MODEL = os.path.join(os.path.dirname(__file__), "..", "models", "chignolin.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model file (default: shipped)")
    parser.add_argument("--ps", type=float, default=10.0, help="simulated time per dtype, ps")
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--temperature", type=float, default=300.0, help="K, initial velocities")
    parser.add_argument("--sample-every", type=int, default=10, help="steps between energies")
    parser.add_argument("--chunk", type=int, default=100, help="steps per turn of each dtype")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", help="write time_ps and total energies (eV) per dtype here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start_atoms = load_chignolin().atoms
    with warnings.catch_warnings():  # ASE 3.29 renamed it; older ASE we support lacks the new name
        warnings.simplefilter("ignore", DeprecationWarning)
        MaxwellBoltzmannDistribution(start_atoms, temperature_K=args.temperature,
                                     rng=np.random.default_rng(args.seed))
    Stationary(start_atoms)
    n_steps = round(args.ps * 1000.0 / args.timestep)
    runs = {}
    for dtype in ("float32", "float64"):
        atoms = start_atoms.copy()
        atoms.calc = FreeCGCalculator(args.model, dtype=dtype)
        dynamics = VelocityVerlet(atoms, timestep=args.timestep * units.fs)
        runs[dtype] = {"atoms": atoms, "dyn": dynamics, "t": [0.0],
                       "e": [atoms.get_total_energy()], "seconds": 0.0}

    done = 0
    while done < n_steps:
        chunk = min(args.chunk, n_steps - done)
        for run in runs.values():
            for _ in range(chunk // args.sample_every):
                start = time.perf_counter()
                run["dyn"].run(args.sample_every)
                run["seconds"] += time.perf_counter() - start
                run["t"].append(run["dyn"].nsteps * args.timestep / 1000.0)
                run["e"].append(run["atoms"].get_total_energy())
            if not np.isfinite(run["e"][-1]):
                raise SystemExit(f"total energy became {run['e'][-1]} at t = {run['t'][-1]} ps")
        done += chunk

    n_atoms = len(start_atoms)
    print(f"NVE chignolin ({n_atoms} atoms), {args.model}, velocity Verlet {args.timestep} fs, "
          f"{runs['float32']['dyn'].nsteps} steps ({args.ps} ps) per dtype, start "
          f"{args.temperature} K, seed {args.seed}, {torch.get_num_threads()} threads")
    ms = {}
    for dtype, run in runs.items():
        t = np.asarray(run["t"])
        e = (np.asarray(run["e"]) - run["e"][0]) / n_atoms * 1e3  # meV/atom from the start
        slope, intercept = np.polyfit(t, e, 1)
        rms = float(np.sqrt(np.mean((e - (slope * t + intercept)) ** 2)))
        ms[dtype] = run["seconds"] / run["dyn"].nsteps * 1e3
        print(f"{dtype}: drift {slope:+.4f} meV/atom/ps, largest excursion "
              f"{np.abs(e).max():.4f} meV/atom, rms about the fit {rms:.4f} meV/atom, "
              f"{ms[dtype]:.1f} ms/step")
    print(f"float64 / float32 time per step: {ms['float64'] / ms['float32']:.2f}x")
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["time_ps", "total_energy_float32_eV", "total_energy_float64_eV"])
            writer.writerows(zip(runs["float32"]["t"], runs["float32"]["e"],
                                 runs["float64"]["e"], strict=True))


if __name__ == "__main__":
    main()
