"""Conformations of chignolin from classical MD (OpenMM, amber14 + GBn2 implicit solvent).

Runs one Langevin simulation per temperature of a ladder, from the native structure, and
saves frames spaced to be decorrelated. Low temperatures cover the folded basin, high ones
the unfolded state and what lies between. Each temperature is saved as soon as it is done,
so a killed run resumes with the temperatures still missing.

Training data for a force field must contain what the force field's own MD will visit.
Constraining bonds to hydrogen (the classical-MD habit that allows 2-4 fs steps) leaves
every X-H bond at its equilibrium length in every frame, and a model trained on such frames
has never seen a stretched X-H bond: its energies and forces go wrong within femtoseconds of
unconstrained MD. The default here is therefore unconstrained at 1 fs; the constrained,
mass-repartitioned 4 fs setting exists to reproduce the first part of the shipped data.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .molecules import load_chignolin

__all__ = ["SamplingConfig", "sample_conformations"]


@dataclass(frozen=True)
class SamplingConfig:
    """Classical sampling of chignolin conformations.

    Attributes
    ----------
    temperatures:
        Kelvin, one simulation each.
    frames_per_temperature:
        Frames saved per temperature.
    frame_interval_ps:
        Simulated time between saved frames, ps.
    equilibration_ps:
        Discarded simulation at the start of each temperature, ps.
    timestep_fs:
        Integration step, fs: 1 fs without constraints; up to 4 fs with
        ``constrain_hydrogen_bonds`` and ``hydrogen_mass_amu=3``.
    constrain_hydrogen_bonds:
        Hold bonds to hydrogen at their amber length (OpenMM ``HBonds``). Off by default:
        see the module docstring for why ML training data must not be constrained.
    hydrogen_mass_amu:
        Hydrogen mass repartitioning (None: natural masses). Masses change the dynamics but
        not the Boltzmann distribution of conformations that is sampled. amber14 + GBn2 runs
        only about 200 steps per second on one core here, which is why frames are 0.25 ps
        apart and the high temperatures do the exploring.
    friction_per_ps:
        Langevin friction, 1/ps.
    seed:
        Base seed; temperature ``k`` (its position in ``temperatures``) uses ``seed + k``
        for both the integrator and the initial velocities.
    threads:
        CPU threads for OpenMM (ignored by platforms other than CPU).
    platform:
        OpenMM platform name: "CPU", "Reference", "CUDA" or "OpenCL".
    """

    temperatures: tuple[float, ...] = (300.0, 350.0, 400.0, 450.0, 520.0, 600.0)
    frames_per_temperature: int = 570
    frame_interval_ps: float = 0.25
    equilibration_ps: float = 10.0
    timestep_fs: float = 1.0
    constrain_hydrogen_bonds: bool = False
    hydrogen_mass_amu: float | None = None
    friction_per_ps: float = 1.0
    seed: int = 2024
    threads: int = 1
    platform: str = "CPU"

    def __post_init__(self) -> None:
        if not self.temperatures or min(self.temperatures) <= 0:
            raise ValueError(f"temperatures={self.temperatures}: expected positive kelvin")
        for name in ("frames_per_temperature", "frame_interval_ps", "timestep_fs",
                     "friction_per_ps", "threads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}: expected > 0")
        if self.hydrogen_mass_amu is not None and self.hydrogen_mass_amu <= 0:
            raise ValueError(f"hydrogen_mass_amu={self.hydrogen_mass_amu}: expected > 0 or None")
        if self.timestep_fs > 2.0 and not self.constrain_hydrogen_bonds:
            raise ValueError(
                f"timestep_fs={self.timestep_fs} without constrain_hydrogen_bonds: X-H "
                "vibrations (period ~10 fs) need a step of at most 2 fs (1 fs recommended)")
        if self.equilibration_ps < 0:
            raise ValueError(f"equilibration_ps={self.equilibration_ps}: expected >= 0")

    def to_json(self) -> str:
        """The configuration as a JSON object string."""
        return json.dumps(dataclasses.asdict(self))


def _physics(config: SamplingConfig) -> str:
    """The settings that decide what a temperature's frames are (not where they ran)."""
    fields = dataclasses.asdict(config)
    for key in ("temperatures", "frames_per_temperature", "threads", "platform"):
        fields.pop(key)
    return json.dumps(fields, sort_keys=True)


def amber_gbn2_system(constrain_hydrogen_bonds: bool, hydrogen_mass_amu: float | None):
    """Chignolin in amber14 + GBn2 (OpenMM): ``(pdb, system)``, the force field of the
    training conformations (and of :mod:`freecg_md.classical_remd`)."""
    from openmm import app, unit

    pdb = app.PDBFile(str(load_chignolin().pdb_path))
    forcefield = app.ForceField("amber14-all.xml", "implicit/gbn2.xml")
    system = forcefield.createSystem(
        pdb.topology, nonbondedMethod=app.NoCutoff,
        constraints=app.HBonds if constrain_hydrogen_bonds else None,
        hydrogenMass=None if hydrogen_mass_amu is None else hydrogen_mass_amu * unit.amu)
    return pdb, system


