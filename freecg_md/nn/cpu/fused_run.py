"""A layer's update of one run of edges through the fused kernels, backward pass written out.

For frozen models on a CPU, :class:`~freecg_md.nn.cpu.layer_runs.RunsInParallel` evaluates each run
of edges with :func:`run_forward` and back-propagates it with :func:`run_backward`, instead
of recording the run with autograd and calling ``torch.autograd.grad`` on it. The
arithmetic is the same as :meth:`FreeCGLayer._update <freecg_md.nn.layer.FreeCGLayer>`
through the kernels of :mod:`~freecg_md.nn.cpu.kernels`; what goes is autograd's bookkeeping
per operation and per run (graph nodes, leaf tensors, zero gradients for unused inputs),
which cost a frozen chignolin call more than the arithmetic it wrapped on the small models.
The weights get no gradient, and the backward pass is not differentiable again.

Notation of the derivatives (per run; C centre atoms, E edges, U distinct neighbours)::

    P = f W_kv^T              dkdv = silu(P + b)                  (E, 2F)
    dot, rej = INV(v_j, W_c v_i, W_n v_j, Y)                     (E, F) each
    m, S = MSG(q, k_j, s_j, dkdv, dot W_e^T + b_e, phi)           (E, F), (C, F)
    Q = m W_g^T               A = AGG(v_j, silu(Q + b_g), Y, phi) (E, 2F), (C, 8, F)
    [o1 o2 o3] = S W_o^T + b_o                [u1 u2 u3] = v W_v^T
    dx = (u1 . u2) o2 + o3    dv = GCG(A, u3 o1) + A    f_next = f + silu(f W_f^T + b_f) rej

and the backward pass applies the chain rule to these lines in reverse order: the linear
maps' input gradients are ``grad @ W``, and the kernels supply their own. The SiLUs are
the kernels' too: the message and aggregation kernels take ``P`` and ``Q`` and apply SiLU
to an edge's row as they read it (and give the gradients of ``P`` and ``Q``), so neither
``dkdv`` nor the gates, nor their gradients, go through memory; the edge update runs with
its SiLU in one pass each way (``edge_update_forward``/``_backward``). Their exponential is
a polynomial, where torch's SiLU spends most of its time in a libm-accurate one, a
visible share of a call at the paper's size. The biases
before those SiLUs are added by the kernels too: torch's ``addmm`` first copies the bias
into every row of its output, an extra pass over (E, 3F) and (E, 2F) per run.

In the first layer the input vectors are zero, so the gates' first half ``g1`` (which
multiplies ``v_j``) is not computed: ``Q`` is ``m`` times the second half of ``W_g`` only,
and the aggregation kernel reads no ``v``.

The kernels read the neighbours' rows straight from the layer's per-atom tensors (``k, s,
v, w_neighbor``, N rows) at the edges' atom indices, and add the neighbours' gradients
into the calling thread's per-atom sums: no run gathers its neighbours' rows, nor
scatters their gradients back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch.nn import functional as F

from . import kernels
from .kernels import FUSED_GROUP_SIZES, group_cg_kernel_inputs

if TYPE_CHECKING:
    from ..chunks import EdgeRun
    from ..layer import FreeCGLayer, NodeTerms

__all__ = ["GroupConstants", "LayerConstants", "RunSaved", "layer_constants", "run_backward",
           "run_forward", "runs_fusable"]


class GroupConstants(NamedTuple):
    """A layer's group CG transform in the kernel's form, prepared once per layer call:
    ``weight`` (G, 4, T, T, T), the Wigner 3j blocks of the four paths (float64), the two
    output norms and the channel shuffle."""

    weight: torch.Tensor
    cg: list[torch.Tensor]
    norms: tuple[float, float]
    shift: int


class LayerConstants(NamedTuple):
    """What every run of a layer call shares: the group transform's :class:`GroupConstants`
    (None without one), and the weights (2F or 3F, F) and biases of the linear maps that read
    the edge features ``f``: ``dkdv_proj``, stacked with ``f_proj`` where the layer makes an
    edge update, so that one matrix product serves both, forward and backward. The biases
    are apart (``dkdv_bias`` (2F,), ``f_bias`` (F,) or None): the kernels add them."""

    group: GroupConstants | None
    edge_weight: torch.Tensor
    dkdv_bias: torch.Tensor
    f_bias: torch.Tensor | None


class RunSaved(NamedTuple):
    """What :func:`run_backward` needs of a run's forward pass (None where the layer has no
    such term)."""

    q: torch.Tensor
    nodes: NodeTerms
    run: EdgeRun
    pre_dkdv: torch.Tensor
    w_center: torch.Tensor
    enhance: torch.Tensor
    pre_gates: torch.Tensor
    o: torch.Tensor
    u: torch.Tensor | None
    uu: torch.Tensor | None
    abstract_edges: torch.Tensor | None
    node_vectors: torch.Tensor | None
    rejected: torch.Tensor | None
    pre_f: torch.Tensor | None


def runs_fusable(layer: FreeCGLayer, runs: list[EdgeRun]) -> bool:
    """Whether :func:`run_forward` can evaluate ``runs`` of ``layer``: the runs are prepared
    for the kernels (:func:`~freecg_md.nn.chunks.for_kernels`) and the group
    transform, if any, has a group size the kernel is compiled for."""
    return (all(run.neighbor_order is not None for run in runs)
            and (layer.group_cg is None or layer.group_cg.group_size in FUSED_GROUP_SIZES))


def layer_constants(layer: FreeCGLayer) -> LayerConstants:
    """``layer``'s :class:`LayerConstants`, made from its current weights."""
    group = None
    if layer.group_cg is not None:
        group = GroupConstants(*group_cg_kernel_inputs(layer.group_cg), layer.shuffle)
    maps = [layer.dkdv_proj] + ([layer.f_proj] if layer.returns_edge_update else [])
    f_bias = layer.f_proj.bias.detach() if layer.returns_edge_update else None
    return LayerConstants(group, torch.cat([m.weight.detach() for m in maps]),
                          layer.dkdv_proj.bias.detach(), f_bias)


