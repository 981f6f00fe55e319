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
evaluation is the MD engines' (:class:`~freecg_md.md.FreeCGPotential` with one replica:
its neighbour-list cache reused across steps, its checks of the input, its
training-domain warnings), without the ASE Atoms object that the generic
``MLPotential("ase")`` copies on every step. A request at the positions and box of the last
one (``getState(getEnergy=True)`` after a step, as reporters make) returns the last result
without running the model again.

Arguments of ``createSystem`` / ``createMixedSystem`` for this potential: ``modelPath``
(required; a model file, or a list of them for a committee), ``device`` ("cpu", "cuda"),
``dtype`` ("float32", "float64"), ``skin`` (Å, the neighbour list's Verlet skin),
``matmul_precision`` ("float32", or the reduced-precision products of
:mod:`freecg_md.nn.precision`: "bfloat16" on CPUs with bfloat16 units, "tf32" on CUDA).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from ase.data import chemical_symbols

from .calculator import prepare_model, resolve_device, resolve_dtype
from .io import model_fingerprint
from .md.potentials import FreeCGPotential
from .units import ANGSTROM_PER_NM, KJ_MOL_PER_EV

__all__ = ["EV_TO_KJ_PER_MOL", "FreeCGComputation", "FreeCGPotentialImpl",
           "FreeCGPotentialImplFactory", "constrain_hydrogen_bonds", "freecg_force"]

EV_TO_KJ_PER_MOL = KJ_MOL_PER_EV

try:  # openmm-ml is an optional extra; the classes below need it only to be registered.
    from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory
except ImportError:  # pragma: no cover - exercised only without the extra
    MLPotentialImpl = MLPotentialImplFactory = object  # type: ignore[assignment,misc]


class FreeCGComputation:
    """The computation of a FreeCG ``openmm.PythonForce``: called with an OpenMM State, returns
    the energy (kJ/mol) and forces (kJ/mol/nm) of ``potential``'s one replica.

    OpenMM copies and serialises a PythonForce by pickling its function (``copy.deepcopy``
    of a System, ``XmlSerializer``, openmm-ml's ``createMixedSystem(interpolate=True)``), so
    this is a class, pickled as what rebuilds it: the model file(s) with their fingerprints,
    the atoms and the settings, not the files' weights (a model given as an object rather
    than a file is pickled whole). Unpickling loads the files again; a missing file or one
    whose fingerprint has changed makes the first evaluation fail with that reason, so a
    System read back computes what it was saved with, or says why not.
    """

    def __init__(self, model_path: str | os.PathLike | list, numbers: np.ndarray,
                 cell: np.ndarray | None, periodic: bool, device: str = "cpu",
                 dtype: str = "float32", skin: float = 1.0,
                 matmul_precision: str = "float32") -> None:
        paths = list(model_path) if isinstance(model_path, (list, tuple)) else [model_path]
        # Files by absolute path, so that a System read back elsewhere finds them; a model
        # object (not a file) is kept as it is, and pickled whole.
        paths = [os.path.abspath(p) if isinstance(p, (str, os.PathLike)) else p
                 for p in paths]
        self.settings = {"model_path": paths if isinstance(model_path, (list, tuple))
                         else paths[0],
                         "numbers": np.asarray(numbers).tolist(),
                         "cell": None if cell is None else np.asarray(cell).tolist(),
                         "periodic": bool(periodic), "device": device, "dtype": dtype,
                         "skin": float(skin), "matmul_precision": matmul_precision}
        self.fingerprints = [model_fingerprint(p) if isinstance(p, str) else None
                             for p in paths]
        self.problem: str | None = None
        self._build()

    def _build(self) -> None:
        settings = self.settings
        model = prepare_model(settings["model_path"], resolve_device(settings["device"]),
                              resolve_dtype(settings["dtype"]),
                              matmul_precision=settings["matmul_precision"])
        numbers = np.asarray(settings["numbers"])
        unknown = sorted(set(numbers.tolist()) - set(model.species))
        if unknown:
            names = ", ".join(chemical_symbols[z] for z in unknown)
            known = ", ".join(chemical_symbols[z] for z in model.species)
            raise ValueError(f"the Topology has element(s) {names} that the model "
                             f"{settings['model_path']} was not trained on; it knows {known}")
        cell = None if settings["cell"] is None else np.asarray(settings["cell"], np.float64)
        # One replica, evaluated in this process: OpenMM calls once per step.
        self.potential = FreeCGPotential(
            model, numbers, cell, settings["periodic"],
            device=settings["device"], dtype=settings["dtype"], skin=settings["skin"],
            workers=1, matmul_precision=settings["matmul_precision"])
        # The last evaluation: OpenMM asks again at unchanged positions whenever a reporter
        # or the user calls getState(getEnergy=True) after a step, and a model pass is the
        # whole cost of a step (an ASE calculator returns its stored results then too).
        self.last: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings, "fingerprints": self.fingerprints}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings, self.fingerprints = state["settings"], state["fingerprints"]
        # OpenMM unpickles this inside its deserialiser, where a Python exception crashes
        # the interpreter; a problem is kept and raised at the first evaluation instead,
        # which OpenMM passes on as an OpenMMException with its message.
        self.problem = None
        path = self.settings["model_path"]
        try:
            for file, expected in zip(path if isinstance(path, list) else [path],
                                      self.fingerprints, strict=True):
                if expected is None:
                    continue  # a model object, unpickled with the rest
                if not os.path.isfile(file):
                    raise FileNotFoundError(f"the FreeCG force of this System needs the model "
                                            f"file {file}, which is missing")
                found = model_fingerprint(file)
                if found != expected:
                    raise ValueError(f"the model file {file} has changed since this System "
                                     f"was saved (fingerprint {found[:12]}, saved with "
                                     f"{expected[:12]}); expected the same model")
            self._build()
        except Exception as error:  # noqa: BLE001 - see above: raised at the first call
            self.problem = f"{type(error).__name__}: {error}"

    def __call__(self, state: Any) -> tuple[float, np.ndarray]:
        from openmm import unit

        if self.problem:
            raise RuntimeError(self.problem)

        periodic, last = self.settings["periodic"], self.last
        positions = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
                               dtype=np.float64)
        box = (np.asarray(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(
            unit.nanometer), dtype=np.float64) if periodic else None)
        if (last and np.array_equal(positions, last["positions"])
                and (box is None or np.array_equal(box, last["box"]))):
            return last["result"]
        if box is not None:
            # A barostat changes the box: the neighbour list sees the new cell and rebuilds.
            self.potential.cell = box * ANGSTROM_PER_NM
        energies, forces = self.potential.evaluate(
            torch.from_numpy(positions * ANGSTROM_PER_NM)[None])
        result = (float(energies[0]) * EV_TO_KJ_PER_MOL,
                  forces[0].numpy() * (EV_TO_KJ_PER_MOL * ANGSTROM_PER_NM))
        last.update(positions=positions, box=box, result=result)
        return result