def _simulation(temperature: float, config: SamplingConfig, seed: int):
    import openmm
    from openmm import app, unit

    pdb, system = amber_gbn2_system(config.constrain_hydrogen_bonds, config.hydrogen_mass_amu)
    integrator = openmm.LangevinMiddleIntegrator(
        temperature * unit.kelvin, config.friction_per_ps / unit.picosecond,
        config.timestep_fs * unit.femtosecond)
    integrator.setRandomNumberSeed(seed)
    platform = openmm.Platform.getPlatformByName(config.platform)
    properties = {"Threads": str(config.threads)} if config.platform == "CPU" else {}
    simulation = app.Simulation(pdb.topology, system, integrator, platform, properties)
    simulation.context.setPositions(pdb.positions)
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    return simulation


def _sample_one(temperature: float, config: SamplingConfig, seed: int,
                progress: bool) -> tuple[np.ndarray, np.ndarray]:
    from openmm import unit

    simulation = _simulation(temperature, config, seed)
    steps_per_frame = max(1, round(config.frame_interval_ps * 1000 / config.timestep_fs))
    simulation.step(round(config.equilibration_ps * 1000 / config.timestep_fs))
    frames, times = [], []
    for index in tqdm(range(config.frames_per_temperature), disable=not progress,
                      desc=f"{temperature:.0f} K", unit="frame", leave=False):
        simulation.step(steps_per_frame)
        state = simulation.context.getState(getPositions=True)
        frames.append(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
        times.append(config.equilibration_ps + (index + 1) * config.frame_interval_ps)
    return np.asarray(frames, dtype=np.float32), np.asarray(times)


def sample_conformations(config: SamplingConfig, out_path: str | Path,
                         progress: bool = True, worker: int = 0, n_workers: int = 1) -> Path | None:
    """Run the temperature ladder of ``config`` and save the frames to ``out_path``.

    Parameters
    ----------
    config:
        What to simulate.
    out_path:
        The ``.npz`` written: ``positions`` (n_frames, 166, 3) float32 Å, ``temperature``
        (n_frames,) K, ``time_ps`` (n_frames,) ps since the start of the run, ``numbers``
        (166,) atomic numbers and ``config`` (JSON string), temperatures in ladder order.
    progress:
        Show tqdm bars (temperatures, and frames within one).
    worker, n_workers:
        With ``n_workers`` processes, worker ``w`` runs the temperatures with ladder index
        ``k % n_workers == w``.

    Returns
    -------
    Path or None
        ``out_path`` once every temperature is done; None if other workers' are pending.

    Notes
    -----
    Each finished temperature is saved at once to ``<out>.parts/`` and skipped on a rerun,
    so a killed run loses at most the temperature in progress. The ``.npz`` is assembled
    by whichever call finds all parts done.
    """
    if not 0 <= worker < n_workers:
        raise ValueError(f"worker={worker} must be in [0, n_workers={n_workers})")
    out_path = Path(out_path)
    parts = out_path.with_suffix(".parts")
    parts.mkdir(parents=True, exist_ok=True)
    for k, temperature in enumerate(tqdm(config.temperatures, disable=not progress,
                                         desc="temperatures", unit="T")):
        part = parts / f"T{temperature:.1f}_seed{config.seed + k}.npz"
        if part.exists() or k % n_workers != worker:
            continue
        positions, times = _sample_one(temperature, config, config.seed + k, progress)
        tmp = part.with_suffix(".tmp.npz")
        np.savez(tmp, positions=positions, time_ps=times, config=_physics(config))
        os.replace(tmp, part)
    missing = [k for k, t in enumerate(config.temperatures)
               if not (parts / f"T{t:.1f}_seed{config.seed + k}.npz").exists()]
    if missing:
        return None
    positions, temperatures, times = [], [], []
    for k, temperature in enumerate(config.temperatures):
        part = parts / f"T{temperature:.1f}_seed{config.seed + k}.npz"
        with np.load(part) as data:
            # Parts are keyed by temperature and seed only: refuse ones from another setting.
            made_with = str(data["config"]) if "config" in data else None
            if made_with != _physics(config):
                raise ValueError(
                    f"{part} was sampled with {made_with or 'an unrecorded setting'}, not "
                    f"{_physics(config)}; delete it or use another output path")
            if len(data["time_ps"]) != config.frames_per_temperature:
                raise ValueError(
                    f"{part} holds {len(data['time_ps'])} frames, expected "
                    f"frames_per_temperature={config.frames_per_temperature}; delete it or "
                    "use another output path")
            positions.append(data["positions"])
            times.append(data["time_ps"])
            temperatures.append(np.full(len(data["time_ps"]), temperature))
    tmp = out_path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, positions=np.concatenate(positions),
                        temperature=np.concatenate(temperatures), time_ps=np.concatenate(times),
                        numbers=load_chignolin().atoms.numbers, config=config.to_json())
    os.replace(tmp, out_path)
    return out_path
