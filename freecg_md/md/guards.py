"""Guards that stop a run gone wrong before it writes nonsense, and the time-step limit.

A bounded potential lets a run fail without NaNs: with too long a time step the atoms gain
energy every step, fly apart, and the energies stay finite. These checks catch that class
of failure from the dynamics themselves:

- **kinetic temperature**: the mean instantaneous temperature of a replica over the last
  ``window`` steps above ``max_ratio`` times its bath temperature. The threshold is raised
  for small systems, whose temperature fluctuates more (relative standard deviation
  ``sqrt(2 / dof)``): it is at least ``1 + 8 sqrt(2 / dof)`` times the target, so an
  equilibrium fluctuation does not trip it.
- **bonds**: a bond of the reference structure (atoms closer than ``bond_scale`` times the
  sum of their covalent radii) longer than ``max_bond_stretch`` or shorter than
  ``min_bond_compression`` times its reference length.
- **displacement**: an atom that moved more than ``max_displacement`` Å in one step.

:func:`check_timestep` refuses a time step too long for the lightest atom (2 fs for
hydrogens of natural mass, growing as the square root of the mass, at most 4 fs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from ase.data import covalent_radii

from ..neighbors import build_neighbor_list
from .state import NATURAL_HYDROGEN_MASS

__all__ = ["DynamicsGuard", "GuardLimits", "Guards", "SimulationError", "check_timestep",
           "find_bonds", "max_stable_timestep"]


class SimulationError(RuntimeError):
    """The dynamics met a state it cannot continue from (NaN, infinity, explosion).

    ``step`` is the step that failed (the one attempted; the starting step for a failure
    at the start), or None where no step applies (a guard called by an ASE dynamics)."""

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step

HYDROGEN_TIMESTEP_FS = 2.0
LONGEST_TIMESTEP_FS = 4.0


def max_stable_timestep(masses: np.ndarray | torch.Tensor) -> float:
    """The longest time step (fs) :func:`check_timestep` accepts for these masses (amu).

    The fastest vibration of a molecule is a stretch of its lightest atom; its period grows
    as the square root of that atom's mass, and 2 fs is the accepted limit for X-H bonds of
    natural mass without constraints (OpenMM's 4 fs needs constraints and heavier
    hydrogens).
    """
    lightest = float(torch.as_tensor(masses, dtype=torch.float64).min())
    return min(HYDROGEN_TIMESTEP_FS * np.sqrt(lightest / NATURAL_HYDROGEN_MASS),
               LONGEST_TIMESTEP_FS)


def check_timestep(timestep_fs: float, masses: np.ndarray | torch.Tensor,
                   allow: bool = False) -> None:
    """Refuse ``timestep_fs`` above :func:`max_stable_timestep` unless ``allow``.

    Raises
    ------
    ValueError
        The time step is longer than the lightest atom allows; the message says what to do.
    """
    limit = max_stable_timestep(masses)
    lightest = float(torch.as_tensor(masses, dtype=torch.float64).min())
    if timestep_fs > limit * (1 + 1e-9) and not allow:
        raise ValueError(
            f"timestep_fs={timestep_fs:g}: too long for the lightest atom ({lightest:.3f} amu); "
            f"at most {limit:.2f} fs without constraints. Its bonds vibrate too fast for this "
            "step: the run gains energy every step and the molecule flies apart. Use a "
            "shorter step, or heavier hydrogens (hydrogen mass repartitioning), or pass "
            "allow_long_timestep=True if you know the system tolerates it."
        )


def find_bonds(positions: np.ndarray, numbers: np.ndarray, cell: np.ndarray | None = None,
               pbc: np.ndarray | None = None, scale: float = 1.2
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The covalent bonds of one structure, by distance.

    Atoms i < j are bonded when closer than ``scale`` times the sum of their covalent radii
    (ASE's table), except that a hydrogen keeps only its shortest such bond: a hydrogen has
    one covalent bond, and a second partner that close is a contact (a hydrogen pressed
    onto an oxygen, say) whose breaking is a repair, not a failure. Periodic cells are
    handled with the minimum image of the neighbour list.

    Parameters
    ----------
    positions:
        (N, 3) Å.
    numbers:
        (N,) atomic numbers.
    cell, pbc:
        (3, 3) Å and (3,) bool; None for a molecule.

    Returns
    -------
    pairs:
        (B, 2) int64 atom indices.
    shifts:
        (B, 3) float64 Å, added to ``positions[j] - positions[i]`` for the bond vector.
    lengths:
        (B,) float64 Å.
    """
    positions = np.asarray(positions, np.float64)
    numbers = np.asarray(numbers)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, np.float64)
    pbc = np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool)
    radii = covalent_radii[numbers]
    cutoff = scale * 2.0 * float(radii.max())
    neighbors = build_neighbor_list(positions, cutoff, cell, pbc)
    i, j = neighbors.edge_index
    shifts = neighbors.shift_vectors(cell)
    vectors = positions[j] - positions[i] + shifts
    lengths = np.linalg.norm(vectors, axis=1)
    bonded = (i < j) & (lengths < scale * (radii[i] + radii[j]))
    # A hydrogen keeps its shortest bond: visit its bonds longest first, so that the
    # shortest is the one left in `shortest` (a python loop: called once per run).
    shortest = np.full(len(numbers), -1)
    candidates = np.flatnonzero(bonded & ((numbers[i] == 1) | (numbers[j] == 1)))
    for bond in candidates[np.argsort(-lengths[candidates], kind="stable")]:
        for atom in (i[bond], j[bond]):
            if numbers[atom] == 1:
                shortest[atom] = bond
    for bond in candidates:
        if any(numbers[atom] == 1 and shortest[atom] != bond for atom in (i[bond], j[bond])):
            bonded[bond] = False
    return (np.stack([i[bonded], j[bonded]], axis=1).astype(np.int64), shifts[bonded],
            lengths[bonded])


