"""Conversions at the package's boundaries. Inside, everything is in ASE's units (eV, Å,
amu, fs through ``ase.units``); mdtraj and OpenMM work in nm, and reports give free
energies in kcal/mol and energies in kJ/mol as chemists read them."""

from __future__ import annotations

from ase import units

__all__ = ["ANGSTROM_PER_NM", "EV_PER_KJ_MOL", "KCAL_MOL_PER_EV", "KJ_MOL_PER_EV",
           "MEV_PER_EV", "NM_PER_ANGSTROM"]

ANGSTROM_PER_NM = 10.0
NM_PER_ANGSTROM = 0.1
EV_PER_KJ_MOL = units.kJ / units.mol
KJ_MOL_PER_EV = 1.0 / EV_PER_KJ_MOL
KCAL_MOL_PER_EV = 1.0 / (units.kcal / units.mol)
# Per-atom energy errors are reported in meV, the unit of the accuracy targets.
MEV_PER_EV = 1000.0
