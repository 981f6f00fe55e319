"""Replica exchange of chignolin with the classical force field: the reference ensemble.

The training conformations of the shipped models come from OpenMM with amber14 + GBn2
implicit solvent (:mod:`freecg_md.data.sampling`). That force field runs thousands of times
faster than the machine-learned one, so on a CPU it can be sampled long enough to cross
between the folded and unfolded basins many times: the equilibrium landscape the ML runs
are held against. This is the classical reference, not the ML model.

Each replica is an OpenMM Context with its own ``LangevinMiddleIntegrator`` (hydrogen mass
repartitioning and X-H constraints allow 4 fs). The GBn2 term, most of the force field's
cost on a CPU, is computed by :mod:`freecg_md.gbn2` (the same energy, compiled over all
pairs) unless ``gbn2="openmm"``. Every cycle each replica takes
``steps_per_cycle`` steps at its temperature; then neighbouring temperatures try to swap
with the project's :class:`~freecg_md.md.ReplicaExchange` (temperature indices move,
coordinates stay; velocities rescaled by ``sqrt(T_new / T_old)``). The run directory is the
project's own (:class:`~freecg_md.md.reporters.RunWriter`: a DCD per replica, ``frames.csv``,
``log.csv``, ``exchange.csv``, ``remd_stats.json``, ``config.json``), so that
:func:`freecg_md.analysis.read_run`, ``freecg-md plot landscape`` and ``freecg-md reduce``
apply unchanged. Checkpoints (every ``checkpoint_every`` cycles, atomic) hold every
Context's OpenMM checkpoint (positions, velocities, random state) and the exchange state;
``resume=True`` continues from the last one, on the same machine and platform.

    python -m freecg_md.classical_remd --cycles 20000 --output runs/classical_remd --resume
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase import units

from .units import EV_PER_KJ_MOL

__all__ = ["ClassicalREMDConfig", "run_classical_remd"]

CHECKPOINT = "classical_checkpoint.pt"


@dataclass(frozen=True)
class ClassicalREMDConfig:
    """A classical replica-exchange run of chignolin (amber14 + GBn2).

    Attributes
    ----------
    temperatures:
        (K,) K, strictly increasing, one replica each.
    n_cycles:
        Exchange cycles in all (a resumed run with more cycles extends it).
    output_dir:
        The run directory.
    steps_per_cycle:
        MD steps between exchange attempts.
    timestep_fs, friction_per_ps:
        Langevin integration.
    hydrogen_mass_amu:
        Hydrogen mass after repartitioning (None: natural masses).
    constrain_hydrogen_bonds:
        X-H bonds constrained (needed above about 2 fs).
    report_every, checkpoint_every:
        Cycles between saved frames, and between checkpoints.
    seed:
        Seeds every replica's integrator and the exchanges.
    platform, threads:
        OpenMM platform (``"CPU"``, ``"Reference"``, ``"CUDA"``...) and CPU threads per
        Context.
    workers:
        Replicas stepped at the same time, each from its own Python thread (OpenMM releases
        the interpreter lock while it steps). On the CPU platform ``workers * threads``
        should not exceed the cores; a small system gains more from several replicas at a
        time than from several threads per Context. The trajectories are the same for any
        number: each replica has its own integrator and random stream.
    gbn2:
        Who computes the GBn2 solvent term: ``"torch"`` (:mod:`freecg_md.gbn2`, the same
        energy compiled over all pairs on the CPU; faster than OpenMM's CPU platform on
        chignolin, see benchmarks/bench_gbn2.py), ``"openmm"`` (OpenMM's
        ``CustomGBForce``; on a GPU platform it stays on the GPU), or ``"auto"``: torch on
        the CPU platform, OpenMM's elsewhere. Like the platform, it may change when a run
        resumes (``config.json`` records from which cycle each was used).
    """

    temperatures: list[float]
    n_cycles: int
    output_dir: str
    steps_per_cycle: int = 250
    timestep_fs: float = 4.0
    friction_per_ps: float = 1.0
    hydrogen_mass_amu: float | None = 3.024
    constrain_hydrogen_bonds: bool = True
    report_every: int = 1
    checkpoint_every: int = 50
    seed: int = 0
    platform: str = "CPU"
    threads: int = 1
    workers: int = 1
    gbn2: str = "auto"
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from .md.remd import check_ladder

        check_ladder(self.temperatures)
        rules = {"n_cycles": self.n_cycles >= 0, "steps_per_cycle": self.steps_per_cycle >= 1,
                 "timestep_fs": self.timestep_fs > 0, "friction_per_ps": self.friction_per_ps > 0,
                 "report_every": self.report_every >= 1,
                 "checkpoint_every": self.checkpoint_every >= 1, "threads": self.threads >= 1,
                 "workers": self.workers >= 1}
        for name, ok in rules.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected a positive value")
        if self.gbn2 not in ("auto", "torch", "openmm"):
            raise ValueError(f"gbn2={self.gbn2!r}: expected 'auto', 'torch' or 'openmm'")
        if self.timestep_fs > 2.0 and not self.constrain_hydrogen_bonds:
            raise ValueError(f"timestep_fs={self.timestep_fs}: above 2 fs the X-H bonds must "
                             "be constrained (constrain_hydrogen_bonds=True)")

    def physics(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        return {key: value for key, value in dataclasses.asdict(self).items()
                if key not in ("n_cycles", "output_dir", "platform", "threads", "workers", "gbn2",
                               "metadata")}


def _contexts(config: ClassicalREMDConfig, temperatures: np.ndarray):
    import openmm
    from openmm import unit

    from .data.sampling import amber_gbn2_system

    pdb, system = amber_gbn2_system(config.constrain_hydrogen_bonds, config.hydrogen_mass_amu)
    if _gbn2_implementation(config) == "torch":
        from .gbn2 import with_torch_gbn2

        system = with_torch_gbn2(system)  # one compiled function, shared by the replicas
    platform = openmm.Platform.getPlatformByName(config.platform)
    properties = {"Threads": str(config.threads)} if config.platform == "CPU" else {}
    contexts = []
    for r, kelvin in enumerate(temperatures):
        integrator = openmm.LangevinMiddleIntegrator(
            kelvin * unit.kelvin, config.friction_per_ps / unit.picosecond,
            config.timestep_fs * unit.femtosecond)
        # OpenMM draws a random seed for 0: every replica gets its own non-zero one.
        integrator.setRandomNumberSeed(1 + config.seed * 1000 + r)
        contexts.append(openmm.Context(system, integrator, platform, dict(properties)))
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3  # CM motion removed
    return pdb, contexts, dof


def _gbn2_implementation(config: ClassicalREMDConfig) -> str:
    """``config.gbn2`` with ``"auto"`` resolved: torch on the CPU platform (where OpenMM
    evaluates the CustomGBForce pair by pair), OpenMM's force on any other."""
    if config.gbn2 != "auto":
        return config.gbn2
    return "torch" if config.platform == "CPU" else "openmm"


