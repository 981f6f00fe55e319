"""Neighbour lists and the Verlet-skin cache.

Molecules (no periodic direction) use torch-cluster's ``radius_graph`` when it is installed,
with the neighbour cap set to the number of atoms so that no neighbour can ever be dropped;
periodic cells use vesin, a maintained cell-list library, far faster than ASE's own list
on thousands of atoms. Without torch-cluster, vesin serves molecules too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

try:  # optional: builds from source only
    from torch_cluster import radius_graph as _radius_graph
except ImportError:  # pragma: no cover - depends on the environment
    _radius_graph = None

from vesin import NeighborList as _VesinNeighborList

__all__ = [
    "NeighborList",
    "NeighborListCache",
    "build_neighbor_list",
    "has_torch_cluster",
]


def has_torch_cluster() -> bool:
    """Whether torch-cluster is importable (used for non-periodic systems)."""
    return _radius_graph is not None


@dataclass(frozen=True)
class NeighborList:
    """All ordered pairs ``(i, j)``, ``i != j`` or a periodic image, with ``|r_ij| < cutoff``.

    Attributes
    ----------
    edge_index:
        (2, E) int64; row 0 the centre atom ``i``, row 1 the neighbour ``j``.
    cell_shifts:
        (E, 3) int64 image offsets ``S``: the neighbour sits at ``r_j + S @ cell`` (Å).
        All zero for a molecule.
    cutoff:
        The radius the list was built with, Å.
    """

    edge_index: np.ndarray
    cell_shifts: np.ndarray
    cutoff: float

    @property
    def num_edges(self) -> int:
        return int(self.edge_index.shape[1])

    def shift_vectors(self, cell: np.ndarray) -> np.ndarray:
        """Cartesian shifts (E, 3) Å for ``cell`` (3, 3) Å, rows the lattice vectors."""
        return self.cell_shifts.astype(np.float64) @ np.asarray(cell, dtype=np.float64)


def _check_geometry(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> None:
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions has shape {positions.shape}; expected (n_atoms, 3)")
    if not np.all(np.isfinite(positions)):
        bad = np.unique(np.nonzero(~np.isfinite(positions))[0])
        raise ValueError(f"positions of atoms {bad[:10].tolist()} are NaN or infinite")
    if pbc.any():
        # Only the periodic vectors must span their directions: ASE leaves the vector of a
        # non-periodic direction zero where it has no meaning (a slab, a nanotube).
        periodic = cell[pbc]
        lengths = np.linalg.norm(periodic, axis=1)
        independent = np.linalg.matrix_rank(periodic, tol=1e-6 * max(lengths.max(), 1.0))
        if np.any(lengths <= 0) or independent < len(periodic):
            raise ValueError(
                f"pbc={pbc.tolist()} needs a cell with non-zero, independent periodic "
                f"vectors; got cell={cell.tolist()}"
            )


def build_neighbor_list(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | bool | None = None,
    backend: str = "auto",
) -> NeighborList:
    """Full neighbour list within ``cutoff``.

    Parameters
    ----------
    positions:
        (N, 3) Å.
    cutoff:
        Å.
    cell:
        (3, 3) Å, rows the lattice vectors; ignored when no direction is periodic.
    pbc:
        Periodic directions: a bool or three bools. None means not periodic.
    backend:
        ``"auto"`` (torch-cluster for molecules when installed, else vesin),
        ``"torch_cluster"`` (molecules only) or ``"vesin"``.
    """
    if backend not in ("auto", "torch_cluster", "vesin"):
        raise ValueError(f"backend={backend!r}: expected 'auto', 'torch_cluster' or 'vesin'")
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(False if pbc is None else pbc, dtype=bool), (3,))
    _check_geometry(positions, cell, pbc)
    n_atoms = positions.shape[0]
    if backend == "torch_cluster":
        if _radius_graph is None:
            raise ImportError("backend='torch_cluster' needs torch-cluster, which is not installed")
        if pbc.any():
            raise ValueError("backend='torch_cluster' handles molecules only; got a periodic cell")
    use_cluster = backend == "torch_cluster" or (backend == "auto" and _radius_graph is not None)
    if not pbc.any() and use_cluster and n_atoms > 0:
        pos = torch.from_numpy(positions)
        # radius_graph returns (source j, target i); a cap equal to N can never truncate.
        edges = _radius_graph(pos, r=cutoff, loop=False, max_num_neighbors=max(n_atoms, 1))
        edge_index = edges.flip(0).numpy().astype(np.int64)
        shifts = np.zeros((edge_index.shape[1], 3), np.int64)
        return _sorted_by_center(edge_index, shifts, cutoff)
    calculator = _VesinNeighborList(cutoff=cutoff, full_list=True)
    box = cell if pbc.any() else np.zeros((3, 3))
    i, j, shifts = calculator.compute(
        points=positions, box=box, periodic=pbc.tolist() if pbc.any() else False, quantities="ijS"
    )
    edge_index = np.stack([i, j]).astype(np.int64)
    return _sorted_by_center(edge_index, np.asarray(shifts, np.int64).reshape(-1, 3), cutoff)


def _sorted_by_center(edge_index: np.ndarray, shifts: np.ndarray, cutoff: float) -> NeighborList:
    # A canonical order: edges grouped by centre atom make the model's gathers and scatters
    # walk memory in order, and any list (fresh, or cached with a skin) then gives the
    # pairs within the cutoff in the same order, so sums round the same way and a resumed
    # simulation repeats an uninterrupted one bit for bit.
    order = np.lexsort((shifts[:, 2], shifts[:, 1], shifts[:, 0], edge_index[1], edge_index[0]))
    return NeighborList(edge_index[:, order], shifts[order], cutoff)


class NeighborListCache:
    """A Verlet list: built with ``cutoff + skin`` and reused while it is still complete.

    The list is rebuilt when some atom has moved more than ``skin / 2`` since the last
    build (two atoms can then have closed in by more than ``skin``), or when the number of
    atoms, the atomic numbers, the cell or the periodic directions change. The model ignores
    pairs beyond its own cutoff, so a reused list gives the same result as a fresh one.

    Parameters
    ----------
    cutoff:
        The model's cutoff, Å.
    skin:
        Extra radius, Å. 0 disables reuse (a new list every call).

    Attributes
    ----------
    n_builds, n_reuses:
        How often a list was built and reused: for tuning ``skin`` (a larger skin means
        fewer builds but more pairs per step).
    """

    def __init__(self, cutoff: float, skin: float = 1.0) -> None:
        if not cutoff > 0:
            raise ValueError(f"cutoff={cutoff!r}: expected a positive distance in Å")
        if not skin >= 0:
            raise ValueError(f"skin={skin!r}: expected a distance >= 0 Å")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.n_builds = 0
        self.n_reuses = 0
        self._list: NeighborList | None = None
        self._key: tuple | None = None
        self._reference: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the cached list (counts are kept)."""
        self._list = None
        self._key = None
        self._reference = None

    @property
    def stats(self) -> dict[str, int]:
        return {"builds": self.n_builds, "reuses": self.n_reuses}

    def get(
        self,
        positions: np.ndarray,
        numbers: np.ndarray,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | bool | None = None,
    ) -> NeighborList:
        """A list valid for ``positions`` (N, 3) Å, built anew only when needed."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        pbc = np.broadcast_to(np.asarray(False if pbc is None else pbc, dtype=bool), (3,))
        key = (
            np.asarray(numbers).tobytes(),
            cell.tobytes() if pbc.any() else b"",
            pbc.tobytes(),
        )
        if self._list is not None and self.skin > 0 and key == self._key:
            if positions.shape == self._reference.shape:
                moved = np.max(np.sum((positions - self._reference) ** 2, axis=1), initial=0.0)
                # NaN compares False, so a NaN position forces a rebuild (which rejects it).
                if moved <= (0.5 * self.skin) ** 2:
                    self.n_reuses += 1
                    return self._list
        self._list = build_neighbor_list(positions, self.cutoff + self.skin, cell, pbc)
        self._key = key
        self._reference = positions.copy()
        self.n_builds += 1
        return self._list
