"""Whether longer time steps stay correct for FreeCG in OpenMM: 1, 2 and 4 fs on chignolin.

Chignolin under the shipped model through ``MLPotential("freecg")``, LangevinMiddleIntegrator
at 300 K (friction 1/ps), from the shipped 300 K start state (positions; velocities drawn at
300 K), in three set-ups that sample one ensemble (X-H bonds rigid in all three):

* 1 fs, X-H bonds constrained (the reference);
* 2 fs, X-H bonds constrained;
* 4 fs, X-H bonds constrained, hydrogens 3.024 amu (mass moved from the bonded heavy atom,
  which changes the dynamics, not the configurations sampled).

Each runs ``--ps`` picoseconds with its kinetic temperature (over the unconstrained degrees
of freedom) and potential energy recorded every 10 fs. Means leave out the first
``--discard-ps`` and carry standard errors from a bootstrap over ``--block-ps`` blocks. A time
step stays correct where its mean temperature is 300 K and its mean potential energy the
reference's, within the errors. Writes ``--out`` (JSON) as it goes: a set-up done is not
rerun (only its means are recomputed).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python studies/openmm_timesteps/run.py --ps 10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import openmm  # noqa: E402
import torch  # noqa: E402
from openmm import app, unit  # noqa: E402
from openmmml import MLPotential  # noqa: E402

from freecg_md import shipped_model  # noqa: E402
from freecg_md.analysis.statistics import block_bootstrap  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402
from freecg_md.data.starts import load_chignolin_starts  # noqa: E402
from freecg_md.io import model_fingerprint  # noqa: E402
from freecg_md.openmm_ml import constrain_hydrogen_bonds  # noqa: E402

TEMPERATURE = 300.0
SAMPLE_FS = 10.0
# name: (time step fs, hydrogen mass amu or None for natural)
SETUPS = {"1 fs, X-H constrained": (1.0, None),
          "2 fs, X-H constrained": (2.0, None),
          "4 fs, X-H constrained, H 3.024 amu": (4.0, 3.024)}


def simulation_for(model: str, timestep_fs: float, hydrogen_mass: float | None,
                   positions_nm: np.ndarray, seed: int) -> app.Simulation:
    """An OpenMM Simulation of chignolin under ``model`` with X-H bonds constrained to their
    lengths in ``positions_nm``, optionally with repartitioned hydrogen masses."""
    topology = app.PDBFile(str(load_chignolin().pdb_path)).topology
    system = MLPotential("freecg", modelPath=model).createSystem(topology)
    constrain_hydrogen_bonds(system, topology, positions_nm, hydrogen_mass)
    integrator = openmm.LangevinMiddleIntegrator(TEMPERATURE * unit.kelvin, 1 / unit.picosecond,
                                                 timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    simulation = app.Simulation(topology, system, integrator,
                                openmm.Platform.getPlatformByName("Reference"))
    simulation.context.setPositions(positions_nm)
    simulation.context.applyConstraints(1e-8)
    simulation.context.setVelocitiesToTemperature(TEMPERATURE * unit.kelvin, seed)
    return simulation


def mean_with_error(series: np.ndarray, discard: int, block: int) -> dict[str, float]:
    """Mean of ``series`` after its first ``discard`` samples, with its standard error by a
    bootstrap over blocks of ``block`` samples. Blocks, not pymbar's autocorrelation
    estimate: with friction 1/ps the kinetic and potential energies also wander on the
    thermostat's picosecond time scale, which a short series' autocorrelation misses."""
    kept = series[discard:]
    mean, error = block_bootstrap(kept, np.mean, block=block)
    return {"mean": mean, "error": error, "discarded_samples": discard,
            "block_samples": block, "blocks": len(kept) // block}


def summarise(setup: dict, sample_fs: float, discard_ps: float, block_ps: float) -> None:
    """Add the means with errors of ``setup``'s recorded series to it."""
    discard, block = round(discard_ps * 1000 / sample_fs), round(block_ps * 1000 / sample_fs)
    for key, name in (("kinetic_temperature_K", "temperature_K"),
                      ("potential_energy_kJ_mol", "potential_kJ_mol")):
        setup[key] = mean_with_error(np.array(setup["series"][name]), discard, block)


