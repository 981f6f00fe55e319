"""One FreeCG interaction layer, the reference: its equations in torch operations.

Notation: N atoms, E edges ``j -> i`` (centre ``i``, neighbour ``j``), F channels, H heads
of D = F / H channels, G groups of T = F / G abstract edges. Node scalars ``x`` (N, F),
node vectors ``v`` (N, 8, F) (the l = 1 and l = 2 components of e3nn's basis, 3 + 5, per
channel), edge scalars ``f`` (E, F), edge harmonics ``Y_ij`` (E, 8), cutoff ``phi_ij``
(E,). One layer computes (Shao et al., ICLR 2025, on ViSNet's message passing)::

    [q | k | s]  = W_qks LayerNorm(x) + b               per atom, each (N, H, D)
    [dk | dv]    = SiLU(W_kv f_ij + b)                  per edge, each (E, H, D)
    [u1 | u2 | u3] = W_u v                              per atom, (N, 8, F) each
    e_ij   = W_e < v_j , Y_ij > + b_e                   enhancer, (E, H); <.,.> sums the
                                                        8 components per channel
    a_ij   = SiLU( sum_d q_i k_j dk_ij + e_ij ) phi_ij  attention, no softmax, (E, H)
    m_ij   = s_j dv_ij a_ij                             scalar message, (E, F)
    [g1 | g2] = SiLU(W_g m_ij + b_g)                    gates, (E, F) each
    M_ij   = (v_j g1 + g2 (x) Y_ij) phi_ij              vector message, (E, 8, F)
    S_i    = sum_j m_ij,   A_i = sum_j M_ij             A: the F abstract edges of atom i
    [o1 | o2 | o3] = W_o S_i + b_o
    dx_i   = <u1_i, u2_i> o2 + o3
    dv_i   = Shuffle(GroupCG(A_i, u3_i o1)) + A_i       (ViSNet: dv_i = A_i + u3_i o1)
    df_ij  = SiLU(W_f f_ij + b_f) * w_ij                all layers but the last
    w_ij   = a.b - (a.Y)(b.Y)/|Y|^2,  a = W_c v_i, b = W_n v_j

and returns ``x + dx``, ``v + dv``, ``f + df``. ``GroupCG`` is
:class:`~freecg_md.nn.group_cg.GroupCGTensorProduct` (four parity-allowed paths per group
of T channels), ``Shuffle`` rolls the channels by ``3G/2``
(:func:`~freecg_md.nn.group_cg.shuffle_abstract_edges`). The config's choices change
three lines: ``enhancer="max"`` maps the largest ``<v_j, Y_ij>`` of each group's T channels
(G values) instead of all F; ``vector_message_cutoff=False`` drops ``phi_ij`` from
``M_ij``; ``edge_update="dot"`` makes ``w_ij = a.b``. Self loops, where the model has
them, are edges with ``Y = 0`` and ``phi = 1``.

The edges come in runs of whole centre atoms (:mod:`freecg_md.nn.chunks`; one run: all
edges), each run's sums complete in itself, checkpointed when autograd records several.
Faster ways of computing the same function on a CPU (fused kernels, threads) live in
:mod:`freecg_md.nn.cpu` and are tested equal to this one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .chunks import EdgeRun, run_chunk
from .group_cg import GroupCGTensorProduct, shuffle_abstract_edges
from .ops import dot_components, gather, scatter_sum

__all__ = ["EDGE_UPDATE_FORMS", "ENHANCER_FORMS", "FreeCGLayer", "NodeTerms",
           "edge_update_invariant", "gather_terms"]

# The forms of the edge update's invariant and of the attention enhancer (the module's
# equations say what each computes).
EDGE_UPDATE_FORMS = ("rejection", "dot")
ENHANCER_FORMS = ("linear", "max")


class NodeTerms(NamedTuple):
    """Per-atom tensors that a run of centre atoms reads of its neighbours: ``k, s``
    (N, H, D), ``v`` (N, 8, F), and the edge update's neighbour projection ``w_neighbor``
    (N, 8, F) or None in a layer without edge update. :func:`gather_terms` gives a run's
    rows of them."""

    k: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    w_neighbor: torch.Tensor | None


def gather_terms(nodes: NodeTerms, run: EdgeRun) -> NodeTerms:
    """Each edge's row of every field of ``nodes``: (E_run, ...) at ``run.neighbors``."""
    return NodeTerms(*(None if t is None else gather(t, run.neighbors) for t in nodes))


