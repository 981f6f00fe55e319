"""Initial node and edge features: element embedding, neighbour embedding, edge embedding."""

from __future__ import annotations

import torch
from torch import nn


class NeighborEmbedding(nn.Module):
    """Scalar node features from the element of an atom and of its neighbours.

    ``x_i = W_c [ Emb1(z_i), sum_j Emb2(z_j) * (W_d rbf_ij) * phi(d_ij) ]``

    Parameters
    ----------
    num_species:
        Number of element types the model knows (indices, not atomic numbers).
    hidden:
        ``F``, the width of the node features.
    num_basis:
        ``K``, the width of the radial basis.
    """

    def __init__(self, num_species: int, hidden: int, num_basis: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_species, hidden)
        self.neighbor_embedding = nn.Embedding(num_species, hidden)
        self.distance_proj = nn.Linear(num_basis, hidden)
        self.combine = nn.Linear(2 * hidden, hidden)

    def forward(
        self,
        species: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        rbf: torch.Tensor,
        phi: torch.Tensor,
    ) -> torch.Tensor:
        """Return ``x`` (N, F).

        ``species`` (N,) species indices; ``centers``/``neighbors`` (E,) atom indices of
        each edge; ``rbf`` (E, K); ``phi`` (E,) cutoff weights.
        """
        return self.combine_sum(species, self.neighbor_sum(species, centers, neighbors, rbf, phi,
                                                           species.shape[0]))

    def neighbor_sum(
        self,
        species: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        rbf: torch.Tensor,
        phi: torch.Tensor,
        n_centers: int,
    ) -> torch.Tensor:
        """``sum_j Emb2(z_j) * (W_d rbf_ij) * phi(d_ij)`` on centres ``0 .. n_centers - 1``
        (``centers`` index into them), shape (n_centers, F)."""
        weights = self.distance_proj(rbf) * phi.unsqueeze(-1)
        # index_select, not indexing: the backward of indexing is an accumulating
        # index_put_, much slower on a CPU than index_select's backward (an index_add_).
        messages = self.neighbor_embedding(species).index_select(0, neighbors) * weights
        return messages.new_zeros((n_centers, messages.shape[1])).index_add_(0, centers, messages)

    def combine_sum(self, species: torch.Tensor, summed: torch.Tensor) -> torch.Tensor:
        """``x`` (N, F) from the neighbour sums (N, F) of all atoms."""
        return self.combine(torch.cat([self.embedding(species), summed], dim=-1))


class EdgeEmbedding(nn.Module):
    """Edge scalar features ``f_ij = (x_i + x_j) * (W rbf_ij + b)``, shape (E, F)."""

    def __init__(self, num_basis: int, hidden: int) -> None:
        super().__init__()
        self.edge_proj = nn.Linear(num_basis, hidden)

    def forward(
        self, x: torch.Tensor, centers: torch.Tensor, neighbors: torch.Tensor, rbf: torch.Tensor
    ) -> torch.Tensor:
        return (x.index_select(0, centers) + x.index_select(0, neighbors)) * self.edge_proj(rbf)
