"""Integrators: BAOAB Langevin dynamics and velocity Verlet, batched over replicas.

Each step updates ``state.positions``, ``state.velocities`` and ``state.step`` in place and
returns the energies and forces at the new positions, which the caller passes to the next
step: one force evaluation per step. Units: Å, Å/fs, amu, eV, eV/Å, K; time step in fs and
friction in 1/ps at this interface.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from ase import units

from .protocol import Potential
from .state import ACCELERATION_UNIT, ReplicaState, remove_com_velocity

__all__ = ["baoab_step", "langevin_coefficients", "velocity_verlet_step"]


def _per_replica(value: torch.Tensor | float, n_replicas: int, name: str) -> torch.Tensor:
    """``value`` as (R, 1, 1) float64 for broadcasting against (R, N, 3)."""
    tensor = torch.as_tensor(value, dtype=torch.float64).reshape(-1)
    if tensor.numel() == 1:
        tensor = tensor.expand(n_replicas)
    if tensor.numel() != n_replicas:
        raise ValueError(
            f"{name} has {tensor.numel()} values; expected a scalar or one per replica "
            f"({n_replicas})"
        )
    if not bool(torch.all(torch.isfinite(tensor))):
        raise ValueError(f"{name}={tensor.tolist()}: expected finite values")
    return tensor.reshape(-1, 1, 1)


def langevin_coefficients(
    timestep_fs: torch.Tensor, friction_per_ps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``c1 = exp(-gamma dt)`` and ``c2 = sqrt(1 - c1^2)`` of the exact OU step.

    ``timestep_fs`` and ``friction_per_ps`` broadcast together; gamma is converted to 1/fs.
    """
    if bool(torch.any(friction_per_ps < 0)):
        raise ValueError(
            f"friction_per_ps={friction_per_ps.flatten().tolist()}: expected values >= 0 1/ps"
        )
    if bool(torch.any(timestep_fs <= 0)):
        raise ValueError(f"timestep_fs={timestep_fs.flatten().tolist()}: expected values > 0 fs")
    c1 = torch.exp(-friction_per_ps * 1e-3 * timestep_fs)
    return c1, torch.sqrt(1.0 - c1**2)


def baoab_step(
    state: ReplicaState,
    forces: torch.Tensor,
    potential: Potential,
    temperatures: torch.Tensor | Sequence[float],
    friction_per_ps: torch.Tensor | float,
    timestep_fs: torch.Tensor | float,
    generators: Sequence[torch.Generator],
    remove_com: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One BAOAB Langevin step (Leimkuhler & Matthews, AMRX 2013) of every replica.

    With ``h = dt`` and ``a = F / m``::

        B:  v <- v + (h/2) a(x)
        A:  x <- x + (h/2) v
        O:  v <- c1 v + c2 sqrt(kB T / m) xi,   c1 = exp(-gamma h),  c2 = sqrt(1 - c1^2)
        A:  x <- x + (h/2) v
        B:  v <- v + (h/2) a(x)        (forces evaluated once, at the new x)

    The velocities after O are kept as ``state.midstep_velocities``: for harmonic motion
    their distribution is exact, where the end-of-step velocities are too slow by a factor
    ``1 - (omega h)^2 / 4``, so the kinetic temperature is measured from them.

    BAOAB samples configurations with a small O(h^2) error (exact for a harmonic well);
    the O step is the exact solution of the Ornstein-Uhlenbeck part, so any friction is
    stable.

    Parameters
    ----------
    state:
        Updated in place: positions, velocities, step += 1.
    forces:
        (R, N, 3) eV/Å at ``state.positions`` (the previous step's return value).
    potential:
        Evaluated once, at the new positions.
    temperatures:
        (R,) K, the bath temperature of each replica.
    friction_per_ps:
        ``gamma``, scalar or (R,), 1/ps, >= 0 (0 gives velocity Verlet).
    timestep_fs:
        Scalar or (R,), fs.
    generators:
        One CPU generator per replica; replica r's noise comes only from ``generators[r]``,
        so it does not depend on R or on how replicas are spread over processes.
    remove_com:
        Subtract each replica's centre-of-mass velocity after O. The noise kicks the total
        momentum at random, so without this the molecule's centre of mass diffuses away (a
        free particle's random walk) and 3 of the 3N degrees of freedom carry no internal
        motion; with it, ``dof = 3N - 3``. Use it only for translation-invariant potentials.

    Returns
    -------
    energies, forces:
        (R,) eV and (R, N, 3) eV/Å at the new positions.
    """
    n_replicas = state.n_replicas
    if len(generators) != n_replicas:
        raise ValueError(
            f"got {len(generators)} generators for {n_replicas} replicas; expected one each"
        )
    kT = units.kB * _per_replica(temperatures, n_replicas, "temperatures")
    if bool(torch.any(kT < 0)):
        raise ValueError(f"temperatures={kT.flatten().div(units.kB).tolist()}: expected >= 0 K")
    h = _per_replica(timestep_fs, n_replicas, "timestep_fs")
    c1, c2 = langevin_coefficients(h, _per_replica(friction_per_ps, n_replicas, "friction_per_ps"))
    inverse_mass = (1.0 / state.masses).reshape(1, -1, 1)
    # sqrt(kT/m) is in ASE velocity units; times units.fs gives Å/fs.
    thermal = torch.sqrt(kT * inverse_mass) * units.fs
    noise = torch.stack([
        torch.randn(state.positions.shape[1:], generator=g, dtype=torch.float64)
        for g in generators
    ]).to(state.positions.device)

    v = state.velocities + 0.5 * h * ACCELERATION_UNIT * forces * inverse_mass
    x = state.positions + 0.5 * h * v
    v = c1 * v + c2 * thermal * noise
    if remove_com:
        v = remove_com_velocity(v, state.masses)
    x = x + 0.5 * h * v
    energies, new_forces = potential.evaluate(x)
    state.midstep_velocities = v  # the kinetic temperature's estimator (see ReplicaState)
    state.velocities = v + 0.5 * h * ACCELERATION_UNIT * new_forces * inverse_mass
    state.positions = x
    state.step += 1
    return energies, new_forces


def velocity_verlet_step(
    state: ReplicaState,
    forces: torch.Tensor,
    potential: Potential,
    timestep_fs: torch.Tensor | float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One velocity-Verlet (NVE) step of every replica, for energy-conservation checks::

        v <- v + (h/2) F(x) / m;   x <- x + h v;   v <- v + (h/2) F(x) / m

    Arguments and return value as in :func:`baoab_step`; ``state`` is updated in place.
    """
    h = _per_replica(timestep_fs, state.n_replicas, "timestep_fs")
    if bool(torch.any(h <= 0)):
        raise ValueError(f"timestep_fs={h.flatten().tolist()}: expected values > 0 fs")
    inverse_mass = (1.0 / state.masses).reshape(1, -1, 1)
    v = state.velocities + 0.5 * h * ACCELERATION_UNIT * forces * inverse_mass
    x = state.positions + h * v
    energies, new_forces = potential.evaluate(x)
    state.velocities = v + 0.5 * h * ACCELERATION_UNIT * new_forces * inverse_mass
    # The kinetic temperature of an NVE step is its end velocities': a BAOAB step's
    # mid-step velocities from before would be read in their place.
    state.midstep_velocities = None
    state.positions = x
    state.step += 1
    return energies, new_forces