@dataclass(frozen=True)
class GuardLimits:
    """Thresholds of :class:`Guards`; a value of None turns that guard off.

    Attributes
    ----------
    max_temperature_ratio:
        Mean kinetic temperature over ``temperature_window`` steps, as a multiple of the
        bath temperature (raised for small systems, see the module docstring).
    temperature_window:
        Steps averaged.
    max_bond_stretch, min_bond_compression:
        Bond length as a multiple of its reference length.
    max_displacement:
        Å an atom may move in one step.
    """

    max_temperature_ratio: float | None = 1.5
    temperature_window: int = 100
    max_bond_stretch: float | None = 1.5
    min_bond_compression: float | None = 0.6
    max_displacement: float | None = 0.5


class Guards:
    """Checks every step of a batch of replicas against :class:`GuardLimits`.

    Parameters
    ----------
    limits:
        The thresholds.
    reference:
        (N, 3) Å, the structure whose bonds and bond lengths are the reference (the run's
        starting structure).
    numbers:
        (N,) atomic numbers.
    cell, pbc:
        The system's cell; bond vectors use the reference's periodic images (the cell of
        an NVT run does not change).
    dof:
        Degrees of freedom of one replica (for the temperature threshold).
    n_replicas:
        R, the replicas checked together.
    """

    def __init__(self, limits: GuardLimits, reference: np.ndarray, numbers: np.ndarray,
                 cell: np.ndarray, pbc: np.ndarray, dof: int, n_replicas: int) -> None:
        self.limits = limits
        self.pairs, shifts, lengths = find_bonds(reference, numbers, cell, pbc)
        self.shifts = torch.as_tensor(shifts)
        self.lengths = torch.as_tensor(lengths)
        ratio = limits.max_temperature_ratio
        self.temperature_ratio = (None if ratio is None
                                  else max(ratio, 1.0 + 8.0 * np.sqrt(2.0 / max(dof, 1))))
        self.window = max(int(limits.temperature_window), 1)
        # Kinetic over bath temperature, not kelvin: an exchange moves a replica to another
        # bath within the window, and its earlier steps count against the bath they ran at.
        self.history = torch.zeros((self.window, n_replicas), dtype=torch.float64)
        self.filled = 0

    def check(self, before: torch.Tensor, after: torch.Tensor, temperature: torch.Tensor,
              targets: torch.Tensor, describe) -> str | None:  # noqa: ANN001 - a callable
        """Why the step from ``before`` to ``after`` (R, N, 3) Å went wrong, or None.

        ``temperature`` (R,) K the replicas' kinetic temperatures after it, ``targets``
        (R,) K their baths; ``describe(r)`` names replica r for the message.
        """
        limits = self.limits
        if limits.max_displacement is not None:
            moved = torch.linalg.vector_norm(after - before, dim=-1)  # (R, N)
            worst, atom = moved.max(dim=1)
            for r in torch.nonzero(worst > limits.max_displacement).flatten().tolist():
                return (f"{describe(r)}: atom {int(atom[r])} moved {float(worst[r]):.3g} Å in "
                        f"one step (limit {limits.max_displacement} Å): the time step is too "
                        "long or the forces are wrong")
        if len(self.pairs) and (limits.max_bond_stretch is not None
                                or limits.min_bond_compression is not None):
            i, j = self.pairs[:, 0], self.pairs[:, 1]
            lengths = torch.linalg.vector_norm(after[:, j] - after[:, i] + self.shifts, dim=-1)
            ratio = lengths / self.lengths  # (R, B)
            stretch = limits.max_bond_stretch or np.inf
            compression = limits.min_bond_compression or 0.0
            bad = (ratio > stretch) | (ratio < compression)
            for r, b in torch.nonzero(bad).tolist()[:1]:
                kind = "pulled apart" if ratio[r, b] > stretch else "pushed together"
                return (f"{describe(r)}: the bond between atoms {int(i[b])} and {int(j[b])} "
                        f"was {kind}: {float(lengths[r, b]):.3g} Å against "
                        f"{float(self.lengths[b]):.3g} Å in the reference structure (limits "
                        f"{compression}x-{stretch}x)")
        if self.temperature_ratio is not None:
            self.history[self.filled % self.window] = temperature / targets
            self.filled += 1
            if self.filled >= self.window:
                mean = self.history.mean(dim=0)
                for r in torch.nonzero(mean > self.temperature_ratio).flatten().tolist():
                    return (f"{describe(r)}: kinetic temperature {float(mean[r]):.2f}x its "
                            f"bath on average over the last {self.window} steps (now a bath "
                            f"at {float(targets[r]):.0f} K; limit "
                            f"{self.temperature_ratio:.2f}x): the dynamics are heating up; "
                            "shorten the time step")
        return None