def run_forward(layer: FreeCGLayer, constants: LayerConstants, q: torch.Tensor,
                v: torch.Tensor, nodes: NodeTerms, f: torch.Tensor, run: EdgeRun, save: bool
                ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
                           RunSaved | None]:
    """``((dx, dv, f_next), saved)`` of a run, as :meth:`FreeCGLayer._update` returns them.

    ``q`` (C, H, F/H) and ``v`` (C, 8, F) are the run's atoms' rows, ``nodes`` the layer's
    per-atom terms of all atoms (contiguous; the kernels read the rows of ``run.neighbors``),
    ``f`` (E, F). ``saved`` is what :func:`run_backward` needs, or None unless ``save``.
    Runs without autograd.
    """
    ops = kernels.load_kernels()
    width = layer.hidden
    centers, neighbors, sh, phi, n_centers = (run.centers, run.neighbors, run.sh, run.phi,
                                              run.n_centers)
    with torch.no_grad():
        q = q.contiguous()
        group = constants.group
        pre_edge = f.mm(constants.edge_weight.t())  # the kernels add the biases
        pre_dkdv = pre_edge[:, :2 * width]
        empty = v.new_empty(0, 8, width)
        rejected = None
        if layer.zero_vectors_in:
            w_center = empty
            enhance = layer.enhancer.bias.expand(centers.shape[0], -1).contiguous()
        else:
            w_center = (F.linear(v, layer.w_center_proj.weight) if layer.update_edges
                        else empty)
            w_neighbor = empty if nodes.w_neighbor is None else nodes.w_neighbor
            dot, rejected = ops.invariants_forward(nodes.v, w_center, w_neighbor, sh, centers,
                                                   neighbors)
            enhance = F.linear(dot, layer.enhancer.weight, layer.enhancer.bias)
            if not layer.update_edges:
                rejected = None
        # The message and aggregation kernels apply the SiLU of dkdv and of the gates.
        message, summed = ops.message_forward(q, nodes.k, nodes.s, pre_dkdv, constants.dkdv_bias,
                                              enhance, phi, centers, neighbors, n_centers,
                                              False)
        gate_weight, gate_bias, gated_v = _gates(layer, nodes.v)
        pre_gates = message.mm(gate_weight.t())
        abstract_edges = ops.aggregate_forward(gated_v, pre_gates, gate_bias, sh, phi, centers,
                                               neighbors, n_centers, False)
        o = F.linear(summed, layer.o_proj.weight, layer.o_proj.bias)
        o1, o2, o3 = o.split(width, dim=-1)
        u = uu = node_vectors = pre_f = None
        if layer.zero_vectors_in:  # u = 0: dx = o3, no node term, no group transform
            outputs = (o3, abstract_edges, None)
        else:
            u = F.linear(v, layer.vec_proj.weight)
            u1, u2, u3 = u.split(width, dim=-1)
            uu = (u1 * u2).sum(dim=1)
            dx = torch.addcmul(o3, uu, o2)
            node_vectors = u3 * o1.unsqueeze(1)
            if group is None:
                dvec = abstract_edges + node_vectors
            else:
                dvec = ops.group_cg_forward(abstract_edges, node_vectors, group.weight,
                                            group.cg, *group.norms, group.shift)
                dvec += abstract_edges
            f_next = None
            if rejected is not None:
                pre_f = pre_edge[:, 2 * width:]
                f_next = ops.edge_update_forward(f, pre_f, constants.f_bias, rejected)
            outputs = (dx, dvec, f_next)
    if not save:
        return outputs, None
    return outputs, RunSaved(q, nodes, run, pre_dkdv, w_center, enhance, pre_gates, o, u, uu,
                             abstract_edges, node_vectors, rejected, pre_f)