def edge_update_invariant(a: torch.Tensor, b: torch.Tensor, sh: torch.Tensor,
                          form: str = "rejection") -> torch.Tensor:
    """The edge update's invariant ``w_ij`` (E, F) of ``a = W_c v_i`` and ``b = W_n v_j``,
    both (E, 8, F), and ``Y_ij`` (E, 8).

    ``"rejection"``: the dot product of ``a`` and ``b`` each made orthogonal to ``Y``,
    ``a.b - (a.Y)(b.Y) / |Y|^2`` (expanded, so no rejected copies of the (E, 8, F) tensors
    are made). The 8 components form an orthogonal representation (1o + 2e), so each dot
    product is invariant. A self loop has ``Y = 0``: nothing to reject, ``a.b`` (the clamp
    only avoids 0 / 0). ``"dot"``: ``a.b``.
    """
    plain = (a * b).sum(dim=1)
    if form == "dot":
        return plain
    along = dot_components(a, sh) * dot_components(b, sh)
    norm2 = (sh * sh).sum(dim=1, keepdim=True).clamp_min(torch.finfo(sh.dtype).tiny)
    return plain - along / norm2


class FreeCGLayer(nn.Module):
    """The layer's parameters and its update (the module's equations).

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
    vector_message_cutoff, edge_update, enhancer:
        The choices of :class:`~freecg_md.nn.FreeCGConfig` of the same names.
    zero_vectors_in:
        Whether the input vectors ``v`` are always zero (the first layer: vector features
        start at zero). Then the enhancer's invariants, the node term ``B``, the group
        transform and the edge update are exactly zero, and the layer skips them. The
        parameters of those terms stay in the model (and its files) but get no gradient
        in this layer (None).

    Notes
    -----
    Unlike the authors' code, by default the vector message ``M_ij`` is multiplied by the
    cutoff ``phi(d_ij)``: its gates have biases, so without that factor an atom entering
    the cutoff sphere would change the energy by a jump. With it, every message vanishes
    smoothly at ``r_c`` and the energy is continuously differentiable there.
    """

    def __init__(
        self,
        hidden: int,
        num_heads: int,
        num_groups: int,
        update_edges: bool,
        use_group_cg: bool = True,
        zero_vectors_in: bool = False,
        vector_message_cutoff: bool = True,
        edge_update: str = "rejection",
        enhancer: str = "linear",
    ) -> None:
        super().__init__()
        if hidden % num_heads or hidden % num_groups:
            raise ValueError(
                f"hidden={hidden} must be divisible by num_heads={num_heads} and "
                f"num_groups={num_groups}"
            )
        if edge_update not in EDGE_UPDATE_FORMS:
            raise ValueError(f"edge_update={edge_update!r}: expected one of {EDGE_UPDATE_FORMS}")
        if enhancer not in ENHANCER_FORMS:
            raise ValueError(f"enhancer={enhancer!r}: expected one of {ENHANCER_FORMS}")
        self.hidden = hidden
        self.num_heads = num_heads
        self.layernorm = nn.LayerNorm(hidden)
        self.qks_proj = nn.Linear(hidden, 3 * hidden)
        self.dkdv_proj = nn.Linear(hidden, 2 * hidden)
        self.vec_proj = nn.Linear(hidden, 3 * hidden, bias=False)
        self.num_groups = num_groups
        self.vector_message_cutoff = vector_message_cutoff
        self.edge_update_form = edge_update
        self.enhancer_form = enhancer
        # The max enhancer maps one maximum per group of abstract edges, the linear one
        # every channel's invariant.
        self.enhancer = nn.Linear(num_groups if enhancer == "max" else hidden, num_heads)
        self.gate_proj = nn.Linear(hidden, 2 * hidden)
        self.o_proj = nn.Linear(hidden, 3 * hidden)
        self.group_cg = (
            GroupCGTensorProduct(num_groups, hidden // num_groups) if use_group_cg else None
        )
        self.shuffle = (3 * num_groups) // 2
        self.update_edges = update_edges
        self.zero_vectors_in = zero_vectors_in
        if update_edges:
            self.f_proj = nn.Linear(hidden, hidden)
            self.w_center_proj = nn.Linear(hidden, hidden, bias=False)
            self.w_neighbor_proj = nn.Linear(hidden, hidden, bias=False)
        self._compiled_update = None
        self.reset_parameters()

    def compile_update(self, **options: Any) -> None:
        """Compile a run's update (:meth:`_update`) with ``torch.compile`` (dynamic shapes)
        for the frozen-model path, where the runs go through
        :class:`~freecg_md.nn.cpu.layer_runs.RunsInParallel`;
        ``options`` go to ``torch.compile``. Training (checkpointed runs, force loss with
        ``create_graph``) stays eager, since the compiled backward cannot be differentiated
        again."""
        self._compiled_update = torch.compile(self._update, dynamic=True, **options)

    @property
    def returns_edge_update(self) -> bool:
        """Whether :meth:`forward` returns updated edge features ``f_next`` (not None)."""
        return self.update_edges and not self.zero_vectors_in

    def run_update(self) -> Any:
        """:meth:`_update`, compiled if :meth:`compile_update` was called."""
        return self._compiled_update or self._update

    def __getstate__(self) -> dict[str, Any]:
        # A compiled function cannot be copied or pickled; a copy runs eager until compiled.
        state = dict(self.__dict__)
        state["_compiled_update"] = None
        return state

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
        f: list[torch.Tensor],
        runs: list[EdgeRun],
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        """Return the updated node features ``(x + dx, v + dv)`` and the next layer's edge
        features ``f_next = f + df``, None in a layer without edge update (the last; the
        first, whose ``df`` is zero).

        ``x`` (N, F) and ``v`` (N, 8, F) node features; ``runs`` the edges, cut into runs
        of consecutive centre atoms that together cover all atoms (one run: all edges; see
        :mod:`freecg_md.nn.chunks`), and ``f`` the edge features of each run, (E_run, F).
        ``f_next`` comes back the same way. With several runs, each is recomputed in the
        backward pass instead of stored, so no (E, 8, F) tensor, nor the group transform's
        channel pairs, is ever made whole; the result is the same.
        """
        q, nodes = self.node_terms(x, v)
        # The runs' own atoms, split once: a slice per run would give each run's backward a
        # zero gradient of all atoms to fill.
        atoms = [run.n_centers for run in runs]
        parts = [run_chunk(self._update_gathering, nodes, run_q, run_v, run_f, run,
                           alone=len(runs) == 1)
                 for run_q, run_v, run_f, run in zip(q.split(atoms), v.split(atoms), f, runs,
                                                     strict=True)]
        if len(parts) == 1:
            dx, dvec, f_next = parts[0]
            return x + dx, v + dvec, (None if f_next is None else [f_next])
        dx = torch.cat([part[0] for part in parts])
        dvec = torch.cat([part[1] for part in parts])
        f_next = [part[2] for part in parts] if self.returns_edge_update else None
        return x + dx, v + dvec, f_next

    def node_terms(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, NodeTerms]:
        """``(q, nodes)``: the per-atom terms of atoms with features ``x`` (n, F) and ``v``
        (n, 8, F), the queries ``q`` (n, H, F/H) and what the runs read of their
        neighbours (:class:`NodeTerms`)."""
        n_atoms, heads, width = x.shape[0], self.num_heads, self.hidden
        q, k, s = self.qks_proj(self.layernorm(x)).reshape(
            n_atoms, 3, heads, width // heads).unbind(1)
        w_neighbor = self.w_neighbor_proj(v) if self.returns_edge_update else None
        return q, NodeTerms(k, s, v, w_neighbor)

    def _update_gathering(self, nodes: NodeTerms, q: torch.Tensor, v: torch.Tensor,
                          f: torch.Tensor, run: EdgeRun) -> tuple[torch.Tensor, ...]:
        """:meth:`_update` reading the neighbours' rows of ``nodes`` itself."""
        return self._update(q, v, gather_terms(nodes, run), f, run)

    def _update(
        self, q: torch.Tensor, v: torch.Tensor, nb: NodeTerms, f: torch.Tensor, run: EdgeRun
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(dx, dv, f_next)`` of a run of centre atoms from their edges (the module's
        equations).

        Every edge of the run's centre atoms is in ``run`` and no other, so their sums are
        complete and their updates, (n_centers, F) and (n_centers, 8, F), need no other
        run. ``q`` (n_centers, H, D) and ``v`` (n_centers, 8, F) are the run's atoms' rows;
        ``nb`` each edge's row of the neighbours' terms (:func:`gather_terms`); ``f``
        (E_run, F). ``f_next = f + df`` is (E_run, F), or None in a layer without edge
        update.
        """
        width, heads = self.hidden, self.num_heads
        centers, sh, phi, n_centers = run.centers, run.sh, run.phi, run.n_centers
        dk, dv = F.silu(self.dkdv_proj(f)).reshape(-1, 2, heads, width // heads).unbind(1)
        edge_invariant = None
        if self.zero_vectors_in:  # v = 0: <v_j, Y> = 0 and w = 0
            enhance = self.enhancer.bias.expand(centers.shape[0], -1)
        else:
            invariants = dot_components(nb.v, sh)  # <v_j, Y_ij> per channel, (E, F)
            if self.enhancer_form == "max":  # the largest of each group's T invariants
                invariants = invariants.unflatten(-1, (self.num_groups, -1)).amax(-1)
            enhance = self.enhancer(invariants)
            if self.update_edges:
                edge_invariant = edge_update_invariant(
                    gather(self.w_center_proj(v), centers), nb.w_neighbor, sh,
                    self.edge_update_form)
        attention = (gather(q, centers) * nb.k * dk).sum(-1)
        attention = F.silu(attention + enhance) * phi.unsqueeze(-1)
        message = (nb.s * dv * attention.unsqueeze(-1)).reshape(-1, width)
        scalar_sum = scatter_sum(message, centers, n_centers)
        gates = F.silu(self.gate_proj(message))
        if self.vector_message_cutoff:
            gates = gates * phi.unsqueeze(-1)
        gate1, gate2 = gates.split(width, dim=-1)
        vector_message = nb.v * gate1.unsqueeze(1) + gate2.unsqueeze(1) * sh.unsqueeze(-1)
        abstract_edges = scatter_sum(vector_message, centers, n_centers)
        o1, o2, o3 = self.o_proj(scalar_sum).split(width, dim=-1)
        if self.zero_vectors_in:  # u1 = u2 = u3 = 0, so dx = o3 and the node term is 0
            return o3, abstract_edges, None

        u1, u2, u3 = self.vec_proj(v).split(width, dim=-1)
        dx = (u1 * u2).sum(dim=1) * o2 + o3
        node_vectors = u3 * o1.unsqueeze(1)
        if self.group_cg is None:
            dvec = abstract_edges + node_vectors
        else:
            coupled = shuffle_abstract_edges(self.group_cg(abstract_edges, node_vectors),
                                             self.shuffle)
            dvec = coupled + abstract_edges
        f_next = None if edge_invariant is None else torch.addcmul(
            f, F.silu(self.f_proj(f)), edge_invariant)
        return dx, dvec, f_next
