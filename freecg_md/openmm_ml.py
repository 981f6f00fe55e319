"""FreeCG as an openmm-ml potential: ``MLPotential("freecg", modelPath=...)``.

With ``pip install "freecg-md[openmm]"`` this module is registered under openmm-ml's
entry-point group ``openmmml.potentials`` as ``freecg``, so

>>> from openmmml import MLPotential                                     # doctest: +SKIP
>>> potential = MLPotential("freecg", modelPath="models/chignolin.pt")   # doctest: +SKIP
>>> system = potential.createSystem(topology)                            # doctest: +SKIP
>>> mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)  # doctest: +SKIP

builds OpenMM Systems whose FreeCG part is a ``PythonForce``: OpenMM hands it the
positions (nm) and box (nm) each step, and it returns the energy (kJ/mol) and forces
(kJ/mol/nm) of the atoms it covers. Units are converted here and only here. The
evaluation is :class:`~freecg_md.FreeCGCalculator`'s (its neighbour-list cache reused
across steps, its checks of the input, its training-domain warnings), called directly
rather than through an ASE Atoms object, which the generic ``MLPotential("ase")`` needs.

Arguments of ``createSystem`` / ``createMixedSystem`` for this potential: ``modelPath``
(required; a model file, or a list of them for a committee), ``device`` ("cpu", "cuda"),
``dtype`` ("float32", "float64"), ``skin`` (Å, the neighbour list's Verlet skin).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
from ase import Atoms, units
from ase.data import chemical_symbols

from .calculator import FreeCGCalculator

__all__ = ["EV_TO_KJ_PER_MOL", "FreeCGPotentialImpl", "FreeCGPotentialImplFactory",
           "freecg_force"]

EV_TO_KJ_PER_MOL = 1.0 / (units.kJ / units.mol)
ANGSTROM_PER_NM = 10.0

try:  # openmm-ml is an optional extra; the classes below need it only to be registered.
    from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory
except ImportError:  # pragma: no cover - exercised only without the extra
    MLPotentialImpl = MLPotentialImplFactory = object  # type: ignore[assignment,misc]


def freecg_force(calculator: FreeCGCalculator, numbers: np.ndarray, periodic: bool,
                 particles: Iterable[int] | None = None):  # noqa: ANN201 - openmm.PythonForce
    """An ``openmm.PythonForce`` evaluating ``calculator`` on the atoms ``particles`` (all
    atoms of the System if None), whose atomic numbers are ``numbers``."""
    import openmm
    from openmm import unit

    atoms = Atoms(numbers=np.asarray(numbers), pbc=periodic)
    atoms.calc = calculator

    def compute(state: openmm.State) -> tuple[float, np.ndarray]:
        positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        atoms.positions = positions * ANGSTROM_PER_NM
        if periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)
            atoms.cell = box * ANGSTROM_PER_NM
        # Straight to calculate(): ASE's state comparison would cost a copy per step, and
        # OpenMM calls this once per changed configuration anyway.
        calculator.calculate(atoms, ["energy", "forces"])
        energy = calculator.results["energy"] * EV_TO_KJ_PER_MOL
        forces = calculator.results["forces"] * (EV_TO_KJ_PER_MOL * ANGSTROM_PER_NM)
        return energy, forces

    force = openmm.PythonForce(compute)
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if particles is not None:
        force.setParticles(list(particles))
    return force


class FreeCGPotentialImplFactory(MLPotentialImplFactory):
    """Makes :class:`FreeCGPotentialImpl` objects (openmm-ml's entry point)."""

    def createImpl(self, name: str, modelPath: str | os.PathLike | None = None,  # noqa: N802, N803
                   **args: Any) -> FreeCGPotentialImpl:
        return FreeCGPotentialImpl(name, modelPath)


class FreeCGPotentialImpl(MLPotentialImpl):
    """The FreeCG potential of a model file, for openmm-ml (see the module docstring)."""

    def __init__(self, name: str, modelPath: str | os.PathLike | list | None) -> None:  # noqa: N803
        if modelPath is None:
            raise ValueError("MLPotential('freecg') needs modelPath=: a FreeCG model file "
                             "(e.g. models/chignolin.pt), or a list of them for a committee")
        self.name = name
        self.model_path = modelPath

    def addForces(self, topology: Any, system: Any, atoms: Iterable[int] | None,  # noqa: N802, N803
                  forceGroup: int, device: str = "cpu", dtype: str = "float32",  # noqa: N803
                  skin: float = 1.0, **args: Any) -> None:
        included = list(topology.atoms())
        if atoms is not None:
            atoms = list(atoms)
            included = [included[i] for i in atoms]
        if any(atom.element is None for atom in included):
            raise ValueError("every atom FreeCG covers needs an element in the Topology")
        numbers = np.array([atom.element.atomic_number for atom in included])
        calculator = FreeCGCalculator(self.model_path, device=device, dtype=dtype, skin=skin)
        unknown = sorted(set(numbers.tolist()) - set(calculator.model.species))
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in calculator.model.species)
            raise ValueError(f"the Topology has element(s) {names} that the model "
                             f"{self.model_path} was not trained on; it knows {known}")
        periodic = topology.getPeriodicBoxVectors() is not None
        force = freecg_force(calculator, numbers, periodic, atoms)
        force.setForceGroup(forceGroup)
        system.addForce(force)
