"""Batched Langevin and replica-exchange molecular dynamics (units: Å, fs, eV, K, amu).

The pieces, in the order data flows through them: :class:`ReplicaState` (R replicas of one
system), a :class:`Potential` (:class:`FreeCGPotential` batches all replicas through one
forward pass, or on a CPU spreads them over worker processes; :class:`ASECalculatorPotential`
wraps any ASE calculator), the integrators
(:func:`baoab_step`, :func:`velocity_verlet_step`), :class:`ReplicaExchange`, the run
directory (:class:`RunWriter`), checkpoints, and :func:`run_replicas`, which drives them all,
on one process or spread over several (:func:`init_distributed`).
"""

from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .distributed import (
    SerialComm,
    TorchDistributedComm,
    init_distributed,
    local_device,
    replica_block,
)
from .guards import DynamicsGuard, GuardLimits, check_timestep, max_stable_timestep
from .integrators import baoab_step, langevin_coefficients, velocity_verlet_step
from .potentials import ASECalculatorPotential, FreeCGPotential
from .protocol import Potential
from .remd import ReplicaExchange, check_ladder, temperature_ladder
from .reporters import (
    FrameIndex,
    RunWriter,
    load_replica_trajectory,
    load_temperature_trajectory,
    package_versions,
    read_frame_index,
    topology_from_numbers,
    trajectory_path,
)
from .simulation import EQUILIBRATION_DIR, RunConfig, RunResult, SimulationError, run_replicas
from .state import (
    NATURAL_HYDROGEN_MASS,
    ReplicaState,
    degrees_of_freedom,
    instantaneous_temperature,
    kinetic_energy,
    maxwell_boltzmann_velocities,
    remove_com_velocity,
    repartition_hydrogen_masses,
    replica_generators,
    replica_seed,
)
from .worker_processes import WorkerError

__all__ = [
    "EQUILIBRATION_DIR",
    "ASECalculatorPotential",
    "Checkpoint",
    "DynamicsGuard",
    "CheckpointError",
    "FrameIndex",
    "FreeCGPotential",
    "GuardLimits",
    "NATURAL_HYDROGEN_MASS",
    "Potential",
    "ReplicaExchange",
    "ReplicaState",
    "RunConfig",
    "RunResult",
    "RunWriter",
    "SerialComm",
    "SimulationError",
    "TorchDistributedComm",
    "WorkerError",
    "baoab_step",
    "check_ladder",
    "check_timestep",
    "degrees_of_freedom",
    "init_distributed",
    "instantaneous_temperature",
    "kinetic_energy",
    "langevin_coefficients",
    "load_checkpoint",
    "load_replica_trajectory",
    "load_temperature_trajectory",
    "local_device",
    "max_stable_timestep",
    "maxwell_boltzmann_velocities",
    "package_versions",
    "read_frame_index",
    "remove_com_velocity",
    "replica_block",
    "replica_generators",
    "replica_seed",
    "repartition_hydrogen_masses",
    "run_replicas",
    "save_checkpoint",
    "temperature_ladder",
    "topology_from_numbers",
    "trajectory_path",
    "velocity_verlet_step",
]
