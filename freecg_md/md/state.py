"""The batched state of a replica simulation and its thermodynamic helpers.

All replicas are copies of one system (same atoms, masses, cell): replica exchange of one
molecule, or independent Langevin runs of it. Units are ASE's at every interface: positions
in Å, velocities in Å/fs, masses in amu, energies in eV, temperatures in K. The conversion
factors below are derived from :mod:`ase.units` once, here.

Random numbers come from one :class:`torch.Generator` per replica, seeded from the run seed
and the replica's *global* index (:func:`replica_generators`), so a replica's stream is the
same whether it runs alone, in a batch of 8 or on the third of four processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from ase import Atoms, units

__all__ = [
    "NATURAL_HYDROGEN_MASS",
    "ACCELERATION_UNIT",
    "KINETIC_UNIT",
    "ReplicaState",
    "degrees_of_freedom",
    "instantaneous_temperature",
    "kinetic_energy",
    "maxwell_boltzmann_velocities",
    "remove_com_velocity",
    "replica_generators",
    "replica_seed",
    "repartition_hydrogen_masses",
]

# 1 amu Å²/fs² in eV. ASE's time unit is Å sqrt(amu/eV) and ``units.fs`` is one femtosecond
# in it, so a velocity of 1 Å/fs is 1/units.fs ASE velocity units.
KINETIC_UNIT = 1.0 / units.fs**2
# (eV/Å)/amu in Å/fs²: the inverse of the above.
ACCELERATION_UNIT = units.fs**2
# amu: ASE's mass of hydrogen, which a run without repartitioning integrates.
NATURAL_HYDROGEN_MASS = 1.008

# Streams of the seed tree (:func:`replica_seed`): dynamics of replica r, exchanges, and
# the dynamics of an equilibration stage before production.
DYNAMICS_STREAM = 0
EXCHANGE_STREAM = 1
EQUILIBRATION_STREAM = 2


def replica_seed(seed: int, replica: int, stream: int = DYNAMICS_STREAM) -> int:
    """A 63-bit seed for one replica's generator, independent of how many replicas exist.

    numpy's SeedSequence hashes ``(seed, stream, replica)``, so neighbouring seeds and
    replicas give unrelated streams (seeding with ``seed + replica`` would make run 1's
    replica 0 equal to run 0's replica 1).
    """
    if seed < 0 or replica < 0:
        raise ValueError(f"seed={seed}, replica={replica}: expected non-negative integers")
    return derived_seed(seed, stream, replica)


def derived_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and the non-negative integers ``keys``: numpy's
    SeedSequence hashes them, so any two key tuples give unrelated seeds (a sum such as
    ``seed + 1000 * key1 + key2`` collides)."""
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=tuple(int(k) for k in keys))
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