class DynamicsGuard:
    """The same guards for ASE's own dynamics (Langevin, VelocityVerlet, ...)::

        dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=300, friction=0.01 / units.fs)
        dyn.attach(DynamicsGuard(atoms, temperature_K=300), interval=1)
        dyn.run(1000)   # raises SimulationError if the run goes wrong

    The reference structure is ``atoms`` as it is when the guard is made. Attach it with
    ``interval=1``: the displacement limit is per call. The kinetic temperature is ASE's
    (``atoms.get_temperature()``).

    Parameters
    ----------
    atoms:
        The system being integrated.
    temperature_K:
        The bath temperature (for an NVE run, the starting temperature).
    limits:
        The thresholds (:class:`GuardLimits`).
    """

    def __init__(self, atoms, temperature_K: float,  # noqa: ANN001 - an ase.Atoms
                 limits: GuardLimits | None = None) -> None:
        if not temperature_K > 0:
            raise ValueError(f"temperature_K={temperature_K!r}: expected a temperature > 0 K")
        self.atoms = atoms
        self.target = torch.tensor([float(temperature_K)], dtype=torch.float64)
        self.guards = Guards(limits or GuardLimits(), atoms.positions, atoms.numbers,
                             atoms.cell.array, atoms.pbc, 3 * len(atoms), 1)
        self.previous = torch.as_tensor(atoms.positions, dtype=torch.float64)[None].clone()
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        now = torch.as_tensor(self.atoms.positions, dtype=torch.float64)[None].clone()
        temperature = torch.tensor([self.atoms.get_temperature()], dtype=torch.float64)
        message = self.guards.check(self.previous, now, temperature, self.target,
                                    lambda _: f"call {self.calls} of the guard")
        self.previous = now
        if message is not None:
            raise SimulationError(message)
