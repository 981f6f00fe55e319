"""A training pass of energies and forces compiled as one graph (``TrainConfig.compile``).

A force loss needs the forces' own graph. The reference path
(:meth:`freecg_md.nn.FreeCG.energy_and_forces` with ``create_graph=True``) gets it from
eager autograd: the backward pass is recorded op by op and differentiated again, and
``torch.compile`` cannot compile that (a compiled backward is not differentiable). Here the
forces come from :func:`torch.func.grad_and_value` inside a function that
``torch.compile`` traces, so the forward pass and its derivative by the edge vectors are one
traced graph, and the loss's backward pass is that graph's ordinary (first-order) backward,
compiled with it. The mathematics is the model's own network (``FreeCG._network``); only the
spherical harmonics are written out (:func:`spherical_harmonics_l12`), since e3nn's
``Irreps`` objects cannot be traced. ``tests/train/test_compiled.py`` checks energies,
forces and the loss's parameter gradients against the reference path.

Positions enter through the edge vectors ``r_ij = r_j - r_i + s_ij`` only, so with
``g_ij = dE/dr_ij`` the forces are ``F_i = sum_{e: centre i} g_e - sum_{e: neighbour i} g_e``
(two index-adds outside the compiled function, where autograd differentiates them).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from ..nn.chunks import keeps_graphs
from ..nn.model import structure_energies

if TYPE_CHECKING:
    from ..nn.model import FreeCG

__all__ = ["CompiledForces", "spherical_harmonics_l12"]

_SQRT3 = math.sqrt(3.0)


def spherical_harmonics_l12(vectors: torch.Tensor) -> torch.Tensor:
    """The l = 1 and l = 2 real spherical harmonics of the directions of ``vectors``.

    Same basis, order and normalisation as ``e3nn.o3.spherical_harmonics("1x1o+1x2e",
    vectors, normalize=True, normalization="norm")`` (each l has unit norm): with
    ``(x, y, z) = r / |r|``,

    ``Y1 = (x, y, z)``,
    ``Y2 = (sqrt3 x z, sqrt3 x y, y^2 - (x^2 + z^2) / 2, sqrt3 y z, sqrt3 (z^2 - x^2) / 2)``.

    ``vectors`` (E, 3), none of length zero; returns (E, 8).
    """
    unit = vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    x, y, z = unit.unbind(-1)
    return torch.stack([
        x, y, z,
        _SQRT3 * x * z, _SQRT3 * x * y, y * y - 0.5 * (x * x + z * z), _SQRT3 * y * z,
        0.5 * _SQRT3 * (z * z - x * x),
    ], dim=-1)


class CompiledForces:
    """Energies and forces of ``model`` for a force loss, through one compiled graph.

    Parameters
    ----------
    model:
        The trainable :class:`~freecg_md.nn.FreeCG`; its parameters are read at every
        call (the optimiser's updates apply), nothing is copied.
    options:
        Passed to ``torch.compile`` (``dynamic=True`` is set: edge counts differ between
        batches).

    Notes
    -----
    The compiled graph keeps every intermediate of the pass whole, like the reference path
    below the kept-graph limit (:func:`~freecg_md.nn.chunks.keeps_graphs`); passes above it,
    and models with self loops (a zero edge vector has no direction), take the reference
    path (:meth:`supports`). The first call compiles (minutes on a CPU, seconds with
    inductor's on-disk cache); the atom and edge counts are dynamic, so batches of other
    sizes reuse it.
    """

    def __init__(self, model: FreeCG, **options: Any) -> None:
        self.model = model
        options.setdefault("dynamic", True)
        self._edge_terms = torch.compile(self._edge_terms_eager, **options)

    def supports(self, n_edges: int) -> bool:
        """Whether a pass of ``n_edges`` edges goes through the compiled graph."""
        config = self.model.config
        return not config.self_loops and keeps_graphs(n_edges, config.hidden,
                                                      config.num_layers)

    def _edge_terms_eager(self, vectors: torch.Tensor, species: torch.Tensor,
                          centers: torch.Tensor,
                          neighbors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised atom energies (N,) and their sum's gradient by ``vectors`` (E, 3)."""
        model = self.model

        def total(edge_vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            distances = torch.linalg.vector_norm(edge_vectors, dim=-1)
            out = model._network(species, centers, neighbors, distances,
                                 spherical_harmonics_l12(edge_vectors))
            return out.sum(), out

        gradient, (_, out) = torch.func.grad_and_value(total, has_aux=True)(vectors)
        return out, gradient

    def energy_and_forces(self, numbers: torch.Tensor, positions: torch.Tensor,
                          edge_index: torch.Tensor, shifts: torch.Tensor | None = None,
                          batch: torch.Tensor | None = None,
                          num_graphs: int = 1) -> dict[str, torch.Tensor]:
        """As :meth:`FreeCG.energy_and_forces` with ``create_graph=True``: ``energy`` (B,)
        eV, ``energies`` (N,) eV per atom, ``forces`` (N, 3) eV/Å, all differentiable by
        the model's parameters. Pairs at or beyond the cutoff are dropped first, as there.
        """
        model = self.model
        centers, neighbors, vectors, _ = model.edges_within_cutoff(positions, edge_index, shifts)
        species = model.species_index[numbers]
        out, gradient = self._edge_terms(vectors, species, centers, neighbors)
        atom_energy = model.unstandardise(species, out)
        energy = structure_energies(atom_energy, batch, num_graphs)
        # F_i = -dE/dr_i: dE/dr is +g on an edge's neighbour and -g on its centre, so the
        # force is +g on the centre and -g on the neighbour; scaled like the energy.
        scale = model.energy_scale.to(gradient.dtype)
        forces = (torch.zeros_like(positions).index_add_(0, centers, gradient)
                  .index_add_(0, neighbors, -gradient)) * scale
        return {"energy": energy, "energies": atom_energy, "forces": forces}