def replica_generators(seed: int, replicas: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per global replica index in ``replicas``.

    Generators live on the CPU whatever device the model uses, so the noise (and therefore
    the trajectory, up to the forces) does not depend on the device.
    """
    generators = []
    for replica in replicas:
        generator = torch.Generator(device="cpu")
        generator.manual_seed(replica_seed(seed, replica))
        generators.append(generator)
    return generators


@dataclass
class ReplicaState:
    """Positions and velocities of R replicas of one N-atom system.

    Attributes
    ----------
    positions:
        (R, N, 3) float64, Å.
    velocities:
        (R, N, 3) float64, Å/fs.
    masses:
        (N,) float64, amu.
    numbers:
        (N,) int64 atomic numbers.
    cell:
        (3, 3) float64, Å, rows the lattice vectors (zeros for a molecule).
    pbc:
        (3,) bool, periodic directions.
    step:
        MD steps taken so far.
    midstep_velocities:
        (R, N, 3) float64 Å/fs, the velocities in the middle of the last BAOAB step (after
        its O part), or None. The kinetic temperature is measured from these: their
        distribution is exact for harmonic motion, where the end-of-step velocities are
        too slow by a factor ``1 - (omega dt)^2 / 4`` (about 8 % in energy for X-H
        stretches at 1 fs). See :meth:`kinetic_velocities`.
    """

    positions: torch.Tensor
    velocities: torch.Tensor
    masses: torch.Tensor
    numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    step: int = 0
    midstep_velocities: torch.Tensor | None = None

    def __post_init__(self) -> None:
        f64 = torch.float64
        self.positions = torch.as_tensor(self.positions, dtype=f64).clone()
        self.velocities = torch.as_tensor(self.velocities, dtype=f64).clone()
        self.masses = torch.as_tensor(self.masses, dtype=f64).clone()
        self.numbers = torch.as_tensor(self.numbers, dtype=torch.int64).clone()
        self.cell = torch.as_tensor(self.cell, dtype=f64).clone()
        self.pbc = torch.as_tensor(self.pbc, dtype=torch.bool).broadcast_to((3,)).clone()
        if self.positions.ndim != 3 or self.positions.shape[-1] != 3:
            raise ValueError(
                f"positions has shape {tuple(self.positions.shape)}; expected (R, N, 3)"
            )
        n_atoms = self.positions.shape[1]
        expected = {
            "velocities": (self.velocities.shape, tuple(self.positions.shape)),
            "masses": (self.masses.shape, (n_atoms,)),
            "numbers": (self.numbers.shape, (n_atoms,)),
            "cell": (self.cell.shape, (3, 3)),
        }
        for name, (shape, want) in expected.items():
            if tuple(shape) != want:
                raise ValueError(f"{name} has shape {tuple(shape)}; expected {want}")
        if not bool(torch.all(self.masses > 0)):
            raise ValueError(f"masses={self.masses.tolist()[:10]}...: expected positive amu")
        if self.step < 0:
            raise ValueError(f"step={self.step}: expected a non-negative integer")
        if self.midstep_velocities is not None:
            self.midstep_velocities = torch.as_tensor(self.midstep_velocities, dtype=f64).clone()
            if self.midstep_velocities.shape != self.positions.shape:
                raise ValueError(f"midstep_velocities has shape "
                                 f"{tuple(self.midstep_velocities.shape)}; expected "
                                 f"{tuple(self.positions.shape)}")

    def with_masses(self, masses: np.ndarray | torch.Tensor) -> ReplicaState:
        """A copy with new masses (amu), each atom's velocity scaled by
        ``sqrt(m_old / m_new)`` so that its kinetic energy, and the temperature, stay."""
        masses = torch.as_tensor(masses, dtype=torch.float64)
        scale = torch.sqrt(self.masses / masses).reshape(1, -1, 1)
        return ReplicaState(self.positions, self.velocities * scale, masses, self.numbers,
                            self.cell, self.pbc, self.step)

    def kinetic_velocities(self) -> torch.Tensor:
        """The velocities to measure kinetic energy and temperature from: the last BAOAB
        step's mid-step velocities when there are some, else :attr:`velocities`."""
        return self.velocities if self.midstep_velocities is None else self.midstep_velocities

    @classmethod
    def from_atoms(cls, atoms: Atoms, n_replicas: int) -> ReplicaState:
        """``n_replicas`` copies of ``atoms`` (positions Å, ASE masses amu) at rest."""
        if n_replicas < 1:
            raise ValueError(f"n_replicas={n_replicas}: expected a positive integer")
        positions = np.broadcast_to(atoms.positions, (n_replicas, len(atoms), 3))
        return cls(
            positions=torch.tensor(positions),
            velocities=torch.zeros((n_replicas, len(atoms), 3), dtype=torch.float64),
            masses=torch.tensor(atoms.get_masses()),
            numbers=torch.tensor(atoms.numbers),
            cell=torch.tensor(atoms.cell.array),
            pbc=torch.tensor(atoms.pbc),
        )

    @classmethod
    def from_frames(cls, frames: Sequence[Atoms], n_replicas: int) -> ReplicaState:
        """``n_replicas`` replicas at rest, replica r starting from ``frames[r % len(frames)]``.

        The frames are conformations of one system: the same atomic numbers in the same
        order, and the same cell and periodicity (positions Å, masses from the first frame).
        """
        frames = list(frames)
        if not frames:
            raise ValueError("frames is empty: expected at least one Atoms")
        first = frames[0]
        for index, frame in enumerate(frames[1:], start=1):
            if len(frame) != len(first) or not np.array_equal(frame.numbers, first.numbers):
                raise ValueError(
                    f"frames[{index}] has atomic numbers that differ from frames[0]: "
                    "expected conformations of one system, atoms in the same order"
                )
            if not (np.allclose(frame.cell.array, first.cell.array)
                    and np.array_equal(frame.pbc, first.pbc)):
                raise ValueError(f"frames[{index}] has a different cell or pbc from frames[0]")
        state = cls.from_atoms(first, n_replicas)
        state.positions = torch.tensor(
            np.stack([frames[r % len(frames)].positions for r in range(n_replicas)])
        )
        return state

    def __repr__(self) -> str:  # the tensors would print thousands of numbers
        return (f"ReplicaState({self.n_replicas} replicas of {self.n_atoms} atoms, step "
                f"{self.step}, periodic {self.pbc.tolist()})")

    @property
    def n_replicas(self) -> int:
        return int(self.positions.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[1])

    def select(self, replicas: slice) -> ReplicaState:
        """A copy holding the replicas ``replicas`` (a slice of the replica axis)."""
        midstep = None if self.midstep_velocities is None else self.midstep_velocities[replicas]
        return ReplicaState(
            self.positions[replicas], self.velocities[replicas], self.masses, self.numbers,
            self.cell, self.pbc, self.step, midstep,
        )


def kinetic_energy(velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Kinetic energy ``sum_i m_i |v_i|^2 / 2`` of each replica, (R,) eV.

    ``velocities`` (R, N, 3) Å/fs, ``masses`` (N,) amu.
    """
    per_atom = torch.sum(velocities**2, dim=-1) * masses
    return 0.5 * KINETIC_UNIT * per_atom.sum(dim=-1)


def degrees_of_freedom(n_atoms: int, com_removed: bool) -> int:
    """``3N - 3`` when centre-of-mass motion is removed, else ``3N``."""
    return 3 * n_atoms - 3 if com_removed else 3 * n_atoms


def instantaneous_temperature(
    velocities: torch.Tensor, masses: torch.Tensor, com_removed: bool
) -> torch.Tensor:
    """``T = 2 KE / (dof kB)`` of each replica, (R,) K."""
    dof = degrees_of_freedom(velocities.shape[-2], com_removed)
    if dof < 1:
        raise ValueError(f"{velocities.shape[-2]} atom(s) with com_removed=True have no dof")
    return 2.0 * kinetic_energy(velocities, masses) / (dof * units.kB)


def remove_com_velocity(velocities: torch.Tensor, masses: torch.Tensor) -> torch.Tensor:
    """Velocities (R, N, 3) Å/fs less each replica's centre-of-mass velocity (a new tensor)."""
    weights = (masses / masses.sum()).unsqueeze(-1)
    return velocities - torch.sum(velocities * weights, dim=-2, keepdim=True)


def maxwell_boltzmann_velocities(
    masses: torch.Tensor,
    temperatures: torch.Tensor | Sequence[float],
    generators: Sequence[torch.Generator],
    remove_com: bool = True,
) -> torch.Tensor:
    """Velocities drawn from the Maxwell-Boltzmann distribution, (R, N, 3) float64 Å/fs.

    Each component is ``v = sqrt(kB T / m) xi`` with ``xi ~ N(0, 1)`` drawn from replica
    r's own generator, so replica r's draw does not depend on the other replicas.

    Parameters
    ----------
    masses:
        (N,) amu.
    temperatures:
        (R,) K, one per replica, >= 0.
    generators:
        R CPU generators (:func:`replica_generators`); each is advanced by 3N normals.
    remove_com:
        Subtract each replica's centre-of-mass velocity (then the expected temperature
        with ``dof = 3N - 3`` is T).
    """
    masses = torch.as_tensor(masses, dtype=torch.float64)
    temperatures = torch.as_tensor(temperatures, dtype=torch.float64).reshape(-1)
    if len(generators) != temperatures.shape[0]:
        raise ValueError(
            f"got {len(generators)} generators for {temperatures.shape[0]} temperatures; "
            "expected one generator per replica"
        )
    if not bool(torch.all(temperatures >= 0)):
        raise ValueError(f"temperatures={temperatures.tolist()}: expected values >= 0 K")
    noise = torch.stack(
        [torch.randn((masses.shape[0], 3), generator=g, dtype=torch.float64) for g in generators]
    ).to(masses.device)
    # sqrt(kT/m) is in ASE velocity units; times units.fs gives Å/fs.
    sigma = torch.sqrt(units.kB * temperatures[:, None] / masses[None, :]) * units.fs
    velocities = noise * sigma.unsqueeze(-1)
    return remove_com_velocity(velocities, masses) if remove_com else velocities


def repartition_hydrogen_masses(masses: np.ndarray | torch.Tensor, numbers: np.ndarray,
                                bonds: np.ndarray, hydrogen_mass: float = 3.024
                                ) -> torch.Tensor:
    """Hydrogen mass repartitioning: each hydrogen gets ``hydrogen_mass`` amu, taken from the
    heavy atom it is bonded to, so the total mass (and the molecule's inertia, nearly) stays.

    Masses do not enter the Boltzmann distribution of positions, so the configurations a
    thermostatted run samples are the same; the fastest vibrations (X-H stretches) slow by
    about ``sqrt(hydrogen_mass / 1.008)``, which allows a longer time step
    (:func:`~freecg_md.md.guards.max_stable_timestep`). Dynamical quantities (diffusion,
    rates, RMSD against time) change with the masses.

    Parameters
    ----------
    masses:
        (N,) amu.
    numbers:
        (N,) atomic numbers.
    bonds:
        (B, 2) bonded atom pairs (:func:`~freecg_md.md.guards.find_bonds`).
    hydrogen_mass:
        amu, at least the natural 1.008 (OpenMM's default for 4 fs with constraints is 4).

    Raises
    ------
    ValueError
        A hydrogen without exactly one heavy bonded partner, or a heavy atom that would be
        left lighter than a hydrogen.
    """
    masses = torch.as_tensor(masses, dtype=torch.float64).clone()
    numbers = np.asarray(numbers)
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    if not hydrogen_mass >= 1.0:
        raise ValueError(f"hydrogen_mass={hydrogen_mass!r}: expected at least 1 amu")
    for h in np.flatnonzero(numbers == 1):
        partners = [int(b) for a, b in bonds if a == h] + [int(a) for a, b in bonds if b == h]
        heavy = [p for p in partners if numbers[p] != 1]
        if len(heavy) != 1:
            raise ValueError(f"hydrogen {h} is bonded to {len(heavy)} heavy atoms "
                             f"({heavy}); expected exactly one to take its mass from")
        moved = hydrogen_mass - float(masses[h])
        masses[h] += moved
        masses[heavy[0]] -= moved
    light = torch.nonzero((torch.as_tensor(numbers) != 1) & (masses < hydrogen_mass))
    if len(light):
        atom = int(light[0, 0])
        raise ValueError(f"atom {atom} (Z={int(numbers[atom])}) would keep "
                         f"{float(masses[atom]):.3f} amu, less than a hydrogen's "
                         f"{hydrogen_mass} amu; use a lighter hydrogen_mass")
    return masses
