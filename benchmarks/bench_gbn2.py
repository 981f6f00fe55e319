"""The classical reference's force field with GBn2 from OpenMM and from freecg_md.gbn2, side by
side.

Chignolin in amber14 + GBn2 (166 atoms, no cutoff, X-H constraints, hydrogens of 3.024 amu),
one OpenMM Context per implementation of the GBn2 term on the ``--platform`` platform with
``--threads`` threads: OpenMM's ``CustomGBForce``, and the same term as compiled torch in a
``PythonForce`` (:func:`freecg_md.gbn2.with_torch_gbn2`). Each takes ``--steps``
LangevinMiddleIntegrator steps of 4 fs after a warm-up (the first torch call compiles), in
turns, ``--rounds`` times, so load from other jobs hits both alike. Prints ms per step, ns/day
and the ratio, and the GBn2 energies of both at the PDB structure, compared before any
timing: it exits with 1 if they differ by more than OpenMM's CPU platform's single-precision
rounding (1e-5 relative).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_gbn2.py --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import unit  # noqa: E402

from freecg_md.data.sampling import amber_gbn2_system  # noqa: E402
from freecg_md.gbn2 import with_torch_gbn2  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--platform", default="CPU")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pdb, system = amber_gbn2_system(True, 3.024)
    for force in system.getForces():  # GBn2 in a group of its own, to compare it alone
        force.setForceGroup(1 if isinstance(force, openmm.CustomGBForce) else 0)
    systems = {"OpenMM CustomGBForce": system, "freecg_md.gbn2 (torch)": with_torch_gbn2(system)}
    properties = {"Threads": str(args.threads)} if args.platform == "CPU" else {}
    contexts = {}
    for name, candidate in systems.items():
        integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                     4 * unit.femtosecond)
        integrator.setRandomNumberSeed(1)
        context = openmm.Context(candidate, integrator,
                                 openmm.Platform.getPlatformByName(args.platform), properties)
        context.setPositions(pdb.positions)
        contexts[name] = context
    energies = {name: context.getState(getEnergy=True, groups={1}).getPotentialEnergy()
                .value_in_unit(unit.kilojoule_per_mole) for name, context in contexts.items()}
    reference, ours = energies.values()
    if abs(ours - reference) > 1e-5 * abs(reference):
        print(f"error: the GBn2 energies differ by {ours - reference:.3g} kJ/mol: "
              f"{energies}")
        return 1
    openmm.LocalEnergyMinimizer.minimize(contexts["OpenMM CustomGBForce"], maxIterations=100)
    start = contexts["OpenMM CustomGBForce"].getState(getPositions=True).getPositions()
    for context in contexts.values():
        context.setPositions(start)
        context.setVelocitiesToTemperature(300 * unit.kelvin, 2)
        context.getIntegrator().step(args.warmup)
    times: dict[str, list[float]] = {name: [] for name in contexts}
    for _ in range(args.rounds):
        for name, context in contexts.items():
            began = time.perf_counter()
            context.getIntegrator().step(args.steps)
            times[name].append((time.perf_counter() - began) / args.steps)
    print(f"chignolin, amber14 + GBn2, 4 fs, {args.platform} platform, {args.threads} "
          f"thread(s), {args.rounds} rounds of {args.steps} steps in turns")
    print("GBn2 energy at the PDB structure: " + ", ".join(
        f"{name} {value:.6f} kJ/mol" for name, value in energies.items()))
    base = statistics.median(times["OpenMM CustomGBForce"])
    for name, values in times.items():
        per_step = statistics.median(values)
        print(f"{name:<24} {1e3 * per_step:7.2f} ms/step  {4e-6 * 86400 / per_step:7.1f} "
              f"ns/day  {base / per_step:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
