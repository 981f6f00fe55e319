"""The group Clebsch-Gordan transform on abstract edges, and abstract-edge shuffling.

Vector features are stored as ``(N, 8, F)``: the 8 components are the l=1 (odd, 3) and
l=2 (even, 5) irreps in e3nn's basis, the F channels are abstract edges. The F channels are
split into G contiguous groups of T channels (channel ``c = T g + e``). In every group a
fully connected tensor product ``(T x 1o + T x 2e) x (T x 1o + T x 2e) -> (T x 1o + T x 2e)``
with its own weights is applied. Parity leaves exactly four paths (the "sparse path"):

    1o x 1o -> 2e,   1o x 2e -> 1o,   2e x 1o -> 1o,   2e x 2e -> 2e

The result equals e3nn's ``o3.FullyConnectedTensorProduct`` on those irreps (component
irrep normalisation, element path normalisation) with weights ``weight[g].reshape(-1)``;
``tests/nn/test_group_cg.py`` checks that. It is computed differently, because the weights
are per group, not per atom: the inputs are first coupled with the Wigner 3j symbols, then
one batched matrix product per output irrep mixes the channel pairs of every group. Feeding
e3nn a weight tensor repeated for every atom instead makes memory grow with
atoms x groups x weights.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3
from torch import nn

# (l_in1, l_in2, l_out) in the instruction order of e3nn's FullyConnectedTensorProduct.
PATHS: tuple[tuple[int, int, int], ...] = ((1, 1, 2), (1, 2, 1), (2, 1, 1), (2, 2, 2))
_SLICES = {1: slice(0, 3), 2: slice(3, 8)}
NUM_COMPONENTS = 8


class GroupCGTensorProduct(nn.Module):
    """Per-group, 4-path equivariant tensor product of two sets of abstract edges.

    Parameters
    ----------
    num_groups:
        ``G``.
    group_size:
        ``T``, channels per group; ``F = G T``.

    Notes
    -----
    Weights, shape ``(G, 4, T, T, T)`` indexed ``[group, path, u_in1, v_in2, w_out]``, are
    Xavier-uniform so that the branch starts small next to the residual.
    """

    def __init__(self, num_groups: int, group_size: int) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.group_size = group_size
        t = group_size
        self.weight = nn.Parameter(torch.empty(num_groups, len(PATHS), t, t, t))
        bound = math.sqrt(6.0 / (t * t + t))
        nn.init.uniform_(self.weight, -bound, bound)
        for l1, l2, l3 in PATHS:
            self.register_buffer(f"w3j_{l1}{l2}{l3}", o3.wigner_3j(l1, l2, l3))
        # e3nn "component" + "element" normalisation: each output irrep of dimension d is
        # reached by 2 paths of T*T channel pairs each.
        self.norm = {l3: math.sqrt((2 * l3 + 1) / (2 * t * t)) for l3 in (1, 2)}

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Couple ``a`` and ``b``, both (N, 8, F), into (N, 8, F)."""
        n = a.shape[0]
        g, t = self.num_groups, self.group_size
        a = a.reshape(n, NUM_COMPONENTS, g, t)
        b = b.reshape(n, NUM_COMPONENTS, g, t)
        outputs = []
        for l3 in (1, 2):
            pairs = []
            weights = []
            for p, (l1, l2, lo) in enumerate(PATHS):
                if lo != l3:
                    continue
                w3j = getattr(self, f"w3j_{l1}{l2}{l3}")
                # (N, d1, G, T) x (d1, d2, d3) -> (N, d2, d3, G, T)
                coupled = torch.einsum("nigu,ijk->njkgu", a[:, _SLICES[l1]], w3j)
                # (N, d2, d3, G, T) x (N, d2, G, T) -> (G, N, d3, T * T)
                pair = torch.einsum("njkgu,njgv->gnkuv", coupled, b[:, _SLICES[l2]])
                pairs.append(pair.reshape(g, n, 2 * l3 + 1, t * t))
                weights.append(self.weight[:, p].reshape(g, t * t, t))
            d3 = 2 * l3 + 1
            pair = torch.cat(pairs, dim=-1).reshape(g, n * d3, len(pairs) * t * t)
            mixed = torch.bmm(pair, torch.cat(weights, dim=1))  # (G, N * d3, T)
            out = mixed.reshape(g, n, d3, t).permute(1, 2, 0, 3).reshape(n, d3, g * t)
            outputs.append(out * self.norm[l3])
        return torch.cat(outputs, dim=1)


def shuffle_abstract_edges(features: torch.Tensor, shift: int) -> torch.Tensor:
    """Roll the channel axis so that output channel ``c`` holds input channel ``c + shift``.

    Mixes abstract edges across groups between layers, since the group transform alone
    never couples channels of different groups. ``features``: (..., F).
    """
    return torch.roll(features, shifts=-shift, dims=-1)
