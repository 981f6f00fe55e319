"""A frozen model's embeddings evaluated run by run in the thread pool, backward written out.

:func:`~freecg_md.nn.embedding.NeighborEmbedding` and
:class:`~freecg_md.nn.embedding.EdgeEmbedding` on a whole pass are a handful of (E, F)
element-wise operations, gathers and scatters in the calling thread, while the run
threads wait.
:class:`EmbeddingInRuns` evaluates them on the runs of edges
(:mod:`~freecg_md.nn.chunks`), the runs shared among the pool's threads, forward and
backward, as :class:`~freecg_md.nn.cpu.layer_runs.RunsInParallel` does for the layers. Each run
evaluates its own radial basis. Only the gradients of the distances and the cutoff (which
depend on the positions) are given: the weights get none, so it is for models whose
parameters need no gradient. Where a pass is too large to keep its runs' graphs
(:func:`~freecg_md.nn.chunks.keeps_graphs`), the backward pass recomputes the runs' (E, F)
linear maps instead of keeping them, so that what stays between the passes is per atom.

Notation, per run (C centre atoms, E edges; ``T1``, ``T2`` the element tables)::

    w = (rbf W_d^T + b_d) phi              S_i = sum_j T2[z_j] w_ij          (E, F), (C, F)
    x = [T1[z] S] W_c^T + b_c              (N, F), all runs' S at once
    p = rbf W_e^T + b_e                    f_ij = (x_i + x_j) p_ij           (E, F)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.autograd.function import once_differentiable

from .threads import RunPool, runs_into_sums, without_grad

if TYPE_CHECKING:
    from ..chunks import EdgeRun
    from ..embedding import EdgeEmbedding, NeighborEmbedding
    from ..radial import ExpNormalBasis

__all__ = ["EmbeddingInRuns", "embed_in_runs"]


def embed_in_runs(neighbor: NeighborEmbedding, edge: EdgeEmbedding, basis: ExpNormalBasis,
                  species: torch.Tensor, runs: list[EdgeRun], pool: RunPool, keep: bool
                  ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``(x, f)``: node features (N, F) and each run's edge features (E_run, F), as
    ``edge(x, centers, neighbors, rbf)`` with ``x = neighbor(species, ...)`` and ``rbf =
    basis(distances)`` on the whole pass give them (cut at the runs' edges).

    ``species`` (N,) species indices; ``runs`` cover all atoms and edges, in order, with
    their distances and cutoff ``phi``; ``keep`` whether the runs' (E, F) maps are kept for
    the backward pass (else recomputed there).
    """
    x, *f = EmbeddingInRuns.apply(neighbor, edge, basis, species, runs, pool, keep,
                                  *(run.distances for run in runs), *(run.phi for run in runs))
    return x, f


def _weights(layer: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor]:
    return layer.weight.detach(), layer.bias.detach()


