"""One FreeCG interaction layer: attention on real edges, CG coupling on abstract edges."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .group_cg import GroupCGTensorProduct, shuffle_abstract_edges
from .ops import dot_components, gather, scatter_sum


class FreeCGLayer(nn.Module):
    """Update of node scalars ``x`` (N, F), node vectors ``v`` (N, 8, F), edge scalars ``f``.

    Parameters
    ----------
    hidden:
        ``F``.
    num_heads:
        ``H``; ``F`` must be divisible by it.
    num_groups:
        ``G`` for the group CG transform; ``F`` must be divisible by it.
    update_edges:
        Whether this layer returns an edge update (all layers but the last).
    use_group_cg:
        If False, the vector update is ViSNet's ``dv = A + B`` instead of
        ``dv = Shuffle(GroupTP(A, B)) + A`` (the ablation of the FreeCG paper).

    Notes
    -----
    Unlike the reference code, the vector message ``M_ij`` is multiplied by the cutoff
    ``phi(d_ij)``: its gates have biases, so without that factor an atom entering the cutoff
    sphere would change the energy by a jump. With it, every message vanishes smoothly at
    ``r_c`` and the energy is continuously differentiable there.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        num_groups: int,
        update_edges: bool,
        use_group_cg: bool = True,
    ) -> None:
        super().__init__()
        if hidden % num_heads or hidden % num_groups:
            raise ValueError(
                f"hidden={hidden} must be divisible by num_heads={num_heads} and "
                f"num_groups={num_groups}"
            )
        self.hidden = hidden
        self.num_heads = num_heads
        self.layernorm = nn.LayerNorm(hidden)
        self.qks_proj = nn.Linear(hidden, 3 * hidden)
        self.dkdv_proj = nn.Linear(hidden, 2 * hidden)
        self.vec_proj = nn.Linear(hidden, 3 * hidden, bias=False)
        self.enhancer = nn.Linear(hidden, num_heads)
        self.gate_proj = nn.Linear(hidden, 2 * hidden)
        self.o_proj = nn.Linear(hidden, 3 * hidden)
        self.group_cg = (
            GroupCGTensorProduct(num_groups, hidden // num_groups) if use_group_cg else None
        )
        self.shuffle = (3 * num_groups) // 2
        self.update_edges = update_edges
        if update_edges:
            self.f_proj = nn.Linear(hidden, hidden)
            self.w_center_proj = nn.Linear(hidden, hidden, bias=False)
            self.w_neighbor_proj = nn.Linear(hidden, hidden, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(
        self,
        x: torch.Tensor,
        v: torch.Tensor,
        f: torch.Tensor,
        centers: torch.Tensor,
        neighbors: torch.Tensor,
        sh: torch.Tensor,
        phi: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Return the residual updates ``(dx, dv, df)``; ``df`` is None in the last layer.

        ``x`` (N, F), ``v`` (N, 8, F), ``f`` (E, F); ``centers``, ``neighbors`` (E,) the atoms
        ``i`` and ``j`` of each edge; ``sh`` (E, 8) spherical harmonics of the unit vector
        from ``i`` to ``j``; ``phi`` (E,) cutoff weights.
        """
        n_atoms, heads, width = x.shape[0], self.num_heads, self.hidden
        x = self.layernorm(x)
        q, k, s = self.qks_proj(x).reshape(n_atoms, 3, heads, width // heads).unbind(1)
        dk, dv = F.silu(self.dkdv_proj(f)).reshape(-1, 2, heads, width // heads).unbind(1)
        u1, u2, u3 = self.vec_proj(v).split(width, dim=-1)
        vec_dot = (u1 * u2).sum(dim=1)

        v_neighbors = gather(v, neighbors)
        # Attention enhancer: per-channel invariants of the neighbour's abstract edges seen
        # along this real edge, mapped to one bias per head.
        enhance = self.enhancer(dot_components(v_neighbors, sh))
        attention = (gather(q, centers) * gather(k, neighbors) * dk).sum(dim=-1) + enhance
        # No softmax: the weights are gated by SiLU and smoothly cut off.
        attention = F.silu(attention) * phi.unsqueeze(-1)
        message = (gather(s, neighbors) * dv * attention.unsqueeze(-1)).reshape(-1, width)
        gates = F.silu(self.gate_proj(message)) * phi.unsqueeze(-1)
        gate1, gate2 = gates.split(width, dim=-1)
        vec_message = v_neighbors * gate1.unsqueeze(1) + gate2.unsqueeze(1) * sh.unsqueeze(-1)

        scalar_sum = scatter_sum(message, centers, n_atoms)
        abstract_edges = scatter_sum(vec_message, centers, n_atoms)

        o1, o2, o3 = self.o_proj(scalar_sum).split(width, dim=-1)
        dx = vec_dot * o2 + o3
        node_vectors = u3 * o1.unsqueeze(1)
        if self.group_cg is None:
            dvec = abstract_edges + node_vectors
        else:
            coupled = self.group_cg(abstract_edges, node_vectors)
            dvec = shuffle_abstract_edges(coupled, self.shuffle) + abstract_edges

        df = None
        if self.update_edges:
            df = F.silu(self.f_proj(f)) * self._rejected_dot(v, centers, neighbors, sh)
        return dx, dvec, df

    def _rejected_dot(
        self, v: torch.Tensor, centers: torch.Tensor, neighbors: torch.Tensor, sh: torch.Tensor
    ) -> torch.Tensor:
        """``sum_m w1 * w2`` with ``w1 = (W_c v_i)`` and ``w2 = (W_n v_j)`` each made
        orthogonal to ``Y_ij``, shape (E, F).

        Expanding the rejections gives ``a . b - (a . Y)(b . Y) / |Y|^2`` for ``a = W_c v_i``
        and ``b = W_n v_j``, which needs no rejected copies of the (E, 8, F) tensors. The 8
        components form an orthogonal representation (1o + 2e), so each dot product is
        invariant and ``df`` is too.
        """
        a = gather(self.w_center_proj(v), centers)
        b = gather(self.w_neighbor_proj(v), neighbors)
        along = dot_components(a, sh) * dot_components(b, sh)
        return (a * b).sum(dim=1) - along / (sh * sh).sum(dim=1, keepdim=True)
