"""Geometry of trajectories: RMSD, distances between named atoms, radius of gyration.

Arrays in, arrays out, in Å. mdtraj does the geometry; it works in nm, so positions are
converted once, here, at the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence

import mdtraj
import numpy as np

from ..units import NM_PER_ANGSTROM
from .statistics import check_finite

__all__ = [
    "CHIGNOLIN_CV_ATOMS",
    "atom_index",
    "chignolin_cvs",
    "distances",
    "radius_of_gyration",
    "rmsd",
    "selection",
]


# The two distances of the FreeCG paper's chignolin landscape: backbone carbonyl O of Asp3
# to backbone N of Gly7, and of Glu5 to backbone N of Thr8 (residues numbered from 1).
CHIGNOLIN_CV_ATOMS = (((3, "O"), (7, "N")), ((5, "O"), (8, "N")))
# Their residues in CLN025 (YYDPETGTWY): a topology numbered otherwise (caps, another
# peptide) would give other distances under the same names.
_CHIGNOLIN_CV_RESIDUES = {3: "ASP", 5: "GLU", 7: "GLY", 8: "THR"}

_SELECTIONS = {"backbone": "backbone", "ca": "name CA", "heavy": "not element H",
               "all": "all"}


def _trajectory(positions: np.ndarray, topology: mdtraj.Topology) -> mdtraj.Trajectory:
    xyz = check_finite("positions", positions)
    if xyz.shape[-2:] != (topology.n_atoms, 3):
        raise ValueError(f"positions has shape {xyz.shape}; expected (F, {topology.n_atoms}, 3) "
                         f"or ({topology.n_atoms}, 3) for the topology's atoms")
    xyz = xyz.reshape(-1, topology.n_atoms, 3)
    return mdtraj.Trajectory(xyz * NM_PER_ANGSTROM, topology)


def selection(topology: mdtraj.Topology, name: str) -> np.ndarray:
    """Atom indices of ``"backbone"``, ``"ca"``, ``"heavy"`` or ``"all"``."""
    if name not in _SELECTIONS:
        raise ValueError(f"selection={name!r}: expected one of {sorted(_SELECTIONS)}")
    return topology.select(_SELECTIONS[name])


def rmsd(positions: np.ndarray, reference: np.ndarray, topology: mdtraj.Topology,
         atoms: str | Sequence[int] = "ca") -> np.ndarray:
    """RMSD to ``reference`` after optimal superposition, per frame, Å; every atom weighs
    the same (no mass weighting), as in mdtraj.

    Parameters
    ----------
    positions:
        (F, N, 3) or (N, 3) Å.
    reference:
        (N, 3) Å.
    topology:
        Topology of the N atoms.
    atoms:
        A selection name (see :func:`selection`) or atom indices; superposition and RMSD
        both use these atoms.
    """
    if isinstance(atoms, str):
        indices = selection(topology, atoms)
    else:
        indices = np.asarray(atoms)
        if (indices.ndim != 1 or indices.size == 0 or indices.dtype.kind not in "iu"
                or indices.min() < 0 or indices.max() >= topology.n_atoms):
            raise ValueError(f"atoms={atoms!r}: expected a selection name or atom indices "
                             f"0 to {topology.n_atoms - 1}")
    if np.shape(reference) != (topology.n_atoms, 3):
        raise ValueError(f"reference has shape {np.shape(reference)}; expected "
                         f"({topology.n_atoms}, 3), one structure")
    frames, target = _trajectory(positions, topology), _trajectory(reference, topology)
    return mdtraj.rmsd(frames, target, atom_indices=indices) / NM_PER_ANGSTROM


def radius_of_gyration(positions: np.ndarray, masses: np.ndarray | None = None) -> np.ndarray:
    """``R_g = sqrt(sum_i w_i |x_i - x_c|^2 / sum_i w_i)`` per frame, Å, about the weighted
    centre ``x_c``; weights ``masses`` (N,) (any unit), or all 1 (the geometric form, as
    mdtraj's ``compute_rg`` without masses).

    ``positions`` (F, N, 3) or (N, 3) Å; returns (F,) or a 0-d array.
    """
    xyz = check_finite("positions", positions)
    if xyz.ndim not in (2, 3) or xyz.shape[-1] != 3 or xyz.shape[-2] == 0:
        raise ValueError(f"positions has shape {xyz.shape}; expected (F, N, 3) or (N, 3) "
                         "with N >= 1")
    weights = np.ones(xyz.shape[-2]) if masses is None else check_finite("masses", masses,
                                                                          ndim=1)
    if weights.shape[0] != xyz.shape[-2] or not (weights > 0).all():
        raise ValueError(f"masses has shape {weights.shape} (all > 0: "
                         f"{bool((weights > 0).all())}); expected ({xyz.shape[-2]},) "
                         "positive values, one per atom")
    weights = weights / weights.sum()
    centre = np.einsum("i,...ij->...j", weights, xyz)
    squared = ((xyz - centre[..., None, :]) ** 2).sum(-1)
    return np.sqrt(np.einsum("i,...i->...", weights, squared))


def atom_index(topology: mdtraj.Topology, residue: int, name: str) -> int:
    """Index of atom ``name`` in residue number ``residue`` (1-based, as in the sequence).

    Raises
    ------
    KeyError
        No such residue or atom; the message lists what the residue has.
    """
    residues = list(topology.residues)
    if not 1 <= residue <= len(residues):
        raise KeyError(f"residue {residue} does not exist; the topology has residues 1 to "
                       f"{len(residues)}")
    res = residues[residue - 1]
    for atom in res.atoms:
        if atom.name == name:
            return atom.index
    names = ", ".join(a.name for a in res.atoms)
    raise KeyError(f"residue {residue} ({res.name}) has no atom named {name!r}; it has {names}")


def distances(positions: np.ndarray, topology: mdtraj.Topology,
              pairs: Sequence[tuple[tuple[int, str], tuple[int, str]]]) -> np.ndarray:
    """Distances (F, n_pairs) Å between atoms named ``((residue, name), (residue, name))``."""
    index_pairs = np.array([[atom_index(topology, *a), atom_index(topology, *b)]
                            for a, b in pairs])
    return mdtraj.compute_distances(_trajectory(positions, topology), index_pairs,
                                    periodic=False) / NM_PER_ANGSTROM


def chignolin_cvs(positions: np.ndarray, topology: mdtraj.Topology) -> np.ndarray:
    """The paper's two chignolin distances (Asp3 O - Gly7 N, Glu5 O - Thr8 N), (F, 2) Å.

    Raises
    ------
    ValueError
        The topology's residues 3, 5, 7 and 8 are not Asp, Glu, Gly and Thr.
    """
    residues = list(topology.residues)
    found = {number: residues[number - 1].name if number <= len(residues) else None
             for number in _CHIGNOLIN_CV_RESIDUES}
    if found != _CHIGNOLIN_CV_RESIDUES:
        raise ValueError(f"topology: residues 3, 5, 7, 8 are {list(found.values())}; "
                         f"expected {list(_CHIGNOLIN_CV_RESIDUES.values())} (chignolin "
                         "CLN025, numbered from 1)")
    return distances(positions, topology, CHIGNOLIN_CV_ATOMS)
