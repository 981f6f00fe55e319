"""Chignolin MD through OpenMM (openmm-ml) against the project's own engine, side by side.

One replica of chignolin (166 atoms) at 300 K under the shipped model, float32, each
configuration run for ``--steps`` steps after ``--warmup`` steps, in turn, ``--rounds``
times (so load from other jobs hits them alike):

* ``MLPotential("freecg")``, this project's openmm-ml entry point, LangevinMiddleIntegrator
  at 1 fs;
* ``MLPotential("ase")``, openmm-ml's generic ASE route, with a FreeCGCalculator, 1 fs;
* the project's engine (``run_replicas``, BAOAB, one replica), 1 fs;
* ``MLPotential("freecg")`` at 2 fs with HBonds constraints, and at 4 fs with HBonds
  constraints and hydrogen masses of 3 amu (repartitioned from the bonded heavy atom),
  with their mean kinetic temperature over the production steps (target 300 K).

Prints ns/day and ratios to the 1 fs freecg entry point. ``--entry-points-only`` instead
times the two entry points alone, two Contexts side by side in turns: a force evaluation
(``getState``) and a LangevinMiddleIntegrator step at 1 fs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_openmm.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import app, unit  # noqa: E402
from openmmml import MLPotential  # noqa: E402

from freecg_md import FreeCGCalculator, shipped_model  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402
from freecg_md.md import FreeCGPotential, ReplicaState, RunConfig, run_replicas  # noqa: E402
from freecg_md.openmm_ml import constrain_hydrogen_bonds  # noqa: E402


def openmm_simulation(kind: str, model: str, timestep_fs: float, constraints: bool,
                      hydrogen_mass: float | None, seed: int) -> app.Simulation:
    pdb = app.PDBFile(str(load_chignolin().pdb_path))
    if kind == "freecg":
        potential = MLPotential("freecg", modelPath=model)
        system = potential.createSystem(pdb.topology)
    else:
        potential = MLPotential("ase")
        system = potential.createSystem(pdb.topology, calculator=FreeCGCalculator(model))
    if constraints:
        positions_nm = np.asarray(pdb.positions.value_in_unit(unit.nanometer))
        constrain_hydrogen_bonds(system, pdb.topology, positions_nm, hydrogen_mass)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(pdb.topology, system, integrator,
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(pdb.positions)
    simulation.context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    return simulation


def kinetic_temperature(simulation: app.Simulation) -> float:
    state = simulation.context.getState(getEnergy=True)
    system = simulation.system
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    return 2 * kinetic / (dof * unit.MOLAR_GAS_CONSTANT_R.value_in_unit(
        unit.kilojoule_per_mole / unit.kelvin))


def compare_entry_points(model: str, rounds: int) -> None:
    """ms per force evaluation and per 1 fs step of MLPotential("freecg") against
    MLPotential("ase") with a FreeCGCalculator, interleaved."""
    simulations = {kind: openmm_simulation(kind, model, 1.0, False, None, seed=1)
                   for kind in ("freecg", "ase")}
    start = np.asarray(simulations["freecg"].context.getState(getPositions=True).getPositions(
        asNumpy=True).value_in_unit(unit.nanometer))
    rng = np.random.default_rng(0)
    forces = {kind: [] for kind in simulations}
    steps = {kind: [] for kind in simulations}
    for round_ in range(rounds):
        for kind in (list(simulations) if round_ % 2 == 0 else list(simulations)[::-1]):
            context = simulations[kind].context
            for _ in range(10):
                context.setPositions(start + rng.normal(scale=2e-4, size=start.shape))
                begin = time.perf_counter()
                context.getState(getForces=True, getEnergy=True)
                forces[kind].append(time.perf_counter() - begin)
            context.setPositions(start)
            begin = time.perf_counter()
            simulations[kind].step(40)
            steps[kind].append((time.perf_counter() - begin) / 40)
    for kind in simulations:
        print(f"MLPotential({kind!r}): force evaluation "
              f"{1000 * statistics.median(forces[kind]):.1f} ms, 1 fs step "
              f"{1000 * statistics.median(steps[kind]):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--entry-points-only", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = str(shipped_model("chignolin"))
    if args.entry_points_only:
        compare_entry_points(model, args.rounds)
        return
    # (name, make, fs per step)
    configurations = {
        "openmm MLPotential('freecg'), 1 fs": ("freecg", 1.0, False, None),
        "openmm MLPotential('ase'), 1 fs": ("ase", 1.0, False, None),
        "openmm freecg, 2 fs, HBonds": ("freecg", 2.0, True, None),
        "openmm freecg, 4 fs, HBonds, H 3 amu": ("freecg", 4.0, True, 3.024),
    }
    simulations = {name: openmm_simulation(kind, model, dt, c, h, seed=1)
                   for name, (kind, dt, c, h) in configurations.items()}
    chignolin = load_chignolin()
    engine_potential = FreeCGPotential(model, chignolin.atoms.numbers, workers=1)
    state = ReplicaState.from_atoms(chignolin.atoms, 1)
    times: dict[str, list[float]] = {name: [] for name in [*simulations, "own engine, 1 fs"]}
    temperatures: dict[str, list[float]] = {name: [] for name in simulations}
    with tempfile.TemporaryDirectory() as scratch:
        names = list(simulations)
        for round_ in range(args.rounds):
            # A different configuration goes first in each round: the first one after the
            # engine's run pays for caches the others find warm.
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                simulation = simulations[name]
                simulation.step(args.warmup)
                start = time.perf_counter()
                samples = []
                for _ in range(10):
                    simulation.step(args.steps // 10)
                    samples.append(kinetic_temperature(simulation))
                times[name].append(time.perf_counter() - start)
                temperatures[name] += samples
            config = RunConfig(temperatures=[300.0], n_steps=args.warmup + args.steps,
                               output_dir=os.path.join(scratch, f"run{round_}"),
                               report_interval=args.steps, checkpoint_interval=10**9,
                               seed=round_)
            start = time.perf_counter()
            result = run_replicas(engine_potential, state, config, progress=False)
            elapsed = time.perf_counter() - start
            # The warm-up steps are in the same run: count them at the measured rate.
            times["own engine, 1 fs"].append(elapsed * args.steps / (args.warmup + args.steps))
            del result
    reference = statistics.median(times["openmm MLPotential('freecg'), 1 fs"])
    print(f"chignolin (166 atoms), shipped model, float32, {args.threads} threads, "
          f"{args.steps} steps x {args.rounds} rounds (median)")
    print(f"{'configuration':<42} {'ns/day':>8} {'time ratio':>11} {'mean T (K)':>11}")
    for name, values in times.items():
        seconds = statistics.median(values)
        timestep = 1.0
        for key, (_, dt, _, _) in configurations.items():
            if key == name:
                timestep = dt
        ns_day = args.steps * timestep / seconds * 86400 * 1e-6
        mean_t = (f"{np.mean(temperatures[name]):.1f}" if name in temperatures else "-")
        print(f"{name:<42} {ns_day:8.3f} {seconds / reference:11.2f} {mean_t:>11}")


if __name__ == "__main__":
    main()