def run_setup(model: str, timestep_fs: float, hydrogen_mass: float | None,
              positions_nm: np.ndarray, picoseconds: float, seed: int) -> dict:
    simulation = simulation_for(model, timestep_fs, hydrogen_mass, positions_nm, seed)
    system = simulation.system
    dof = 3 * system.getNumParticles() - system.getNumConstraints()
    gas_constant = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)
    steps_per_sample = round(SAMPLE_FS / timestep_fs)
    n_samples = round(picoseconds * 1000 / SAMPLE_FS)
    temperatures, potentials = [], []
    start = time.perf_counter()
    for _ in range(n_samples):
        simulation.step(steps_per_sample)
        state = simulation.context.getState(getEnergy=True)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        temperatures.append(2 * kinetic / (dof * gas_constant))
        potentials.append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    elapsed = time.perf_counter() - start
    temperatures, potentials = np.array(temperatures), np.array(potentials)
    if not (np.all(np.isfinite(potentials)) and np.all(np.isfinite(temperatures))):
        raise RuntimeError(f"{timestep_fs} fs: the run produced non-finite energies")
    return {"timestep_fs": timestep_fs, "hydrogen_mass_amu": hydrogen_mass,
            "picoseconds": picoseconds, "constraints": system.getNumConstraints(),
            "degrees_of_freedom": dof,
            "ns_per_day": picoseconds * 1e-3 / elapsed * 86400,
            "series": {"temperature_K": temperatures.round(2).tolist(),
                       "potential_kJ_mol": potentials.round(2).tolist()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ps", type=float, default=10.0, help="picoseconds per set-up")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--discard-ps", type=float, default=1.0,
                        help="left out of the means at the start of each run")
    parser.add_argument("--block-ps", type=float, default=1.0,
                        help="block length of the bootstrap errors")
    parser.add_argument("--out", type=Path, default=Path("docs/results/openmm_timesteps.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = shipped_model("chignolin")
    starts = load_chignolin_starts()
    index = int(np.argmin(np.abs(starts.temperatures - TEMPERATURE)))
    positions_nm = starts.positions[index] / 10.0
    results = json.loads(args.out.read_text()) if args.out.exists() else {
        "model": str(model.name), "model_fingerprint": model_fingerprint(model),
        "start": f"shipped start state {index} ({starts.temperatures[index]:.0f} K)",
        "temperature_K": TEMPERATURE, "friction_per_ps": 1.0, "platform": "Reference",
        "sample_interval_fs": SAMPLE_FS, "setups": {}}
    for name, (timestep, hydrogen_mass) in SETUPS.items():
        if name in results["setups"]:
            continue
        print(f"{name}: {args.ps} ps", flush=True)
        results["setups"][name] = run_setup(str(model), timestep, hydrogen_mass,
                                            positions_nm, args.ps, args.seed)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    for setup in results["setups"].values():
        summarise(setup, SAMPLE_FS, args.discard_ps, args.block_ps)
    args.out.write_text(json.dumps(results, indent=1))
    reference = results["setups"][next(iter(SETUPS))]["potential_energy_kJ_mol"]
    print(f"{'set-up':<36} {'T (K)':>15} {'<U> - <U>_1fs (kJ/mol)':>24} {'ns/day':>7}")
    for name, setup in results["setups"].items():
        t = setup["kinetic_temperature_K"]
        u = setup["potential_energy_kJ_mol"]
        gap = u["mean"] - reference["mean"]
        gap_error = float(np.hypot(u["error"], reference["error"]))
        print(f"{name:<36} {t['mean']:7.1f} +- {t['error']:4.1f} "
              f"{gap:14.1f} +- {gap_error:5.1f} {setup['ns_per_day']:7.2f}")


if __name__ == "__main__":
    main()
