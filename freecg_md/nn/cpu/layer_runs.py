"""A frozen model's layer on a CPU: its runs of edges shared among threads, with the fused
kernels where they apply.

:func:`layer_in_runs` computes what :meth:`FreeCGLayer.forward
<freecg_md.nn.layer.FreeCGLayer.forward>` computes, with gradients for the layer's inputs
only (the calculator's and the MD engines' frozen models), through
:class:`RunsInParallel`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch.autograd.function import once_differentiable

from ..layer import NodeTerms, gather_terms
from ..precision import matmul_precision
from .fused_run import layer_constants, run_backward, run_forward, runs_fusable
from .threads import RunPool, atom_blocks, for_each, runs_into_sums, without_grad

if TYPE_CHECKING:
    from ..chunks import EdgeRun
    from ..layer import FreeCGLayer

__all__ = ["RunsInParallel", "layer_in_runs"]


def layer_in_runs(layer: FreeCGLayer, x: torch.Tensor, v: torch.Tensor, f: list[torch.Tensor],
                  runs: list[EdgeRun], pool: RunPool, keep_graphs: bool = True,
                  precision: str = "float32"
                  ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
    """``layer(x, v, f, runs)`` through :class:`RunsInParallel`: the runs, and the per-atom
    work before and after them, shared among ``pool``'s threads, forward and backward,
    without recomputation if ``keep_graphs`` (:func:`freecg_md.nn.chunks.keeps_graphs`).
    Runs prepared for the kernels (:func:`~freecg_md.nn.chunks.for_kernels`)
    go through them (:mod:`~freecg_md.nn.cpu.fused_run`). ``precision``: the runs' matrix
    products, forward and backward (:mod:`~freecg_md.nn.precision`). No parameter may
    need a gradient."""
    x_next, v_next, *f_next = RunsInParallel.apply(
        layer, runs, pool, keep_graphs, precision, x, v, *f, *(run.sh for run in runs),
        *(run.phi for run in runs))
    return x_next, v_next, (f_next if layer.returns_edge_update else None)


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
        dx, dvec, f_next = layer.run_update()(own[0], own[1], nb, own[2],
                                             run._replace(sh=own[3], phi=own[4]))
    outputs = [dx, dvec] + ([] if f_next is None else [f_next])
    return _RunGraph(own + [t for t in nb if t is not None], outputs)


class RunsInParallel(torch.autograd.Function):
    """A layer shared among threads, with gradients for the inputs only.

    Forward, in three steps that each share their work among the pool's threads: the
    per-atom terms (:meth:`FreeCGLayer.node_terms`) in blocks of atoms
    (:func:`~freecg_md.nn.cpu.threads.atom_blocks`); then whole runs
    (``FreeCGLayer._update``), each on leaves of a small graph of its own, which add
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
    fused kernels (:func:`~freecg_md.nn.cpu.fused_run.runs_fusable`) skip autograd altogether:
    :func:`~freecg_md.nn.cpu.fused_run.run_forward` keeps what the backward pass needs instead
    of a graph, and :func:`~freecg_md.nn.cpu.fused_run.run_backward` applies the chain rule;
    their kernels read the neighbours' rows of ``k, s, v, w_neighbor`` where they lie and
    add the neighbours' gradients straight into the thread's sums. Each thread takes the
    next run when it finishes one (:func:`~freecg_md.nn.cpu.threads.runs_into_sums`).

    The runs' matrix products (the edge projections and the run's output projection),
    forward and backward, follow ``precision``
    (:func:`~freecg_md.nn.precision.matmul_precision`); the per-atom terms' stay float32.

    ``apply(layer, runs, pool, keep_graphs, precision, x, v, *f_runs, *sh_runs, *phi_runs)``
    returns ``(x + dx, v + dv, *f_next_runs)``; ``f_next_runs`` is empty in a layer without
    edge update.
    """

    @staticmethod
    def forward(ctx: Any, layer: FreeCGLayer, runs: list[EdgeRun], pool: RunPool,
                keep_graphs: bool, precision: str, x: torch.Tensor, v: torch.Tensor,
                *edge_tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        n_runs = len(runs)
        f, sh, phi = (edge_tensors[i * n_runs:(i + 1) * n_runs] for i in range(3))
        runs = [run._replace(sh=run_sh, phi=run_phi)
                for run, run_sh, run_phi in zip(runs, sh, phi, strict=True)]
        # Function.forward runs without grad; whether a backward can follow is known from
        # the inputs (needs_input_grad), so graphs are only built when one can.
        keep = keep_graphs and any(ctx.needs_input_grad[5:])
        fuse = runs_fusable(layer, runs)
        constants = layer_constants(layer) if fuse else None
        blocks = atom_blocks(x.shape[0], pool.threads, device=x.device, width=x.shape[1])
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
                    outputs = layer.run_update()(q_runs[index], v_runs[index],
                                                    gather_terms(nodes, run), f[index], run)
            rows = slice(run.first_atom, run.first_atom + run.n_centers)
            with torch.no_grad():
                torch.add(x[rows], outputs[0], out=x_next[rows])
                if layer.zero_vectors_in:  # v = 0
                    v_next[rows] = outputs[1]
                else:
                    torch.add(v[rows], outputs[1], out=v_next[rows])
            return kept, (outputs[2] if layer.returns_edge_update else None)

        # The backend setting is process-wide: it changes between the phases, while no
        # thread of the pool computes, never during one.
        with matmul_precision(precision, x.device):
            parts = list(pool.map(evaluate, range(n_runs)))
        ctx.precision = precision
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
                    total.index_add_(0, run.neighbors, grad)
            own[index] = grads[2:5]
            rows = slice(run.first_atom, run.first_atom + run.n_centers)
            grad_q[rows] = grads[0]
            # The run's own atoms' rows of v (no gradient where the layer ignores v).
            if grads[1] is not None:
                sums[2][rows] += grads[1]

        with matmul_precision(ctx.precision, x.device):
            thread_sums = runs_into_sums(
                pool, n_runs,
                lambda: [None if t is None else torch.zeros_like(t) for t in nodes],
                backward_run)
        needs_x, needs_v = ctx.needs_input_grad[5:7]
        grad_x = torch.empty_like(x) if needs_x else None
        grad_v = torch.empty_like(v) if needs_v else None
        for_each(pool, without_grad(lambda block: _node_terms_backward(
            layer, x, block, grad_q, thread_sums, grad_x_next, grad_v_next, grad_x,
            grad_v)), ctx.blocks)
        edge_grads = [own[i][j] for j in range(3) for i in range(n_runs)]
        return (None, None, None, None, None, grad_x, grad_v, *edge_grads)


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