class EmbeddingInRuns(torch.autograd.Function):
    """``apply(neighbor, edge, basis, species, runs, pool, keep, *distance_runs,
    *phi_runs)`` returns ``(x, *f_runs)``; see the module's notation. Gradients for
    ``distance_runs`` (through the radial basis) and ``phi_runs`` only; the backward pass
    is not differentiable again."""

    @staticmethod
    def forward(ctx: Any, neighbor: NeighborEmbedding, edge: EdgeEmbedding,
                basis: ExpNormalBasis, species: torch.Tensor, runs: list[EdgeRun],
                pool: RunPool, keep: bool, *distances_phi: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        n_runs = len(runs)
        distances, phi = distances_phi[:n_runs], distances_phi[n_runs:]
        table = neighbor.neighbor_embedding.weight.detach()
        w_d, b_d = _weights(neighbor.distance_proj)
        w_e, b_e = _weights(edge.edge_proj)
        centers = [run.centers + run.first_atom for run in runs]

        def neighbor_sums(index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            run = runs[index]
            rbf = basis(distances[index])
            pre_w = torch.addmm(b_d, rbf, w_d.t())
            elements = table.index_select(0, species.index_select(0, run.neighbors))
            messages = elements * pre_w * phi[index].unsqueeze(-1)
            summed = messages.new_zeros(run.n_centers, messages.shape[1])
            return rbf, pre_w, summed.index_add_(0, run.centers, messages)

        def edge_features(index: int) -> tuple[torch.Tensor, torch.Tensor]:
            p = torch.addmm(b_e, first[index][0], w_e.t())
            pair = x.index_select(0, centers[index]) + x.index_select(0, runs[index].neighbors)
            return p, pair * p

        with torch.no_grad():
            first = list(pool.map(without_grad(neighbor_sums), range(n_runs)))
            x = neighbor.combine_sum(species, torch.cat([summed for _, _, summed in first]))
            second = list(pool.map(without_grad(edge_features), range(n_runs)))
        ctx.neighbor, ctx.edge, ctx.basis = neighbor, edge, basis
        ctx.runs, ctx.pool, ctx.centers, ctx.keep = runs, pool, centers, keep
        kept = [t for pair in zip(first, second, strict=True) for t in (pair[0][1], pair[1][0])]
        ctx.save_for_backward(species, x, *distances, *phi, *(kept if keep else []))
        return (x, *(f for _, f in second))

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_x: torch.Tensor | None,
                 *grad_f: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        runs, pool, centers = ctx.runs, ctx.pool, ctx.centers
        n_runs = len(runs)
        species, x, *saved = ctx.saved_tensors
        distances, phi = saved[:n_runs], saved[n_runs:2 * n_runs]
        kept = saved[2 * n_runs:]
        table = ctx.neighbor.neighbor_embedding.weight.detach()
        w_d, b_d = _weights(ctx.neighbor.distance_proj)
        w_e, b_e = _weights(ctx.edge.edge_proj)
        width = x.shape[1]
        # Per run: the basis, its derivative, and the gradient of the basis so far.
        rbf: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_runs
        grad_rbf: list[torch.Tensor | None] = [None] * n_runs

        def edge_backward(index: int, sums: list[torch.Tensor]) -> None:
            rbf[index] = ctx.basis.with_derivative(distances[index])
            grad = grad_f[index]
            if grad is None:
                grad_rbf[index] = torch.zeros_like(rbf[index][0])
                return
            run = runs[index]
            p = (kept[2 * index + 1] if ctx.keep
                 else torch.addmm(b_e, rbf[index][0], w_e.t()))
            grad_pair = grad * p
            sums[0].index_add_(0, centers[index], grad_pair)
            sums[0].index_add_(0, run.neighbors, grad_pair)
            pair = x.index_select(0, centers[index]) + x.index_select(0, run.neighbors)
            grad_rbf[index] = (grad * pair).mm(w_e)

        def neighbor_backward(index: int) -> tuple[torch.Tensor, torch.Tensor]:
            run = runs[index]
            values, slope = rbf[index]
            pre_w = kept[2 * index] if ctx.keep else torch.addmm(b_d, values, w_d.t())
            elements = table.index_select(0, species.index_select(0, run.neighbors))
            grad_w = grad_summed.index_select(0, centers[index]) * elements
            grad_basis = grad_rbf[index] + (grad_w * phi[index].unsqueeze(-1)).mm(w_d)
            rbf[index] = None
            return (grad_basis * slope).sum(dim=-1), (grad_w * pre_w).sum(dim=-1)

        with torch.no_grad():
            thread_sums = runs_into_sums(pool, n_runs, lambda: [torch.zeros_like(x)],
                                         without_grad(edge_backward))
            grad_x_total = grad_x.clone() if grad_x is not None else torch.zeros_like(x)
            for (sums,) in thread_sums:
                grad_x_total += sums
            # x = [T1[z] S] W_c^T + b_c: S's gradient is grad_x times W_c's second half.
            grad_summed = grad_x_total.mm(ctx.neighbor.combine.weight.detach()[:, width:])
            grads = list(pool.map(without_grad(neighbor_backward), range(n_runs)))
        return (None,) * 7 + tuple(d for d, _ in grads) + tuple(g for _, g in grads)
