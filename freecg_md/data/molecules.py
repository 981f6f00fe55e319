"""Chignolin CLN025 (YYDPETGTWY): the 166-atom mini-protein of the FreeCG paper's MD study.

The package ships ``chignolin_cln025.pdb``, made from the 5AWL crystal structure
(``chignolin_5awl.pdb``, public PDB data, heavy atoms of chain A) by
:func:`protonate_chignolin`: pdbfixer adds the hydrogens of pH 7 (charged termini, Asp3 and
Glu5 deprotonated: net charge -2) and OpenMM (amber14 + GBn2 implicit solvent) relaxes them
with the heavy atoms restrained to the crystal positions. Reading it needs only mdtraj and
ASE; OpenMM and pdbfixer are needed only to remake it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import mdtraj
import numpy as np
from ase import Atoms

from ..units import ANGSTROM_PER_NM

if TYPE_CHECKING:  # OpenMM is optional: only protonate_chignolin needs it
    import openmm.app

__all__ = ["CHIGNOLIN_CHARGE", "ChignolinSystem", "load_chignolin", "protonate_chignolin"]

CHIGNOLIN_CHARGE = -2
CHIGNOLIN_SEQUENCE = "YYDPETGTWY"


@dataclass(frozen=True)
class ChignolinSystem:
    """Chignolin as ASE Atoms and an mdtraj topology.

    Attributes
    ----------
    atoms:
        ASE Atoms of the native (crystal, protonated) structure, positions in Å, no cell;
        ``atoms.info["charge"] == -2``.
    topology:
        mdtraj Topology (residues, atom names), the same atom order as ``atoms``.
    native_positions:
        (166, 3) float64 Å, the RMSD reference.
    charge:
        Net charge, -2.
    pdb_path:
        The shipped PDB file.
    """

    atoms: Atoms
    topology: mdtraj.Topology
    native_positions: np.ndarray
    charge: int
    pdb_path: Path


def _packaged(name: str) -> Path:
    return Path(str(resources.files("freecg_md.data").joinpath(name)))


def load_chignolin() -> ChignolinSystem:
    """The protonated native structure shipped with the package (needs mdtraj, not OpenMM).

    Returns
    -------
    ChignolinSystem
        166 atoms (C62 H73 N11 O20), positions in Å, charge -2; a new object each call, so
        callers may modify ``atoms`` freely.
    """
    path = _packaged("chignolin_cln025.pdb")
    traj = mdtraj.load_pdb(str(path))
    positions = traj.xyz[0].astype(np.float64) * ANGSTROM_PER_NM
    numbers = np.array([a.element.atomic_number for a in traj.topology.atoms])
    atoms = Atoms(numbers=numbers, positions=positions)
    atoms.info["charge"] = CHIGNOLIN_CHARGE
    return ChignolinSystem(atoms, traj.topology, positions.copy(), CHIGNOLIN_CHARGE, path)


def protonate_chignolin(out_path: str | Path, ph: float = 7.0) -> Path:
    """Remake the shipped protonated PDB from the heavy-atom crystal structure.

    Adds hydrogens with pdbfixer at ``ph``, then minimises with amber14 + GBn2 while
    harmonic restraints (1000 kJ/mol/nm²) hold the heavy atoms at the crystal positions, so
    only the added hydrogens relax. Needs OpenMM and pdbfixer (the ``data`` extra).
    The shipped ``chignolin_cln025.pdb`` is ``protonate_chignolin(path)`` with the defaults
    (OpenMM 8.6, pdbfixer 1.12, Reference platform): 166 atoms, amber14 net charge -2.
    Heavy atoms end within 0.3 Å of the crystal. A rerun reproduces it to 0.02 Å except
    that pdbfixer may name the two hydrogens of a CH2 group of Pro4 the other way round
    (the same geometry).

    Parameters
    ----------
    out_path:
        PDB file to write (positions in Å, residue numbering of 5AWL kept).
    ph:
        pH at which pdbfixer chooses protonation states.

    Returns
    -------
    Path
        ``out_path``.
    """
    import openmm
    from openmm import app, unit
    from pdbfixer import PDBFixer

    fixer = PDBFixer(str(_packaged("chignolin_5awl.pdb")))
    fixer.findMissingResidues()
    fixer.findMissingAtoms()
    fixer.addMissingAtoms()
    fixer.addMissingHydrogens(ph)
    forcefield = app.ForceField("amber14-all.xml", "implicit/gbn2.xml")
    system = forcefield.createSystem(fixer.topology, nonbondedMethod=app.NoCutoff,
                                     constraints=None)
    restraint = openmm.CustomExternalForce("0.5*k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
    restraint.addGlobalParameter("k", 1000.0)
    for name in ("x0", "y0", "z0"):
        restraint.addPerParticleParameter(name)
    for atom, position in zip(fixer.topology.atoms(), fixer.positions, strict=True):
        if atom.element.symbol != "H":
            restraint.addParticle(atom.index, position.value_in_unit(unit.nanometer))
    system.addForce(restraint)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001),
                             openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(fixer.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 2000)
    positions = context.getState(getPositions=True).getPositions()
    out_path = Path(out_path)
    with out_path.open("w") as handle:
        app.PDBFile.writeFile(fixer.topology, positions, handle, keepIds=True)
    return out_path


def net_charge_amber(topology: openmm.app.Topology) -> float:
    """Net charge (e) of an OpenMM topology under amber14, to check the protonation."""
    import openmm
    from openmm import app

    system = app.ForceField("amber14-all.xml").createSystem(topology)
    nonbonded = next(f for f in system.getForces() if isinstance(f, openmm.NonbondedForce))
    return sum(nonbonded.getParticleParameters(i)[0]._value
               for i in range(nonbonded.getNumParticles()))