def freecg_force(computation: FreeCGComputation,
                 particles: Iterable[int] | None = None):  # noqa: ANN201 - openmm.PythonForce
    """An ``openmm.PythonForce`` running ``computation`` (on the atoms ``particles``, or on
    all atoms of the System if None)."""
    import openmm

    force = openmm.PythonForce(computation)
    force.setUsesPeriodicBoundaryConditions(computation.settings["periodic"])
    if particles is not None:
        force.setParticles(list(particles))
    return force


def constrain_hydrogen_bonds(system: Any, topology: Any, positions_nm: np.ndarray,
                             hydrogen_mass: float | None = None) -> int:
    """Make every X-H bond of ``topology`` rigid in ``system`` (an ``openmm.System``), at its
    length in ``positions_nm`` (N, 3) nm, and, with ``hydrogen_mass`` (amu), move mass from
    each hydrogen's heavy atom to it so that it weighs that much (hydrogen mass
    repartitioning: the total mass, and the configurations sampled, stay the same).

    openmm-ml's ``createSystem`` takes neither ``constraints`` nor ``hydrogenMass``. Unlike
    OpenMM's force fields with ``constraints=HBonds``, the lengths are those of the given
    positions (an ML potential has no table of equilibrium lengths; pass a thermalised or
    minimised structure), H-H pairs and water are not treated apart, and every hydrogen
    bonded to a heavy atom is repartitioned. Atoms without an element (virtual sites) are
    left alone. Returns the constraints added.
    """
    added = 0
    for a, b in topology.bonds():
        light = [atom.element is not None and atom.element.atomic_number == 1
                 for atom in (a, b)]
        if light[0] == light[1] or a.element is None or b.element is None:
            continue  # no hydrogen, H-H, or an atom without an element
        hydrogen, heavy = (a, b) if light[0] else (b, a)
        length = float(np.linalg.norm(positions_nm[a.index] - positions_nm[b.index]))
        system.addConstraint(a.index, b.index, length)
        added += 1
        if hydrogen_mass is not None:
            from openmm import unit

            moved = hydrogen_mass - system.getParticleMass(hydrogen.index).value_in_unit(
                unit.dalton)
            heavy_mass = system.getParticleMass(heavy.index).value_in_unit(unit.dalton)
            if heavy_mass - moved <= 0:
                raise ValueError(f"hydrogen_mass={hydrogen_mass} amu leaves atom "
                                 f"{heavy.index} ({heavy.element.symbol}) no mass")
            system.setParticleMass(hydrogen.index, hydrogen_mass)
            system.setParticleMass(heavy.index, heavy_mass - moved)
    return added


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
                  skin: float = 1.0, matmul_precision: str = "float32", **args: Any) -> None:
        included = list(topology.atoms())
        if atoms is not None:
            atoms = list(atoms)
            included = [included[i] for i in atoms]
        if any(atom.element is None for atom in included):
            raise ValueError("every atom FreeCG covers needs an element in the Topology")
        numbers = np.array([atom.element.atomic_number for atom in included])
        from openmm import unit

        box = topology.getPeriodicBoxVectors()
        periodic = box is not None
        cell = (np.asarray(box.value_in_unit(unit.angstrom), dtype=np.float64)
                if periodic else None)
        computation = FreeCGComputation(self.model_path, numbers, cell, periodic,
                                        device=device, dtype=dtype, skin=skin,
                                        matmul_precision=matmul_precision)
        force = freecg_force(computation, atoms)
        force.setForceGroup(forceGroup)
        system.addForce(force)
