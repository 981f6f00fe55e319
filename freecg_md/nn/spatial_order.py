"""Atoms in the order of a space-filling curve, so that neighbours lie near in memory.

A run of edges (:mod:`~freecg_md.nn.chunks`) reads its centre atoms' neighbours' rows and
adds their gradients back into them. In an order where the atoms near each other in space
are near each other in the tensors (a lattice-built box, a protein residue by residue),
those rows are a small window that stays in the caches; in an arbitrary order (a box
filled by packmol, molecules shuffled) each run touches rows spread over the whole system
and misses the caches (``benchmarks/README.md``, scaling). Sorting
the atoms by the Z-order (Morton) code of a cubic cell of about one cutoff makes the window
small whatever the input's order; the model only relabels its edges' atom indices with it.
"""

from __future__ import annotations

import torch

__all__ = ["morton_codes", "spatial_order"]

# Bits per axis of a Morton code: three axes in a non-negative int64.
_BITS = 21


def morton_codes(positions: torch.Tensor, cell_size: float) -> torch.Tensor:
    """The Z-order code of each atom's cell.

    Parameters
    ----------
    positions:
        (N, 3) Å.
    cell_size:
        Edge of the cubic cells, Å; the cells count from the smallest coordinates.

    Returns
    -------
    (N,) int64: the bits of the cell's three indices interleaved (x lowest). Cells beyond
    2**21 along an axis (a millimetre at 5 Å cells) share the last index.
    """
    if cell_size <= 0:
        raise ValueError(f"morton_codes: cell_size must be positive (Å), got {cell_size}")
    if positions.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=positions.device)
    cells = torch.floor((positions - positions.min(0).values) / cell_size)
    cells = cells.nan_to_num(0.0).clamp(0, 2 ** _BITS - 1).to(torch.int64)
    bits = max(1, int(cells.max()).bit_length())
    code = torch.zeros(positions.shape[0], dtype=torch.int64, device=positions.device)
    for bit in range(bits):
        for axis in range(3):
            code |= ((cells[:, axis] >> bit) & 1) << (3 * bit + axis)
    return code


def spatial_order(positions: torch.Tensor, cell_size: float,
                  batch: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) long: the atoms' indices in Morton order of their cells (:func:`morton_codes`),
    atoms of one cell in their given order, and the molecules of ``batch`` (N,) kept
    whole and in their order (molecules of a batch may overlap in space: interleaving
    their atoms would spread each one's rows)."""
    order = torch.argsort(morton_codes(positions, cell_size), stable=True)
    if batch is not None:
        order = order[torch.argsort(batch[order], stable=True)]
    return order