def _state(context, forces: bool = False):
    return context.getState(getEnergy=True, getPositions=True, getVelocities=True,
                            getForces=forces)


def run_classical_remd(config: ClassicalREMDConfig, resume: bool = False,
                       progress: bool = True) -> dict[str, Any]:
    """Run (or continue) the classical replica exchange; returns the exchange summary with
    the wall time. See the module docstring."""
    from openmm import unit
    from tqdm.auto import tqdm

    from .data.molecules import load_chignolin
    from .md.remd import ReplicaExchange
    from .md.reporters import RunWriter

    chignolin = load_chignolin()
    temperatures = np.asarray(config.temperatures, np.float64)
    n_replicas = temperatures.size
    output = Path(config.output_dir)
    checkpoint_path = output / CHECKPOINT
    pdb, contexts, dof = _contexts(config, temperatures)
    exchange = ReplicaExchange(temperatures, seed=config.seed)
    cell, pbc = np.zeros((3, 3)), np.zeros(3, bool)
    if resume and checkpoint_path.is_file():
        saved = torch.load(checkpoint_path, weights_only=True)
        if saved["physics"] != config.physics():
            raise ValueError(f"{checkpoint_path} belongs to another configuration: "
                             f"{saved['physics']} against {config.physics()}")
        for context, blob in zip(contexts, saved["contexts"], strict=True):
            context.loadCheckpoint(blob)
        exchange.load_state_dict(saved["exchange"])
        for r, context in enumerate(contexts):
            context.getIntegrator().setTemperature(
                exchange.replica_temperatures()[r] * unit.kelvin)
        cycle = int(saved["cycle"])
        writer = RunWriter.reopen(output, n_replicas, cell, pbc, int(saved["frames"]),
                                  cycle * config.steps_per_cycle)
    else:
        if checkpoint_path.exists() or (output / "config.json").exists():
            raise FileExistsError(f"{output} holds a run; pass resume=True (--resume) to "
                                  "continue it, or choose another output directory")
        import openmm

        contexts[0].setPositions(pdb.positions)
        openmm.LocalEnergyMinimizer.minimize(contexts[0], maxIterations=500)
        minimized = contexts[0].getState(getPositions=True).getPositions()
        for r, context in enumerate(contexts):
            context.setPositions(minimized)
            context.setVelocitiesToTemperature(temperatures[r] * unit.kelvin,
                                               1 + config.seed * 1000 + r)
        cycle = 0
        start = np.stack([_state(c).getPositions(asNumpy=True).value_in_unit(unit.angstrom)
                          for c in contexts])
        writer = RunWriter.create(output, chignolin.topology, start, cell, pbc)
    step = cycle * config.steps_per_cycle
    # Which implementation computed GBn2 from which cycle on (runs from before the choice
    # existed used OpenMM's force): the physics is the same, the provenance is kept.
    previous_path = output / "config.json"
    previous = json.loads(previous_path.read_text()) if resume and previous_path.is_file() else {}
    history = previous.get("gbn2_from_cycle") or ([[0, "openmm"]] if previous else [])
    if not history or history[-1][1] != _gbn2_implementation(config):
        history = history + [[cycle, _gbn2_implementation(config)]]
    writer.write_config({
        "kind": "classical replica exchange (the reference ensemble, not the ML model)",
        "force_field": "amber14-all.xml + implicit/gbn2.xml (OpenMM)",
        "run": {"temperatures": temperatures.tolist(), "n_steps": config.n_cycles
                * config.steps_per_cycle, "timestep_fs": config.timestep_fs,
                "exchange_interval": config.steps_per_cycle,
                "report_interval": config.report_every * config.steps_per_cycle,
                "friction_per_ps": config.friction_per_ps, "seed": config.seed},
        "classical": dataclasses.asdict(config), "gbn2_from_cycle": history,
        "degrees_of_freedom": dof,
        "openmm": __import__("openmm").__version__, **config.metadata})

    def save_checkpoint() -> None:
        writer.flush()
        blob = {"physics": config.physics(), "cycle": cycle, "frames": writer.frames_written,
                "contexts": [context.createCheckpoint() for context in contexts],
                "exchange": exchange.state_dict()}
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        tmp = checkpoint_path.with_name(f".{CHECKPOINT}.tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, checkpoint_path)
        writer.write_stats(exchange.summary())

    def advance(context) -> None:
        context.getIntegrator().step(config.steps_per_cycle)

    pool = ThreadPoolExecutor(config.workers) if config.workers > 1 else None
    started = time.perf_counter()
    first = cycle
    bar = tqdm(total=config.n_cycles, initial=cycle, unit="cycle", disable=not progress)
    try:
        while cycle < config.n_cycles:
            if pool is None:
                for context in contexts:
                    advance(context)
            else:
                # list() waits for every replica and re-raises the first error.
                list(pool.map(advance, contexts))
            cycle += 1
            step = cycle * config.steps_per_cycle
            report = cycle % config.report_every == 0
            states = [_state(c, forces=report) for c in contexts]
            energies = np.array([s.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
                                 for s in states]) * EV_PER_KJ_MOL
            if not np.all(np.isfinite(energies)):
                raise FloatingPointError(f"cycle {cycle}: potential energies {energies} eV")
            if report:
                kinetic = np.array([s.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
                                    for s in states]) * EV_PER_KJ_MOL
                forces = np.stack([s.getForces(asNumpy=True).value_in_unit(
                    unit.kilojoule_per_mole / unit.angstrom) for s in states]) * EV_PER_KJ_MOL
                writer.report(step, step * config.timestep_fs,
                              np.stack([s.getPositions(asNumpy=True).value_in_unit(
                                  unit.angstrom) for s in states]),
                              energies, kinetic, 2 * kinetic / (dof * units.kB),
                              exchange.temperature_of_replica.copy(),
                              np.linalg.norm(forces, axis=-1).max(axis=1))
            scale, outcome = exchange.attempt(energies)
            writer.log_exchange(step, exchange.n_attempts, exchange.temperature_of_replica,
                                outcome)
            for r in np.nonzero(scale != 1.0)[0]:
                context = contexts[r]
                context.getIntegrator().setTemperature(
                    exchange.replica_temperatures()[r] * unit.kelvin)
                context.setVelocities(states[r].getVelocities(asNumpy=True) * float(scale[r]))
            if cycle % config.checkpoint_every == 0 or cycle == config.n_cycles:
                save_checkpoint()
            bar.update(1)
    finally:
        if pool is not None:
            pool.shutdown()
        bar.close()
        writer.close()
    seconds = time.perf_counter() - started
    done_ns = (cycle - first) * config.steps_per_cycle * config.timestep_fs * 1e-6
    summary = {**exchange.summary(), "wall_seconds": seconds,
               "ns_per_day_per_replica": done_ns / max(seconds, 1e-9) * 86400}
    return summary


def main(argv: list[str] | None = None) -> int:
    from .md.remd import temperature_ladder

    parser = argparse.ArgumentParser(
        description="Classical replica exchange of chignolin (amber14 + GBn2, OpenMM): the "
                    "reference ensemble.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--t-min", type=float, default=300.0, help="K")
    parser.add_argument("--t-max", type=float, default=450.0, help="K")
    parser.add_argument("--temperatures", type=float, nargs="+", help="explicit ladder, K")
    parser.add_argument("--cycles", type=int, default=1000, help="exchange cycles")
    parser.add_argument("--steps-per-cycle", type=int, default=250)
    parser.add_argument("--timestep", type=float, default=4.0, help="fs")
    parser.add_argument("--friction", type=float, default=1.0, help="1/ps")
    parser.add_argument("--hydrogen-mass", type=float, default=3.024,
                        help="amu after repartitioning; 0 for natural masses")
    parser.add_argument("--no-constraints", action="store_true",
                        help="leave X-H bonds free (then --timestep at most 2 fs)")
    parser.add_argument("--report-every", type=int, default=1, help="cycles per frame")
    parser.add_argument("--checkpoint-every", type=int, default=50, help="cycles")
    parser.add_argument("--platform", default="CPU")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per replica")
    parser.add_argument("--workers", type=int, default=1,
                        help="replicas stepped at the same time, one Python thread each "
                             "(workers x threads at most the cores)")
    parser.add_argument("--gbn2", choices=("auto", "torch", "openmm"), default="auto",
                        help="who computes the GBn2 term: compiled torch (faster on a CPU), "
                             "OpenMM's CustomGBForce (the same energy), or auto: torch on "
                             "the CPU platform, OpenMM's on others")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=str(Path("runs") / "classical_remd"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    ladder = (args.temperatures if args.temperatures
              else temperature_ladder(args.t_min, args.t_max, args.replicas).tolist())
    try:
        config = ClassicalREMDConfig(
            temperatures=ladder, n_cycles=args.cycles, output_dir=args.output,
            steps_per_cycle=args.steps_per_cycle, timestep_fs=args.timestep,
            friction_per_ps=args.friction,
            hydrogen_mass_amu=args.hydrogen_mass or None,
            constrain_hydrogen_bonds=not args.no_constraints, report_every=args.report_every,
            checkpoint_every=args.checkpoint_every, seed=args.seed, platform=args.platform,
            threads=args.threads, workers=args.workers, gbn2=args.gbn2)
        # GBn2 in torch runs in this process (its compiled code on one thread): torch's own
        # threads, used by the eager fallback, no more than each Context's.
        torch.set_num_threads(args.threads)
        print(f"classical REMD of chignolin (amber14 + GBn2): {len(ladder)} replicas at "
              f"{', '.join(f'{t:.0f}' for t in ladder)} K, {args.cycles} cycles of "
              f"{args.steps_per_cycle} x {args.timestep} fs; {args.output}", flush=True)
        summary = run_classical_remd(config, resume=args.resume)
    except (FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rates = ", ".join("n/a" if r is None else f"{r:.2f}"
                      for r in summary["acceptance_neighbours"])
    print(f"{summary['ns_per_day_per_replica']:.1f} ns/day per replica; acceptance per pair "
          f"{rates}; round trips {summary['round_trips']}")
    print(json.dumps({k: summary[k] for k in ("round_trips", "wall_seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
