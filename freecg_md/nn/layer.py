"""One FreeCG interaction layer: attention on real edges, CG coupling on abstract edges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn import functional as F

from .chunks import (
    EdgeRun,
    RunPool,
    atom_blocks,
    for_each,
    run_chunk,
    runs_into_sums,
    without_grad,
)
from .fused_run import layer_constants, run_backward, run_forward, runs_fusable
from .group_cg import GroupCGTensorProduct
from .kernels import aggregate_vectors, edge_invariants, edge_messages, group_cg_shuffled
from .ops import gather


class NodeTerms(NamedTuple):
    """Per-atom tensors that a run of centre atoms reads of its neighbours: ``k, s``
    (N, H, F/H), ``v`` (N, 8, F), and the edge update's neighbour projection ``w_neighbor``
    (N, 8, F) or None in a layer without edge update. :func:`gather_terms` gives a run's
    rows of them."""

    k: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    w_neighbor: torch.Tensor | None


def gather_terms(nodes: NodeTerms, run: EdgeRun) -> NodeTerms:
    """A run's rows of every field of ``nodes``, at :func:`neighbor_rows`."""
    rows = neighbor_rows(run)
    return NodeTerms(*(None if t is None else gather(t, rows) for t in nodes))


def neighbor_rows(run: EdgeRun) -> torch.Tensor:
    """The atoms whose rows :func:`gather_terms` takes: one per edge, (E_run,), or, where the
    run lists its distinct neighbours (``run.unique_neighbors``, for the fused kernels), one
    per distinct neighbour, (U,)."""
    return run.neighbors if run.unique_neighbors is None else run.unique_neighbors


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
    vector_message_cutoff, edge_update, enhancer:
        The choices of :class:`~freecg_md.nn.FreeCGConfig` of the same names.
    zero_vectors_in:
        Whether the input vectors ``v`` are always zero (the first layer: vector features
        start at zero). Then the enhancer's invariants, the node term ``B``, the group
        transform and the edge update are exactly zero, and the layer skips them. The
        parameters of those terms stay in the model (and its files) but get no gradient
        in this layer (None, where they got zeros before).

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
        for the frozen-model path, where the runs go through :class:`RunsInParallel`;
        ``options`` go to ``torch.compile``. Training (checkpointed runs, force loss with
        ``create_graph``) stays eager, since the compiled backward cannot be differentiated
        again."""
        self._compiled_update = torch.compile(self._update, dynamic=True, **options)

    @property
    def returns_edge_update(self) -> bool:
        """Whether :meth:`forward` returns updated edge features ``f_next`` (not None)."""
        return self.update_edges and not self.zero_vectors_in

    def run_update(
        self, run: EdgeRun
    ) -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """:meth:`_update` for ``run``: compiled if :meth:`compile_update` was called,
        unless the run is for the fused kernels, which torch.compile does not trace."""
        if run.local_neighbors is not None:
            return self._update
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
        pool: RunPool | None = None,
        keep_graphs: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        """Return the updated node features ``(x + dx, v + dv)`` and the next layer's edge
        features ``f_next = f + df``, None in a layer without edge update (the last; the
        first, whose ``df`` is zero).

        ``x`` (N, F) and ``v`` (N, 8, F) node features; ``runs`` the edges, cut into runs
        of consecutive centre atoms that together cover all atoms (one run: all edges; see
        :mod:`freecg_md.nn.chunks`), and ``f`` the edge features of each run, (E_run, F).
        ``f_next`` comes back the same way. With several runs, each is recomputed in the
        backward pass instead of stored, so no (E, 8, F) tensor, nor the group transform's
        channel pairs, is ever made whole; the result is the same. With a ``pool`` (only
        when no parameter needs a gradient, see :class:`RunsInParallel`) the runs, and the
        per-atom work before and after them, are shared among its threads, forward and
        backward, without recomputation if ``keep_graphs``
        (:func:`freecg_md.nn.chunks.keeps_graphs`).
        """
        if pool is not None and len(runs) > 1:
            x_next, v_next, *f_next = RunsInParallel.apply(
                self, runs, pool, keep_graphs, x, v, *f, *(run.sh for run in runs),
                *(run.phi for run in runs))
            return x_next, v_next, (f_next if self.returns_edge_update else None)
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
        """``(dx, dv, f_next)`` of a run of centre atoms from their edges.

        Every edge of the run's centre atoms is in ``run`` and no other, so their messages
        are complete and their updates, (n_centers, F) and (n_centers, 8, F), need no other
        run. ``q`` (n_centers, H, F/H) and ``v`` (n_centers, 8, F) are the run's atoms' rows;
        ``nb`` the neighbours' rows (:func:`gather_terms`); ``f`` (E_run, F). ``f_next`` is
        (E_run, F), or None in a layer without edge update.
        """
        width = self.hidden
        centers, sh, phi = run.centers, run.sh, run.phi
        n_centers = run.n_centers
        dkdv = F.silu(self.dkdv_proj(f))
        local = run.local_neighbors
        if self.zero_vectors_in:
            enhance = self.enhancer.bias.expand(centers.shape[0], -1)
            rejected = None
        else:
            w_center = self.w_center_proj(v) if self.update_edges else None
            # Attention enhancer: per-channel invariants of the neighbour's abstract edges
            # seen along this real edge, mapped to one bias per head.
            invariants, rejected = edge_invariants(nb.v, w_center, nb.w_neighbor, sh,
                                                   centers, local, self.edge_update_form)
            if self.enhancer_form == "max":  # the largest of each group's T invariants
                invariants = invariants.unflatten(-1, (self.num_groups, -1)).amax(-1)
            enhance = self.enhancer(invariants)
        # No softmax: the weights are gated by SiLU and smoothly cut off.
        message, scalar_sum = edge_messages(q, nb.k, nb.s, dkdv, enhance, phi, centers, local,
                                            n_centers)
        gates = F.silu(self.gate_proj(message))
        abstract_edges = aggregate_vectors(nb.v, gates, sh,
                                           phi if self.vector_message_cutoff else None,
                                           centers, local, n_centers)
        o1, o2, o3 = self.o_proj(scalar_sum).split(width, dim=-1)
        if self.zero_vectors_in:  # u1 = u2 = u3 = 0, so dx = o3 and B = 0
            return o3, abstract_edges, None

        u1, u2, u3 = self.vec_proj(v).split(width, dim=-1)
        dx = (u1 * u2).sum(dim=1) * o2 + o3
        node_vectors = u3 * o1.unsqueeze(1)
        if self.group_cg is None:
            dvec = abstract_edges + node_vectors
        else:
            coupled = group_cg_shuffled(self.group_cg, abstract_edges, node_vectors,
                                        self.shuffle, fused=local is not None)
            dvec = coupled + abstract_edges

        # The edge update df is added here, not by the caller: in the threaded runs the
        # addition (and its gradient) then runs in the run's thread.
        f_next = None if rejected is None else torch.addcmul(f, F.silu(self.f_proj(f)),
                                                               rejected)
        return dx, dvec, f_next


class _RunGraph(NamedTuple):
    """One run evaluated on leaves of its own graph: ``inputs`` (the run's ``q``, ``v``,
    ``f``, ``sh``, ``phi``, then its rows of the neighbours' terms, :func:`gather_terms`)
    and ``outputs``."""

    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]


def _run_graph(layer: FreeCGLayer, nodes: NodeTerms, q: torch.Tensor, v: torch.Tensor,
               f: torch.Tensor, run: EdgeRun) -> _RunGraph:
    with torch.enable_grad():
        own = [t.detach().requires_grad_() for t in (q, v, f, run.sh, run.phi)]
        nb = NodeTerms(*(None if t is None else t.detach().requires_grad_()
                         for t in gather_terms(nodes, run)))
        dx, dvec, f_next = layer.run_update(run)(own[0], own[1], nb, own[2],
                                             run._replace(sh=own[3], phi=own[4]))
    outputs = [dx, dvec] + ([] if f_next is None else [f_next])
    return _RunGraph(own + [t for t in nb if t is not None], outputs)


class RunsInParallel(torch.autograd.Function):
    """A layer shared among threads, with gradients for the inputs only.

    Forward, in three steps that each share their work among the pool's threads: the
    per-atom terms (:meth:`FreeCGLayer.node_terms`) in blocks of atoms
    (:func:`~freecg_md.nn.chunks.atom_blocks`); then whole runs
    (:meth:`FreeCGLayer._update`), each on leaves of a small graph of its own, which add
    their atoms' updates to the features (``x + dx``, ``v + dv``) where they lie. Backward:
    each thread back-propagates its runs through those graphs (kept from the forward pass
    if ``keep_graphs``, else recomputed) and adds the neighbours' gradients into
    per-thread (N, ...) sums with ``index_add_``, so a run costs what its edges cost. (Through
    autograd's own gathers every run would make and add a gradient of every atom, a cost of
    runs x atoms.) Then, block by block, the threads' sums are added up and taken back
    through the per-atom terms to ``x`` and ``v``. Done whole in the calling thread, that
    per-atom work waited on memory once the system's tensors outgrew the caches; in blocks
    each block's terms stay in a core's caches.

    Parameters get no gradient, so :class:`~freecg_md.FreeCG` takes this path only when
    none needs one (inference with ``requires_grad_(False)``, as the calculator and the MD
    potentials hold their models); the backward is not differentiable again. Runs for the
    fused kernels (:func:`~freecg_md.nn.fused_run.runs_fusable`) skip autograd altogether:
    :func:`~freecg_md.nn.fused_run.run_forward` keeps what the backward pass needs instead
    of a graph, and :func:`~freecg_md.nn.fused_run.run_backward` applies the chain rule;
    their kernels read the neighbours' rows of ``k, s, v, w_neighbor`` where they lie and
    add the neighbours' gradients straight into the thread's sums. Each thread takes the
    next run when it finishes one (:func:`~freecg_md.nn.chunks.runs_into_sums`).

    ``apply(layer, runs, pool, keep_graphs, x, v, *f_runs, *sh_runs, *phi_runs)`` returns
    ``(x + dx, v + dv, *f_next_runs)``; ``f_next_runs`` is empty in a layer without edge
    update.
    """

    @staticmethod
    def forward(ctx: Any, layer: FreeCGLayer, runs: list[EdgeRun], pool: RunPool,
                keep_graphs: bool, x: torch.Tensor, v: torch.Tensor,
                *edge_tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_runs = len(runs)
        f, sh, phi = (edge_tensors[i * n_runs:(i + 1) * n_runs] for i in range(3))
        runs = [run._replace(sh=run_sh, phi=run_phi)
                for run, run_sh, run_phi in zip(runs, sh, phi, strict=True)]
        # Function.forward runs without grad; whether a backward can follow is known from
        # the inputs (needs_input_grad), so graphs are only built when one can.
        keep = keep_graphs and any(ctx.needs_input_grad[4:])
        fuse = runs_fusable(layer, runs)
        constants = layer_constants(layer) if fuse else None
        blocks = atom_blocks(x.shape[0], pool.threads, device=x.device)
        q, nodes = _node_terms_in_blocks(layer, x, v, blocks, pool)
        atoms = [run.n_centers for run in runs]
        q_runs, v_runs = q.split(atoms), v.split(atoms)
        x_next, v_next = torch.empty_like(x), torch.empty_like(v)

        def evaluate(index: int) -> Any:
            run = runs[index]
            if fuse:
                outputs, kept = run_forward(layer, constants, q_runs[index], v_runs[index],
                                            nodes, f[index], run, save=keep)
            elif keep:
                kept = _run_graph(layer, nodes, q_runs[index], v_runs[index], f[index], run)
                outputs = [t.detach() for t in kept.outputs]
            else:
                kept = None
                with torch.no_grad():  # grad mode is per thread: the pool's is on
                    outputs = layer.run_update(run)(q_runs[index], v_runs[index],
                                                    gather_terms(nodes, run), f[index], run)
            rows = slice(run.first_atom, run.first_atom + run.n_centers)
            with torch.no_grad():
                torch.add(x[rows], outputs[0], out=x_next[rows])
                if layer.zero_vectors_in:  # v = 0
                    v_next[rows] = outputs[1]
                else:
                    torch.add(v[rows], outputs[1], out=v_next[rows])
            return kept, (outputs[2] if layer.returns_edge_update else None)

        parts = list(pool.map(evaluate, range(n_runs)))
        ctx.layer, ctx.runs, ctx.pool, ctx.fuse, ctx.constants = layer, runs, pool, fuse, constants
        ctx.blocks = blocks
        ctx.save_for_backward(x, q, *nodes[:3], nodes.w_neighbor, *f, *sh, *phi)
        # What the backward pass reuses of each run: fused_run's saved tensors, or the
        # run's graph; None where it recomputes them.
        ctx.graphs = [kept for kept, _ in parts] if keep else None
        f_next = [part[1] for part in parts] if layer.returns_edge_update else []
        return (x_next, v_next, *f_next)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_x_next: torch.Tensor, grad_v_next: torch.Tensor,
                 *grad_f_next: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        layer, runs, pool, graphs = ctx.layer, ctx.runs, ctx.pool, ctx.graphs
        ctx.graphs = None
        x, q, k, s, v, w_neighbor, *edge_tensors = ctx.saved_tensors
        n_runs = len(runs)
        f, _, _ = (edge_tensors[i * n_runs:(i + 1) * n_runs] for i in range(3))
        nodes = NodeTerms(k, s, v, w_neighbor)
        atoms = [run.n_centers for run in runs]
        q_runs, v_runs = q.split(atoms), v.split(atoms)
        # x_next = x + dx and v_next = v + dv: dx and dv get the features' gradients.
        grad_dx_runs, grad_dvec_runs = grad_x_next.split(atoms), grad_v_next.split(atoms)
        grad_q = torch.empty_like(q)

        def fused_grads(index: int, sums: list[torch.Tensor | None]
                        ) -> list[torch.Tensor | None]:
            run = runs[index]
            saved = graphs[index] if graphs is not None else run_forward(
                layer, ctx.constants, q_runs[index], v_runs[index], nodes, f[index], run,
                save=True)[1]
            return run_backward(layer, ctx.constants, saved, grad_dx_runs[index],
                                grad_dvec_runs[index],
                                grad_f_next[index] if layer.returns_edge_update else None,
                                NodeTerms(*sums))

        own = {}

        def backward_run(index: int, sums: list[torch.Tensor | None]) -> None:
            run = runs[index]
            if ctx.fuse:
                grads = fused_grads(index, sums)
            else:
                graph = graphs[index] if graphs is not None else _run_graph(
                    layer, nodes, q_runs[index], v_runs[index], f[index], run)
                grads_in = [grad_dx_runs[index], grad_dvec_runs[index]]
                grads_in += (grad_f_next[index:index + 1] if layer.returns_edge_update
                             else [])
                grads = torch.autograd.grad(graph.outputs, graph.inputs, grads_in,
                                            allow_unused=True)
                grads = [torch.zeros_like(t) if g is None else g
                         for g, t in zip(grads, graph.inputs, strict=True)]
                for total, grad in zip([t for t in sums if t is not None], grads[5:],
                                       strict=True):
                    total.index_add_(0, neighbor_rows(run), grad)
            own[index] = grads[2:5]
            rows = slice(run.first_atom, run.first_atom + run.n_centers)
            grad_q[rows] = grads[0]
            # The run's own atoms' rows of v (no gradient where the layer ignores v).
            if grads[1] is not None:
                sums[2][rows] += grads[1]

        thread_sums = runs_into_sums(
            pool, n_runs, lambda: [None if t is None else torch.zeros_like(t) for t in nodes],
            backward_run)
        needs_x, needs_v = ctx.needs_input_grad[4:6]
        grad_x = torch.empty_like(x) if needs_x else None
        grad_v = torch.empty_like(v) if needs_v else None
        for_each(pool, without_grad(lambda block: _node_terms_backward(
            layer, x, block, grad_q, thread_sums, grad_x_next, grad_v_next, grad_x,
            grad_v)), ctx.blocks)
        edge_grads = [own[i][j] for j in range(3) for i in range(n_runs)]
        return (None, None, None, None, grad_x, grad_v, *edge_grads)


def _node_terms_in_blocks(layer: FreeCGLayer, x: torch.Tensor, v: torch.Tensor,
                          blocks: list[slice], pool: RunPool
                          ) -> tuple[torch.Tensor, NodeTerms]:
    """:meth:`FreeCGLayer.node_terms` of all atoms, block by block among the pool's
    threads, each term contiguous (the kernels read them as they lie)."""
    heads, width = layer.num_heads, layer.hidden
    q, k, s = (x.new_empty(x.shape[0], heads, width // heads) for _ in range(3))
    w_neighbor = torch.empty_like(v) if layer.returns_edge_update else None

    def terms(block: slice) -> None:
        block_q, block_nodes = layer.node_terms(x[block], v[block])
        for whole, part in zip((q, k, s, w_neighbor), (block_q, *block_nodes[:2],
                                                        block_nodes.w_neighbor), strict=True):
            if whole is not None:
                whole[block] = part

    for_each(pool, without_grad(terms), blocks)
    return q, NodeTerms(k, s, v, w_neighbor)


def _node_terms_backward(layer: FreeCGLayer, x: torch.Tensor, block: slice, grad_q: torch.Tensor,
                         thread_sums: list[list[torch.Tensor | None]],
                         grad_x_next: torch.Tensor, grad_v_next: torch.Tensor,
                         grad_x: torch.Tensor | None, grad_v: torch.Tensor | None) -> None:
    """Write a block's rows of ``grad_x`` and ``grad_v`` (either None where not needed):
    the threads' sums of the neighbours' gradients of ``k, s, v, w_neighbor`` added up and
    taken back through :meth:`FreeCGLayer.node_terms`, plus ``x_next``'s and ``v_next``'s
    gradients (the residual connections)."""
    def summed(field: int) -> torch.Tensor | None:
        if thread_sums[0][field] is None:
            return None
        total = thread_sums[0][field][block]
        for thread in thread_sums[1:]:
            total = total + thread[field][block]
        return total

    grad_k, grad_s, grad_v_read, grad_w_neighbor = (summed(field) for field in range(4))
    if grad_x is not None:
        n_atoms = grad_k.shape[0]
        # node_terms: [q | k | s] = layernorm(x) W^T + b, viewed as (n, 3, H, F/H).
        grad_qks = torch.cat([grad_q[block].reshape(n_atoms, -1),
                              grad_k.reshape(n_atoms, -1), grad_s.reshape(n_atoms, -1)], 1)
        grad_normed = grad_qks.mm(layer.qks_proj.weight)
        norm = layer.layernorm
        rows = x[block]
        _, mean, rstd = torch.native_layer_norm(rows, norm.normalized_shape, norm.weight,
                                                norm.bias, norm.eps)
        grad_rows = torch.ops.aten.native_layer_norm_backward(
            grad_normed, rows, norm.normalized_shape, mean, rstd, norm.weight, norm.bias,
            [True, False, False])[0]
        torch.add(grad_rows, grad_x_next[block], out=grad_x[block])
    if grad_v is not None:
        total = grad_v_next[block] + grad_v_read
        if grad_w_neighbor is not None:
            total += torch.matmul(grad_w_neighbor, layer.w_neighbor_proj.weight)
        grad_v[block] = total
