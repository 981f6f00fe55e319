"""The run loop shared by Langevin and replica-exchange MD.

Each step: BAOAB with one force evaluation, then the guards. Every ``report_interval``
steps a report (frames, logs), every ``exchange_interval`` steps an exchange round, every
``checkpoint_interval`` steps (and at the end) a checkpoint. The report at a step comes
before that step's exchange, so each frame is labelled with the temperature it was
simulated at. A run that meets a NaN, an infinite value or an explosion stops with a
:class:`SimulationError` naming the replica and the step; it writes no checkpoint after the
bad step, so the last checkpoint and all frames before it stay valid.
"""

from __future__ import annotations

import dataclasses
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mdtraj
import numpy as np
import torch
from tqdm.auto import tqdm

from ..calculator import resolve_dtype
from .checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    merge_replica_parts,
    save_checkpoint,
)
from .distributed import SerialComm
from .guards import GuardLimits, Guards, SimulationError, check_timestep
from .integrators import baoab_step
from .potentials import check_potential, check_results
from .protocol import Potential
from .remd import ReplicaExchange, check_ladder
from .reporters import RunWriter, topology_from_numbers
from .state import (
    EQUILIBRATION_STREAM,
    NATURAL_HYDROGEN_MASS,
    ReplicaState,
    degrees_of_freedom,
    instantaneous_temperature,
    kinetic_energy,
    maxwell_boltzmann_velocities,
    replica_seed,
)
from .worker_processes import WorkerError

__all__ = ["EQUILIBRATION_DIR", "RunConfig", "RunResult", "SimulationError", "run_replicas"]

# The potential rejected the positions (NaN, an overlap), or one of its worker processes
# died (out of memory, killed): the run stops as the guards stop it, with what was written
# before kept, and the other ranks told.
EVALUATION_FAILURES = (ValueError, WorkerError)

# The equilibration stage's run directory, inside the production's.
EQUILIBRATION_DIR = "equilibration"

# Metadata that says where a run started (``initial``: the commands' --initial): a resume
# keeps the recorded value, since it continues from the checkpoint whatever is passed now.
START_KEYS = ("initial",)