def _gates(layer: FreeCGLayer, v: torch.Tensor
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gate map's weight and bias, and the v the aggregation kernels read: all of them,
    or where the layer's input vectors are zero, the rows and bias of the second half
    ``g2`` only, and no rows of v (the kernels' mode for ``v = 0``: ``g1`` multiplies
    zeros)."""
    if layer.zero_vectors_in:
        width = layer.hidden
        return (layer.gate_proj.weight[width:], layer.gate_proj.bias[width:],
                v.new_empty(0, 8, width))
    return layer.gate_proj.weight, layer.gate_proj.bias, v


def run_backward(layer: FreeCGLayer, constants: LayerConstants, saved: RunSaved,
                 grad_dx: torch.Tensor, grad_dvec: torch.Tensor,
                 grad_f_next: torch.Tensor | None, sums: NodeTerms
                 ) -> list[torch.Tensor | None]:
    """Gradients of a run's inputs from those of its outputs ``(dx, dv, f_next)``.

    Returns ``[q, v, f, sh, phi]``, the run's own rows (``v`` None in a layer whose input
    vectors are zero, which does not read them). The gradients of the per-atom terms that
    the run reads of its neighbours are added into ``sums`` (tensors like the fields of
    ``saved.nodes``; the caller zeroes them, once for all its runs).
    """
    ops = kernels.load_kernels()
    width = layer.hidden
    s = saved
    run, nb = s.run, s.nodes
    centers, neighbors, sh, phi = run.centers, run.neighbors, run.sh, run.phi
    group = constants.group
    with torch.no_grad():
        grad_dx, grad_dvec = grad_dx.contiguous(), grad_dvec.contiguous()
        if layer.zero_vectors_in:
            grad_v = None
            grad_summed = grad_dx.mm(layer.o_proj.weight[2 * width:])
            grad_abstract = grad_dvec
        else:
            o1, o2, _ = s.o.split(width, dim=-1)
            u1, u2, u3 = s.u.split(width, dim=-1)
            if group is None:
                grad_abstract, grad_node = grad_dvec, grad_dvec
            else:
                grad_abstract, grad_node = ops.group_cg_backward(
                    s.abstract_edges, s.node_vectors, group.weight, group.cg, *group.norms,
                    group.shift, grad_dvec)
                grad_abstract += grad_dvec
            grad_uu = (grad_dx * o2).unsqueeze(1)
            grad_u = torch.cat([u2 * grad_uu, u1 * grad_uu, grad_node * o1.unsqueeze(1)], -1)
            grad_v = torch.matmul(grad_u, layer.vec_proj.weight)
            grad_o = torch.cat([(grad_node * u3).sum(dim=1), grad_dx * s.uu, grad_dx], -1)
            grad_summed = grad_o.mm(layer.o_proj.weight)
        # The kernels give the gradients of the SiLUs' inputs (pre_gates, pre_dkdv).
        gate_weight, gate_bias, gated_v = _gates(layer, nb.v)
        _, grad_pre_gates, grad_sh, grad_phi = ops.aggregate_backward(
            gated_v, s.pre_gates, gate_bias, sh, phi, centers, neighbors, grad_abstract, False,
            gated_v if layer.zero_vectors_in else sums.v)
        grad_message = grad_pre_gates.mm(gate_weight)
        # The gradient of [dkdv_proj | f_proj](f), (E, 2F or 3F), for one product with W.
        grad_pre_edge = grad_pre_gates.new_empty(grad_pre_gates.shape[0],
                                                 constants.edge_weight.shape[0])
        grad_q, _, _, _, grad_enhance, grad_phi_message = ops.message_backward(
            s.q, nb.k, nb.s, s.pre_dkdv, constants.dkdv_bias, s.enhance, phi, centers,
            neighbors, grad_message, grad_summed, False, grad_pre_edge[:, :2 * width],
            sums.k, sums.s)
        grad_phi += grad_phi_message
        if not layer.zero_vectors_in:
            grad_dot = grad_enhance.mm(layer.enhancer.weight)
            grad_rejected = grad_dot.new_empty(0, width)
            if s.rejected is not None:
                grad_f_next = grad_f_next.contiguous()
                grad_rejected = ops.edge_update_backward(grad_f_next, s.pre_f, constants.f_bias,
                                                         s.rejected, grad_pre_edge[:, 2 * width:])
            empty = nb.v.new_empty(0, 8, width)
            w_neighbor, w_sums = ((empty, empty) if nb.w_neighbor is None
                                  else (nb.w_neighbor, sums.w_neighbor))
            _, grad_wc, _, grad_sh_dot = ops.invariants_backward(
                nb.v, s.w_center, w_neighbor, sh, centers, neighbors, run.neighbor_order,
                grad_dot, grad_rejected, sums.v, w_sums)
            grad_sh += grad_sh_dot
            if layer.update_edges:
                grad_v += torch.matmul(grad_wc, layer.w_center_proj.weight)
        grad_f = grad_pre_edge.mm(constants.edge_weight)
        if s.rejected is not None:  # f_next = f + df
            grad_f += grad_f_next
    return [grad_q, grad_v, grad_f, grad_sh, grad_phi]
