"""Gather and scatter over edges, written for speed on the CPU.

Advanced indexing of an (N, 8, F) tensor (``v[index]``) takes a slower general path on a
CPU than ``index_select`` on the same memory viewed as (N, 8F); these helpers always take
the flat path. They are differentiable (their backward passes are each other).
"""

from __future__ import annotations

import math

import torch


def gather(features: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``features[index]`` of an (N, ...) tensor, shape (E, ...)."""
    flat = features.reshape(features.shape[0], math.prod(features.shape[1:]))
    return torch.index_select(flat, 0, index).view(index.shape[0], *features.shape[1:])


def scatter_sum(values: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Sum of the rows of ``values`` (E, ...) into ``num_nodes`` rows by ``index`` (E,)."""
    flat = values.reshape(values.shape[0], math.prod(values.shape[1:]))
    out = flat.new_zeros((num_nodes, flat.shape[1])).index_add_(0, index, flat)
    return out.view(num_nodes, *values.shape[1:])


def dot_components(vectors: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``sum_m vectors[e, m, f] direction[e, m]``: (E, 8, F), (E, 8) -> (E, F)."""
    return torch.bmm(direction.unsqueeze(1), vectors).squeeze(1)