@dataclass
class RunConfig:
    """A Langevin or replica-exchange run; JSON-serialisable, written to ``config.json``.

    Attributes
    ----------
    temperatures:
        K, one per replica. With exchanges, the ladder (strictly increasing); without,
        each replica's own bath temperature (repeats allowed).
    n_steps:
        Total steps of the run (a resumed run continues up to it).
    output_dir:
        The run directory.
    friction_per_ps, timestep_fs:
        Langevin ``gamma`` (1/ps) and time step (fs).
    exchange_interval:
        Steps between exchange rounds; 0 runs plain Langevin without exchanges.
    report_interval, checkpoint_interval:
        Steps between saved frames/log lines, and between checkpoints.
    seed:
        Seeds every generator: replica r's from ``(seed, r)``, the exchange's from
        ``(seed, exchange stream)`` (:func:`~freecg_md.md.state.replica_seed`).
    replica_seeds:
        Explicit seeds of the replica generators, overriding those derived from ``seed``
        (to rerun one replica of a batch on its own).
    device, dtype:
        Where and in what precision the potential runs (checked against a potential that
        exposes ``device``/``dtype``; recorded in config.json).
    remove_com_motion:
        Remove the centre-of-mass velocity from drawn starting velocities and after every
        O step (``dof = 3N-3``); for translation-invariant potentials.
    draw_velocities:
        Start from Maxwell-Boltzmann velocities drawn from each replica's generator at its
        temperature; False keeps ``state.velocities``.
    max_force:
        eV/Å; a larger force component stops the run.
    max_energy_jump_per_atom:
        eV per atom; a larger change of a replica's potential energy in one step stops it.
    max_temperature_ratio, temperature_window:
        A replica whose kinetic temperature, averaged over ``temperature_window`` steps,
        exceeds ``max_temperature_ratio`` times its bath temperature stops the run (raised
        for small systems; :mod:`freecg_md.md.guards`). None turns it off.
    max_bond_stretch, min_bond_compression:
        A bond of the starting structure (replica 0's) longer or shorter than these
        multiples of its starting length stops the run. None turns either off.
    max_displacement:
        Å; an atom moving farther in one step stops the run. None turns it off.
    max_force_disagreement:
        eV/Å; with a committee potential (one that sets ``force_disagreement``), a replica
        whose largest per-atom force disagreement exceeds it stops the run: the committee
        no longer agrees on where the atoms go. None (the default) only records it.
    allow_long_timestep:
        Accept a time step above :func:`~freecg_md.md.guards.max_stable_timestep` (2 fs
        with hydrogens of natural mass); refused otherwise.
    flush_every:
        Frames buffered before they are written to the trajectories.
    equilibration_steps:
        Steps of an equilibration stage run before the ``n_steps`` of production: every
        replica at its own starting temperature, no exchanges, friction
        ``equilibration_friction_per_ps``. Its frames and logs go to
        ``output_dir/equilibration/`` (a run directory of its own); production starts from
        its final positions and velocities, at step 0 and time 0 of ``output_dir``.
    equilibration_friction_per_ps:
        Langevin ``gamma`` (1/ps) of the equilibration stage; None takes
        ``friction_per_ps``. A larger friction thermalises faster.
    """

    temperatures: list[float]
    n_steps: int
    output_dir: str
    friction_per_ps: float = 1.0
    timestep_fs: float = 1.0
    exchange_interval: int = 0
    report_interval: int = 100
    checkpoint_interval: int = 1000
    seed: int = 0
    replica_seeds: list[int] | None = None
    device: str = "cpu"
    dtype: str = "float32"
    remove_com_motion: bool = True
    draw_velocities: bool = True
    max_force: float = 1e3
    max_energy_jump_per_atom: float = 1.0
    max_temperature_ratio: float | None = 1.5
    temperature_window: int = 100
    max_bond_stretch: float | None = 1.5
    min_bond_compression: float | None = 0.6
    max_displacement: float | None = 0.5
    max_force_disagreement: float | None = None
    allow_long_timestep: bool = False
    flush_every: int = 10
    equilibration_steps: int = 0
    equilibration_friction_per_ps: float | None = None

    def __post_init__(self) -> None:
        self.temperatures = [float(t) for t in np.asarray(self.temperatures).reshape(-1)]
        self.output_dir = str(self.output_dir)
        if self.replica_seeds is not None:
            bad = [s for s in self.replica_seeds
                   if isinstance(s, bool) or not isinstance(s, int | np.integer)]
            if bad:
                raise ValueError(f"replica_seeds={self.replica_seeds!r}: expected integers "
                                 f"({bad[0]!r} is not)")
            self.replica_seeds = [int(s) for s in self.replica_seeds]
        # Counts of steps and frames, and seeds: a float or a bool here is a mistake (2.5
        # would be used as 2), not a value to round.
        for name in ("n_steps", "exchange_interval", "report_interval", "checkpoint_interval",
                     "seed", "temperature_window", "flush_every", "equilibration_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ValueError(f"{name}={value!r}: expected an integer")
            setattr(self, name, int(value))
        rules = {
            "exchange_interval": (self.exchange_interval >= 0, "an integer >= 0"),
            "report_interval": (self.report_interval >= 1, "a positive integer"),
            "checkpoint_interval": (self.checkpoint_interval >= 1, "a positive integer"),
            "flush_every": (self.flush_every >= 1, "a positive integer"),
            "n_steps": (self.n_steps >= 0, "an integer >= 0"),
            "equilibration_steps": (self.equilibration_steps >= 0, "an integer >= 0"),
            "equilibration_friction_per_ps": (
                self.equilibration_friction_per_ps is None
                or self.equilibration_friction_per_ps >= 0, "None or a friction >= 0 1/ps"),
            "seed": (self.seed >= 0, "an integer >= 0"),
            "friction_per_ps": (self.friction_per_ps >= 0, "a friction >= 0 1/ps"),
            "timestep_fs": (self.timestep_fs > 0, "a time step > 0 fs"),
            "max_force": (self.max_force > 0, "a limit > 0 eV/Å"),
            "max_energy_jump_per_atom": (self.max_energy_jump_per_atom > 0, "a limit > 0 eV"),
            "max_temperature_ratio": (self.max_temperature_ratio is None
                                      or self.max_temperature_ratio > 1, "None or a ratio > 1"),
            "temperature_window": (self.temperature_window >= 1, "a positive integer"),
            "max_bond_stretch": (self.max_bond_stretch is None or self.max_bond_stretch > 1,
                                 "None or a ratio > 1"),
            "min_bond_compression": (self.min_bond_compression is None
                                     or 0 < self.min_bond_compression < 1,
                                     "None or a ratio between 0 and 1"),
            "max_displacement": (self.max_displacement is None or self.max_displacement > 0,
                                 "None or a distance > 0 Å"),
            "max_force_disagreement": (self.max_force_disagreement is None
                                       or self.max_force_disagreement > 0,
                                       "None or a limit > 0 eV/Å"),
            "replica_seeds": (self.replica_seeds is None
                              or len(self.replica_seeds) == self.n_replicas,
                              f"one seed per replica ({self.n_replicas})"),
        }
        for name, (valid, expected) in rules.items():
            if not valid:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected {expected}")
        if self.replica_seeds is not None and self.equilibration_steps:
            # The stage seeds replica r from (seed, r) in a stream of its own, which explicit
            # production seeds cannot reproduce.
            raise ValueError(f"equilibration_steps={self.equilibration_steps} with "
                             "replica_seeds: expected 0 (equilibrate in a run of its own, "
                             "then start this one from its final state)")
        if self.exchange_interval:
            check_ladder(self.temperatures)
        elif not (self.temperatures and np.all(np.isfinite(self.temperatures))
                  and min(self.temperatures) > 0):
            raise ValueError(f"temperatures={self.temperatures}: expected one value > 0 K "
                             "per replica")
        resolve_dtype(self.dtype)
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"device={self.device!r} is not a torch device: {error}") from None

    @property
    def n_replicas(self) -> int:
        return len(self.temperatures)

    def guard_limits(self) -> GuardLimits:
        """The thresholds of the dynamics' guards (:class:`~freecg_md.md.guards.Guards`)."""
        return GuardLimits(self.max_temperature_ratio, self.temperature_window,
                           self.max_bond_stretch, self.min_bond_compression,
                           self.max_displacement)

    def seeds(self) -> list[int]:
        """The seed of every replica's generator."""
        if self.replica_seeds is not None:
            return list(self.replica_seeds)
        return [replica_seed(self.seed, r) for r in range(self.n_replicas)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def equilibration(self) -> RunConfig:
        """The equilibration stage as a run of its own (see ``equilibration_steps``).

        Each replica stays at its own temperature (no exchanges); its generators are seeded
        from a stream of their own, so production does not replay the stage's noise.
        """
        friction = self.equilibration_friction_per_ps
        return dataclasses.replace(
            self, n_steps=self.equilibration_steps, exchange_interval=0,
            output_dir=str(Path(self.output_dir) / EQUILIBRATION_DIR),
            friction_per_ps=self.friction_per_ps if friction is None else friction,
            replica_seeds=[replica_seed(self.seed, r, EQUILIBRATION_STREAM)
                           for r in range(self.n_replicas)],
            equilibration_steps=0, equilibration_friction_per_ps=None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass
class RunResult:
    """What :func:`run_replicas` returns (on every rank, for all replicas).

    ``state`` the final state, ``energies`` (R,) eV, ``exchange`` the exchange (None
    without), ``steps_run`` steps taken by this call, ``wall_seconds`` and ``ns_per_day``
    its speed, ``neighbor_stats`` of this process's potential when it has them, and
    ``equilibration`` the equilibration stage's result when this call ran one.
    """

    state: ReplicaState
    energies: torch.Tensor
    exchange: ReplicaExchange | None
    steps_run: int
    wall_seconds: float
    ns_per_day: float
    neighbor_stats: dict[str, int] | None
    equilibration: RunResult | None = None


class _Run:
    """The loop's state; one method per phase, each short."""

    def __init__(self, potential: Potential, state: ReplicaState, config: RunConfig,
                 comm: SerialComm, draw_velocities: bool, reference: np.ndarray) -> None:
        if state.n_replicas != config.n_replicas:
            raise ValueError(f"state has {state.n_replicas} replicas but config.temperatures "
                             f"has {config.n_replicas}")
        check_timestep(config.timestep_fs, state.masses, config.allow_long_timestep)
        if config.remove_com_motion and state.n_atoms < 2:
            raise ValueError(f"remove_com_motion=True leaves {state.n_atoms} atom(s) no "
                             "degrees of freedom; expected at least 2 atoms")
        check_potential(potential, config.dtype, config.device, state.numbers.numpy())
        self.potential, self.config, self.comm = potential, config, comm
        self.draw_velocities = draw_velocities
        self.extra: dict[str, Any] = {}
        self.block = comm.block(state.n_replicas)
        self.state = state.select(self.block)
        self.global_state = state
        seeds = config.seeds()[self.block]
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        self.exchange = (ReplicaExchange(config.temperatures, config.seed)
                         if config.exchange_interval else None)
        self.directory = Path(config.output_dir)
        self.writer: RunWriter | None = None
        self.energies = self.forces = torch.empty(0)
        self.guards = Guards(config.guard_limits(), reference, state.numbers.numpy(),
                             state.cell.numpy(), state.pbc.numpy(),
                             degrees_of_freedom(state.n_atoms, config.remove_com_motion),
                             self.state.n_replicas)

    # -- set-up ------------------------------------------------------------------------
    def tindex(self) -> np.ndarray:
        """(R,) the temperature index of every replica now (its own index without exchanges)."""
        if self.exchange is None:
            return np.arange(self.config.n_replicas)
        return self.exchange.temperature_of_replica.copy()

    def temperatures(self) -> torch.Tensor:
        """(r,) K, the bath temperatures of the local replicas now."""
        kelvin = np.asarray(self.config.temperatures)[self.tindex()[self.block]]
        return torch.as_tensor(kelvin, dtype=torch.float64)

    def start(self, topology: mdtraj.Topology | None) -> None:
        for name in ("config.json", CHECKPOINT_NAME):
            if (self.directory / name).exists():
                raise FileExistsError(f"{self.directory / name} exists; pass resume=True to "
                                      "continue that run or choose a new output_dir")
        self.comm.barrier()  # every rank has looked before rank 0 creates the files
        if self.draw_velocities:
            self.state.velocities = maxwell_boltzmann_velocities(
                self.state.masses, self.temperatures(), self.generators,
                self.config.remove_com_motion)
        try:
            self.energies, self.forces = self.potential.evaluate(self.state.positions)
            message = self.guard(self.energies, self.forces, previous=None)
        except EVALUATION_FAILURES as error:
            message = f"step {self.state.step}: {error}{self.local_note()}"
        self.stop_if_failed(message, self.state.step)
        if self.comm.is_writer:
            topology = topology or topology_from_numbers(self.state.numbers.numpy())
            self.writer = RunWriter.create(
                self.directory, topology, self.global_state.positions.numpy(),
                self.state.cell.numpy(), self.state.pbc.numpy(), self.config.flush_every,
                disagreement=self.disagreement() is not None)
            self.writer.write_config(self.metadata())
        self.save()

    def resume(self) -> None:
        checkpoint = load_checkpoint(self.directory / CHECKPOINT_NAME)
        checkpoint.check_matches(self.config.to_dict(), self.state.numbers, self.state.masses)
        path = self.directory / "config.json"
        previous = json.loads(path.read_text()) if path.is_file() else {}
        self.check_same_origin(checkpoint, previous)
        self.keep_recorded_start(previous)
        b = self.block
        self.state.positions = checkpoint.positions[b].clone()
        self.state.velocities = checkpoint.velocities[b].clone()
        self.state.step = checkpoint.step
        self.forces, self.energies = checkpoint.forces[b].clone(), checkpoint.energies[b].clone()
        for generator, saved in zip(self.generators, checkpoint.generator_states[b], strict=True):
            generator.set_state(saved)
        if self.exchange is not None:
            self.exchange.load_state_dict(checkpoint.exchange)
        if self.comm.is_writer:
            self.writer = RunWriter.reopen(
                self.directory, self.config.n_replicas, self.state.cell.numpy(),
                self.state.pbc.numpy(), checkpoint.frames_written[0], checkpoint.step,
                self.config.flush_every)
            self._record_resume(checkpoint.step, previous)
        self.comm.barrier()  # no rank runs ahead while rank 0 truncates the files

    def _record_resume(self, step: int, previous: dict[str, Any]) -> None:
        """``config.json`` with the resume at ``step`` among its ``resumed_at_steps``, where
        it continues the run from a step not recorded yet; ``previous`` is the file as it
        was. The file is rewritten only if that or the settings changed, so a finished run
        resumed as it was leaves it as it is (reduced results copy it)."""
        resumes = previous.get("resumed_at_steps", [])
        if step < self.config.n_steps and step not in resumes:
            resumes = resumes + [step]
        record = {**self.metadata(), **({"resumed_at_steps": resumes} if resumes else {})}
        record = json.loads(json.dumps(record))
        # write_config adds the package versions: those of the run's start stay.
        if record != {key: value for key, value in previous.items() if key != "versions"}:
            self.writer.write_config(record)

    def keep_recorded_start(self, previous: dict[str, Any]) -> None:
        """Keep the start recorded in ``config.json`` (``previous``): a resumed run continues
        from its checkpoint, not from the start its command names now, so a record such as
        ``initial`` stays the one the run began with; a different one is warned about."""
        for key in START_KEYS:
            if key not in previous:
                continue
            if key in self.extra and self.extra[key] != previous[key]:
                warnings.warn(
                    f"the run in {self.directory} started from {previous[key]!r} and continues "
                    f"from its checkpoint; {key}={self.extra[key]!r} is not used and the "
                    "record keeps the original start", stacklevel=5)
            self.extra[key] = previous[key]

    def check_same_origin(self, checkpoint: Checkpoint, previous: dict[str, Any]) -> None:
        """CheckpointError if the run's recorded ``config.json`` (``previous``; empty if
        there is none) names model files other than this resume's (by fingerprint): a run
        continued with another model would be recorded as the new model's alone. For
        checkpoints written before they held the masses, the same for the recorded
        ``hydrogen_mass`` (None: natural masses)."""
        saved, now = previous.get("model_fingerprint"), self.extra.get("model_fingerprint")
        if saved is not None and now is not None and saved != now:
            raise CheckpointError(
                f"the run in {self.directory} was made with model fingerprint {saved!r}, not "
                f"{now!r}: resume it with the same model file(s) in the same order, or run "
                "the new model into another output directory")
        if (checkpoint.masses is None and "hydrogen_mass" in previous
                and "hydrogen_mass" in self.extra):
            def natural(value: float | None) -> float:
                return NATURAL_HYDROGEN_MASS if value is None else float(value)

            if natural(previous["hydrogen_mass"]) != natural(self.extra["hydrogen_mass"]):
                raise CheckpointError(
                    f"the run in {self.directory} was made with hydrogen_mass="
                    f"{previous['hydrogen_mass']!r}, not {self.extra['hydrogen_mass']!r}: "
                    "resume it with the same --hydrogen-mass")

    def metadata(self) -> dict[str, Any]:
        return {**self.extra, "run": self.config.to_dict(), "n_atoms": self.state.n_atoms,
                "n_replicas": self.config.n_replicas, "world_size": self.comm.world_size,
                "potential": type(self.potential).__name__,
                "replica_seeds": self.config.seeds()}

    # -- one step ----------------------------------------------------------------------
    def local_note(self) -> str:
        if self.comm.world_size == 1:
            return ""
        return (f" (replica numbers local to rank {self.comm.rank}, whose first replica is "
                f"{self.block.start})")

    def step(self) -> None:
        before, targets = self.state.positions, self.temperatures()
        attempted = self.state.step + 1
        try:
            energies, forces = baoab_step(
                self.state, self.forces, self.potential, targets,
                self.config.friction_per_ps, self.config.timestep_fs, self.generators,
                self.config.remove_com_motion)
            message = self.guard(energies, forces, previous=self.energies)
        except EVALUATION_FAILURES as error:
            message = f"step {attempted}: {error}{self.local_note()}"
        if message is None:
            message = self.check_disagreement()
        if message is None:
            temperature = instantaneous_temperature(self.state.kinetic_velocities(),
                                                    self.state.masses,
                                                    self.config.remove_com_motion)
            message = self.guards.check(
                before, self.state.positions, temperature, targets,
                lambda r: f"replica {self.block.start + r} at step {self.state.step}")
        self.stop_if_failed(message, attempted)
        self.energies, self.forces = energies, forces

    def guard(self, energies: torch.Tensor, forces: torch.Tensor,
              previous: torch.Tensor | None) -> str | None:
        """Why the new energies/forces of the local replicas are unusable, or None."""
        return check_results(
            energies, forces, previous, self.config.max_force,
            self.config.max_energy_jump_per_atom * self.state.n_atoms,
            lambda r: f"replica {self.block.start + r} at step {self.state.step}")

    def disagreement(self) -> torch.Tensor | None:
        """(r,) eV/Å, the committee's largest per-atom force disagreement of each local
        replica at the last evaluation; None for a single model."""
        return getattr(self.potential, "force_disagreement", None)

    def check_disagreement(self) -> str | None:
        """Why the committee's disagreement stops the run, or None."""
        limit, spread = self.config.max_force_disagreement, self.disagreement()
        if limit is None or spread is None or not bool((spread > limit).any()):
            return None
        r = int(torch.argmax(spread))
        return (f"replica {self.block.start + r} at step {self.state.step}: the committee's "
                f"force disagreement {float(spread[r]):.3g} eV/Å exceeds "
                f"max_force_disagreement={limit} eV/Å (the models disagree: the run has left "
                f"the region they were trained on){self.local_note()}")

    def stop_if_failed(self, message: str | None, step: int) -> None:
        """Every rank learns whether any rank failed at ``step``, and all stop together."""
        if self.comm.any_failed(message is not None):
            self.fail(message, step)

    def fail(self, message: str | None, step: int) -> None:
        """Stop: write the frames reported before ``step``, then raise."""
        self.close()
        raise SimulationError(message or f"step {step}: stopped because a replica on another "
                              "process failed (see that process's error)", step)

    # -- reports, exchanges, checkpoints -----------------------------------------------
    def report(self) -> None:
        velocities = self.state.kinetic_velocities()  # mid-step: see ReplicaState
        kinetic = kinetic_energy(velocities, self.state.masses)
        temperature = instantaneous_temperature(velocities, self.state.masses,
                                                self.config.remove_com_motion)
        largest_force = torch.linalg.vector_norm(self.forces, dim=-1).amax(dim=-1)
        spread = self.disagreement()
        parts = [self.state.positions.cpu().numpy(), self.energies.cpu().numpy(),
                 kinetic.cpu().numpy(), temperature.cpu().numpy(),
                 largest_force.cpu().numpy()]
        if spread is not None:
            parts.append(spread.cpu().numpy())
        gathered = [self.comm.all_gather(part) for part in parts]
        if self.writer is not None:
            step = self.state.step
            values, largest = gathered[:4], gathered[4]
            self.writer.report(step, step * self.config.timestep_fs, *values, self.tindex(),
                               largest, gathered[5] if spread is not None else None)

    def swap(self) -> None:
        energies = self.comm.all_gather(self.energies.cpu().numpy())
        scale, outcome = self.exchange.attempt(energies)
        self.state.velocities = self.state.velocities * torch.as_tensor(
            scale[self.block], dtype=torch.float64).reshape(-1, 1, 1)
        if self.writer is not None:
            self.writer.log_exchange(self.state.step, self.exchange.n_attempts - 1,
                                     self.exchange.temperature_of_replica, outcome)

    def gather_state(self) -> dict[str, Any]:
        local = {"positions": self.state.positions, "velocities": self.state.velocities,
                 "forces": self.forces, "energies": self.energies,
                 "generators": [g.get_state() for g in self.generators]}
        return merge_replica_parts(self.comm.all_gather_objects(local))

    def save(self) -> None:
        merged = self.gather_state()
        if self.writer is None:
            return
        self.writer.flush()  # frames first: the checkpoint never counts frames not on disk
        if self.exchange is not None:
            self.writer.write_stats(self.exchange.summary())
        checkpoint = Checkpoint(
            step=self.state.step, positions=merged["positions"],
            velocities=merged["velocities"], forces=merged["forces"],
            energies=merged["energies"], numbers=self.state.numbers,
            generator_states=merged["generators"],
            exchange=None if self.exchange is None else self.exchange.state_dict(),
            frames_written=[self.writer.frames_written] * self.config.n_replicas,
            config=self.config.to_dict(), masses=self.state.masses)
        save_checkpoint(self.directory / CHECKPOINT_NAME, checkpoint)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # -- the loop ----------------------------------------------------------------------
    def loop(self, progress: bool) -> tuple[int, float]:
        config, first = self.config, self.state.step
        bar = tqdm(total=config.n_steps, initial=first, unit="step", dynamic_ncols=True,
                   disable=not (progress and self.comm.is_writer))
        start = time.perf_counter()
        with bar:
            while self.state.step < config.n_steps:
                self.step()
                step = self.state.step
                if step % config.report_interval == 0:
                    self.report()
                if self.exchange is not None and step % config.exchange_interval == 0:
                    self.swap()
                if step % config.checkpoint_interval == 0:
                    self.save()
                bar.update(1)
                if step % config.report_interval == 0 or step == config.n_steps:
                    bar.set_postfix_str(self.speed(step, first, start), refresh=False)
        if self.state.step % config.checkpoint_interval:
            self.save()  # the end is always resumable (to extend the run)
        return self.state.step - first, time.perf_counter() - start

    def speed(self, step: int, first: int, start: float) -> str:
        ns = (step - first) * self.config.timestep_fs * 1e-6
        per_day = ns / max(time.perf_counter() - start, 1e-9) * 86400
        return f"t={step * self.config.timestep_fs * 1e-3:.4g} ps, {per_day:.3g} ns/day"


def run_replicas(
    potential: Potential,
    state: ReplicaState,
    config: RunConfig,
    topology: mdtraj.Topology | None = None,
    resume: bool = False,
    progress: bool = True,
    comm: SerialComm | None = None,
    metadata: dict[str, Any] | None = None,
    bond_reference: np.ndarray | None = None,
) -> RunResult:
    """Run Langevin dynamics of R replicas, with replica exchange if configured.

    With ``config.equilibration_steps`` the run has two stages: equilibration (each replica
    at its own temperature, no exchanges, into ``output_dir/equilibration/``), then
    production from the equilibrated positions and velocities.

    Parameters
    ----------
    potential:
        Evaluates this process's replicas as one batch (:class:`FreeCGPotential`, ...).
    state:
        The full initial state (all R replicas, every process alike); not modified.
    config:
        The run; ``config.temperatures`` has one entry per replica.
    topology:
        For ``topology.pdb``; a minimal one is made from the atomic numbers when None.
    resume:
        Continue from the checkpoint of the latest stage that has one (files are cut back
        to it) up to ``config.n_steps``; otherwise the directory must not hold a run.
    progress:
        Show a tqdm bar with simulated time and ns/day.
    comm:
        :func:`~freecg_md.md.distributed.init_distributed`'s communicator to spread the
        replicas over processes; None runs them all here.
    metadata:
        JSON-serialisable facts written into each stage's ``config.json`` beside the run
        config (the model file and its fingerprint, where the replicas started...).
    bond_reference:
        (N, 3) Å, the structure whose bonds (and their lengths) the bond guards watch;
        None takes replica 0's start. Pass a known-good structure (chignolin's native one,
        say) when the starts may carry a broken bond or an atom pressed onto another: the
        guards would otherwise take that contact for a bond and stop a model that undoes it.

    Returns
    -------
    The production stage's result; ``result.equilibration`` is the equilibration stage's
    (None without one, or when production was resumed).

    Raises
    ------
    SimulationError
        NaN/infinite energy or force, a force above ``max_force``, an energy jump above
        ``max_energy_jump_per_atom * N``, a kinetic temperature far above the bath, a bond
        pulled apart or pushed together, or an atom moving too far in one step: names the
        replica, the step and the reason.
    ValueError
        A time step too long for the lightest atom (see ``allow_long_timestep``).
    FileNotFoundError
        ``resume=True`` but no stage has a checkpoint.
    """
    comm = comm or SerialComm()
    # The guards' bonds and their lengths.
    if bond_reference is None:
        reference = state.positions[0].cpu().numpy()
    else:
        reference = np.asarray(bond_reference, dtype=np.float64)
        if reference.shape != (state.n_atoms, 3) or not np.all(np.isfinite(reference)):
            raise ValueError(f"bond_reference has shape {reference.shape} or non-finite "
                             f"values; expected finite (N, 3) = ({state.n_atoms}, 3) Å")
    has_checkpoint = (Path(config.output_dir) / CHECKPOINT_NAME).is_file()
    if not config.equilibration_steps or (resume and has_checkpoint):
        return _run_stage(potential, state, config, topology, resume, progress, comm,
                          config.draw_velocities, reference, metadata)
    stage = config.equilibration()
    stage_resume = resume and (Path(stage.output_dir) / CHECKPOINT_NAME).is_file()
    if resume and not stage_resume:
        raise FileNotFoundError(f"no checkpoint in {config.output_dir} or {stage.output_dir}; "
                                "pass resume=False to start the run")
    equilibration = _run_stage(potential, state, stage, topology, stage_resume, progress, comm,
                               config.draw_velocities, reference, metadata)
    equilibrated = dataclasses.replace(equilibration.state, step=0)
    # Production records the start the equilibration stage recorded (kept there on resume).
    metadata = {**(metadata or {}), **_recorded_start(stage.output_dir)}
    result = _run_stage(potential, equilibrated, config, topology, False, progress, comm,
                        False, reference, metadata)
    result.equilibration = equilibration
    return result


def _recorded_start(directory: str | Path) -> dict[str, Any]:
    """The :data:`START_KEYS` that the run in ``directory`` recorded in its ``config.json``
    (empty if it has none)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        return {}
    recorded = json.loads(path.read_text())
    return {key: recorded[key] for key in START_KEYS if key in recorded}


def _run_stage(potential: Potential, state: ReplicaState, config: RunConfig,
               topology: mdtraj.Topology | None, resume: bool, progress: bool,
               comm: SerialComm, draw_velocities: bool, reference: np.ndarray,
               metadata: dict[str, Any] | None) -> RunResult:
    """One stage of :func:`run_replicas`: start or resume, loop, and gather."""
    run = _Run(potential, state, config, comm, draw_velocities, reference)
    run.extra = dict(metadata or {})
    try:
        if resume:
            run.resume()
        else:
            run.start(topology)
        steps, seconds = run.loop(progress)
    finally:
        run.close()
    merged = run.gather_state()
    final = ReplicaState(merged["positions"], merged["velocities"], state.masses, state.numbers,
                         state.cell, state.pbc, run.state.step)
    ns_per_day = steps * config.timestep_fs * 1e-6 / max(seconds, 1e-9) * 86400
    return RunResult(final, merged["energies"], run.exchange, steps, seconds, ns_per_day,
                     getattr(potential, "neighbor_stats", None))
