"""The fused CPU kernels equal the reference's torch operations, values and gradients."""

import copy

import numpy as np
import pytest
import torch

from freecg_md.nn.cpu import kernels
from freecg_md.nn.cpu.kernels import (
    aggregate_vectors,
    edge_invariants,
    edge_messages,
    group_cg_shuffled,
    kernels_available,
)
from freecg_md.nn.group_cg import GroupCGTensorProduct, shuffle_abstract_edges
from freecg_md.nn.layer import edge_update_invariant
from freecg_md.nn.ops import dot_components, scatter_sum
from tests.conftest import frozen_pair, full_edges, random_molecule, small_model

needs_kernels = pytest.mark.skipif(not kernels_available(),
                                   reason="the fused kernels could not be built here")


def _edges(seed: int = 0, n_edges: int = 40, n_centers: int = 6, n_rows: int = 9):
    """Edges sorted by centre, with repeated neighbours, a centre without edges (the last)
    and a neighbour row no edge reads (the last)."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.sort(torch.randint(0, n_centers - 1, (n_edges,), generator=generator)).values
    neighbors = torch.randint(0, n_rows - 1, (n_edges,), generator=generator)
    return centers, neighbors, generator


def _inputs(dtype, width=16, seed=0):
    centers, neighbors, generator = _edges(seed)
    n_edges = centers.shape[0]

    def leaf(*shape):
        return torch.randn(*shape, dtype=dtype, generator=generator).requires_grad_()

    heads = 4 if width % 4 == 0 else 1
    return dict(v=leaf(9, 8, width), w_center=leaf(6, 8, width), w_rows=leaf(9, 8, width),
                sh=leaf(n_edges, 8), gates=leaf(n_edges, 2 * width),
                phi=torch.rand(n_edges, dtype=dtype, generator=generator).requires_grad_(),
                q=leaf(6, heads, width // heads), k=leaf(9, heads, width // heads),
                s=leaf(9, heads, width // heads), dkdv=leaf(n_edges, 2 * width),
                enhance=leaf(n_edges, heads), centers=centers, neighbors=neighbors)


def _all_outputs(inputs, fused, edge_update=True):
    v, w_rows, k, s = (inputs[name] for name in ("v", "w_rows", "k", "s"))
    neighbors, centers, sh, phi = (inputs[name] for name in ("neighbors", "centers", "sh", "phi"))
    w_center = inputs["w_center"]
    if fused:
        dot, rejected = edge_invariants(v, w_center if edge_update else None,
                                        w_rows if edge_update else None, sh, centers,
                                        neighbors)
        vectors = aggregate_vectors(v, inputs["gates"], sh, phi, centers, neighbors,
                                    n_centers=6)
        message, summed = edge_messages(inputs["q"], k, s, inputs["dkdv"], inputs["enhance"],
                                        phi, centers, neighbors, n_centers=6)
    else:  # the reference layer's equations, on rows gathered per edge
        v, w_rows, k, s = (t[neighbors] for t in (v, w_rows, k, s))
        dot = dot_components(v, sh)
        rejected = edge_update_invariant(w_center[centers], w_rows, sh)
        gate1, gate2 = (inputs["gates"] * phi[:, None]).split(v.shape[2], dim=-1)
        vectors = scatter_sum(v * gate1[:, None] + gate2[:, None] * sh[..., None], centers, 6)
        heads, depth = inputs["q"].shape[1:]
        dk, dv = inputs["dkdv"].reshape(-1, 2, heads, depth).unbind(1)
        attention = (inputs["q"][centers] * k * dk).sum(-1) + inputs["enhance"]
        attention = torch.nn.functional.silu(attention) * phi[:, None]
        message = (s * dv * attention[..., None]).reshape(-1, heads * depth)
        summed = scatter_sum(message, centers, 6)
    return [dot, vectors, message, summed] + ([rejected] if edge_update else [])


def _weighted_sum(tensors, weights):
    return sum((t * w).sum() for t, w in zip(tensors, weights, strict=True))


@needs_kernels
@pytest.mark.parametrize("width", [16, 20])  # 20: vectors of channels and a scalar tail
@pytest.mark.parametrize("edge_update", [True, False])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_edge_kernels_equal_torch_operations_with_gradients(dtype, tol, edge_update, width):
    inputs = _inputs(dtype, width)
    fused = _all_outputs(inputs, True, edge_update)
    plain = _all_outputs(inputs, False, edge_update)
    assert fused[1][-1].abs().max() == 0  # the centre without edges gets nothing
    for a, b in zip(fused, plain, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)
    leaves = [inputs[k] for k in ("v", "sh", "gates", "phi", "q", "k", "s", "dkdv", "enhance")]
    leaves += [inputs["w_center"], inputs["w_rows"]] if edge_update else []
    weights = [torch.randn_like(t) for t in fused]
    grads_fused = torch.autograd.grad(_weighted_sum(fused, weights), leaves)
    grads_plain = torch.autograd.grad(_weighted_sum(plain, weights), leaves)
    assert grads_fused[0][-1].abs().max() == 0  # the unread neighbour row
    for a, b in zip(grads_fused, grads_plain, strict=True):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


@needs_kernels
def test_edge_kernels_pass_gradcheck():
    inputs = _inputs(torch.float64, width=3, seed=1)
    centers, neighbors = inputs["centers"], inputs["neighbors"]

    names = ("v", "w_center", "w_rows", "sh", "gates", "phi", "q", "k", "s", "dkdv", "enhance")

    def function(v, w_center, w_rows, sh, gates, phi, q, k, s, dkdv, enhance):
        dot, rejected = edge_invariants(v, w_center, w_rows, sh, centers, neighbors)
        vectors = aggregate_vectors(v, gates, sh, phi, centers, neighbors, 6)
        message, summed = edge_messages(q, k, s, dkdv, enhance, phi, centers, neighbors, 6)
        return dot, rejected, vectors, message, summed

    assert torch.autograd.gradcheck(function, tuple(inputs[k] for k in names))


@needs_kernels
def test_fused_backward_refuses_a_second_derivative():
    inputs = _inputs(torch.float64)
    dot, _ = edge_invariants(inputs["v"], None, None, inputs["sh"], inputs["centers"],
                             inputs["neighbors"])
    (grad,) = torch.autograd.grad(dot.pow(2).sum(), inputs["v"], create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        grad.sum().backward()


@needs_kernels
@pytest.mark.parametrize("group_size", [4, 8, 16])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_group_cg_kernel_equals_torch_with_gradients(group_size, dtype, tol):
    torch.manual_seed(group_size)
    groups = 3
    transform = GroupCGTensorProduct(groups, group_size).to(dtype).requires_grad_(False)
    width = groups * group_size
    a = torch.randn(5, 8, width, dtype=dtype, requires_grad=True)
    b = torch.randn(5, 8, width, dtype=dtype, requires_grad=True)
    # A shift that is not a multiple of T crosses group boundaries.
    for shift in (0, 5, (3 * groups) // 2, width - 1):
        fused = group_cg_shuffled(transform, a, b, shift)
        plain = shuffle_abstract_edges(transform(a, b), shift)
        torch.testing.assert_close(fused, plain, rtol=tol, atol=tol)
        weight = torch.randn_like(fused)
        grads_fused = torch.autograd.grad(fused, [a, b], weight)
        grads_plain = torch.autograd.grad(plain, [a, b], weight)
        for x, y in zip(grads_fused, grads_plain, strict=True):
            torch.testing.assert_close(x, y, rtol=tol, atol=tol)


def test_group_cg_of_an_uncompiled_group_size_uses_torch():
    transform = GroupCGTensorProduct(2, 3).requires_grad_(False)
    a, b = torch.randn(4, 8, 6), torch.randn(4, 8, 6)
    torch.testing.assert_close(group_cg_shuffled(transform, a, b, 2),
                               shuffle_abstract_edges(transform(a, b), 2))


@needs_kernels
@pytest.mark.parametrize("width", [16, 20])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 3e-6)])
def test_kernels_applying_silu_equal_torch_silu_first(dtype, tol, width):
    # The message and aggregation kernels given pre-activations and a bias (activated=False)
    # as column blocks of a wider tensor (strided rows, as the stacked linear maps give)
    # against the same kernels given torch's SiLU of their sum; the edge update with its
    # SiLU against torch. Arguments far beyond e^x's range in both directions. The
    # neighbours' gradients are added into the tensors given for them.
    ops = kernels.load_kernels()
    inputs = {k: t.detach() if isinstance(t, torch.Tensor) else t
              for k, t in _inputs(dtype, width).items()}
    centers, neighbors, sh, phi = (inputs[k] for k in ("centers", "neighbors", "sh", "phi"))
    q, k, s, v, enhance = (inputs[name] for name in ("q", "k", "s", "v", "enhance"))
    generator = torch.Generator().manual_seed(1)
    n_edges = centers.shape[0]
    wide = 4 * torch.randn(n_edges, 5 * width + 3, dtype=dtype, generator=generator)
    wide[0, :6] = torch.tensor([-1e4, -200.0, -88.5, 88.5, 200.0, 1e4])
    bias = torch.randn(5 * width, dtype=dtype, generator=generator)
    bias_dkdv, bias_gates, bias_f = bias.split([2 * width, 2 * width, width])
    pre_dkdv, pre_gates = wide[:, :2 * width], wide[:, 2 * width:4 * width]
    grad_message = torch.randn(n_edges, width, dtype=dtype, generator=generator)
    grad_summed = torch.randn(6, width, dtype=dtype, generator=generator)
    grad_out = torch.randn(6, 8, width, dtype=dtype, generator=generator)
    silu, silu_backward = torch.nn.functional.silu, torch.ops.aten.silu_backward
    none = torch.empty(0, dtype=dtype)

    def close(actual, expected):  # relative to each tensor's scale: SiLU' crosses zero
        assert torch.isfinite(actual).all()
        torch.testing.assert_close(actual, expected, rtol=0,
                                   atol=tol * max(expected.abs().max().item(), 1.0))

    def some_like(t):  # a gradient already summed from other runs
        return torch.randn(t.shape, dtype=dtype, generator=generator)

    args = (centers, neighbors, 6)
    for a, b in zip(ops.message_forward(q, k, s, pre_dkdv, bias_dkdv, enhance, phi, *args,
                                        False),
                    ops.message_forward(q, k, s, silu(pre_dkdv + bias_dkdv), none, enhance,
                                        phi, *args, True),
                    strict=True):
        close(a, b)
    close(ops.aggregate_forward(v, pre_gates, bias_gates, sh, phi, *args, False),
          ops.aggregate_forward(v, silu(pre_gates + bias_gates), none, sh, phi, *args, True))

    out = torch.full((n_edges, 2 * width + 6), float("nan"), dtype=dtype)
    before_k, before_s = some_like(k), some_like(s)
    sums_k, sums_s = before_k.clone(), before_s.clone()
    fused = ops.message_backward(q, k, s, pre_dkdv, bias_dkdv, enhance, phi, centers,
                                 neighbors, grad_message, grad_summed, False, out[:, 3:-3],
                                 sums_k, sums_s)
    plain = ops.message_backward(q, k, s, silu(pre_dkdv + bias_dkdv), none, enhance, phi,
                                 centers, neighbors, grad_message, grad_summed, True,
                                 torch.empty_like(pre_dkdv), torch.zeros_like(k),
                                 torch.zeros_like(s))
    plain[1], plain[2] = plain[1] + before_k, plain[2] + before_s
    plain[3] = silu_backward(plain[3], pre_dkdv + bias_dkdv)
    assert fused[1] is sums_k and fused[2] is sums_s
    for a, b in zip(fused, plain, strict=True):
        close(a, b)
    assert out[:, :3].isnan().all() and out[:, -3:].isnan().all()  # nothing outside
    before_v = some_like(v)
    fused = ops.aggregate_backward(v, pre_gates, bias_gates, sh, phi, centers, neighbors,
                                   grad_out, False, before_v.clone())
    plain = list(ops.aggregate_backward(v, silu(pre_gates + bias_gates), none, sh, phi,
                                        centers, neighbors, grad_out, True,
                                        torch.zeros_like(v)))
    plain[0] = plain[0] + before_v
    plain[1] = silu_backward(plain[1], pre_gates + bias_gates)
    for a, b in zip(fused, plain, strict=True):
        close(a, b)

    # No rows of v: every v is zero and only the gates' second half enters.
    no_v, zeros = v.new_empty(0, 8, width), torch.zeros_like(v)
    second = pre_gates[:, width:]
    close(ops.aggregate_forward(no_v, second, bias_gates[width:], sh, phi, *args, False),
          ops.aggregate_forward(zeros, pre_gates, bias_gates, sh, phi, *args, False))
    half = ops.aggregate_backward(no_v, second, bias_gates[width:], sh, phi, centers,
                                  neighbors, grad_out, False, no_v)
    full = ops.aggregate_backward(zeros, pre_gates, bias_gates, sh, phi, centers, neighbors,
                                  grad_out, False, torch.zeros_like(v))
    close(half[1], full[1][:, width:])
    for a, b in zip(half[2:], full[2:], strict=True):
        close(a, b)

    pre_f = wide[:, 4 * width:5 * width]
    f, rejected, grad_f = (torch.randn(n_edges, width, dtype=dtype, generator=generator)
                           for _ in range(3))
    close(ops.edge_update_forward(f, pre_f, bias_f, rejected),
          f + silu(pre_f + bias_f) * rejected)
    grad_pre = torch.empty(n_edges, width, dtype=dtype)
    close(ops.edge_update_backward(grad_f, pre_f, bias_f, rejected, grad_pre),
          grad_f * silu(pre_f + bias_f))
    close(grad_pre, silu_backward(grad_f * rejected, pre_f + bias_f))
    with pytest.raises(RuntimeError, match="contiguous rows"):
        column_major = wide.t().contiguous().t()  # (E, 5F + 3), strides (1, E)
        ops.aggregate_forward(v, column_major[:, :2 * width], none, sh, phi, *args, False)
    with pytest.raises(RuntimeError, match="bias: expected"):
        ops.aggregate_forward(v, pre_gates, bias_dkdv[:-1], sh, phi, *args, False)
    with pytest.raises(RuntimeError, match="grad_v: expected sizes"):
        ops.aggregate_backward(v, pre_gates, bias_gates, sh, phi, centers, neighbors, grad_out,
                               False, torch.zeros(3, 8, width, dtype=dtype))


@needs_kernels
@pytest.mark.parametrize("chunk", [None, 20])  # one whole pass; runs in the thread pool
def test_frozen_model_with_kernels_equals_torch_operations(chunk, monkeypatch):
    calls = []
    real = kernels.load_kernels

    def counting():
        calls.append(1)
        return real()

    monkeypatch.setattr(kernels, "load_kernels", counting)
    model, plain = frozen_pair(chunk)
    atoms = random_molecule(16, seed=3)
    edges = full_edges(len(atoms))
    numbers = torch.as_tensor(atoms.numbers)
    positions = torch.as_tensor(atoms.positions)
    fused = model.energy_and_forces(numbers, positions, edges)
    count = len(calls)
    reference = plain.energy_and_forces(numbers, positions, edges)
    assert count > 0 and len(calls) == count  # only the fused model used the kernels
    torch.testing.assert_close(fused["energy"], reference["energy"], rtol=0, atol=1e-10)
    torch.testing.assert_close(fused["forces"], reference["forces"], rtol=0, atol=1e-10)
    assert reference["forces"].abs().max() > 1e-3


def test_kernels_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("FREECG_MD_KERNELS", "0")
    assert kernels.load_kernels() is None
    model, plain = frozen_pair(20)
    atoms = random_molecule(12, seed=4)
    args = (torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions),
            full_edges(len(atoms)))
    np.testing.assert_allclose(model.energy_and_forces(*args)["forces"],
                               plain.energy_and_forces(*args)["forces"], rtol=0, atol=1e-12)


def test_a_failed_build_warns_and_falls_back_to_torch(monkeypatch):
    from torch.utils import cpp_extension

    def fail(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp_extension, "load", fail)
    monkeypatch.setattr(kernels, "_LOADED", {})
    with pytest.warns(RuntimeWarning, match="no compiler here"):
        assert kernels.load_kernels() is None
    assert not kernels.kernels_available()  # the failure is remembered, not retried


@pytest.mark.parametrize("frozen", [True, False])
def test_first_layer_skipping_zero_vectors_changes_nothing(frozen):
    """The first layer's input vectors are zero, so it skips the terms they make vanish."""
    model = small_model(torch.float64)
    model.edge_chunk_size = 20
    full = copy.deepcopy(model)
    assert model.layers[0].zero_vectors_in and not any(
        layer.zero_vectors_in for layer in model.layers[1:])
    full.layers[0].zero_vectors_in = False
    if frozen:
        model.requires_grad_(False)
        full.requires_grad_(False)
    atoms = random_molecule(16, seed=5)
    args = (torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions),
            full_edges(len(atoms)))
    skipped, reference = model.energy_and_forces(*args), full.energy_and_forces(*args)
    torch.testing.assert_close(skipped["energy"], reference["energy"], rtol=0, atol=1e-12)
    torch.testing.assert_close(skipped["forces"], reference["forces"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 20])
def test_frozen_model_forces_can_be_differentiated_again(chunk):
    """create_graph=True keeps a frozen model off its once-differentiable paths (threaded
    runs, fused kernels), so second derivatives work and equal the trainable model's."""
    model = small_model(torch.float64)
    model.edge_chunk_size = chunk
    frozen = copy.deepcopy(model).requires_grad_(False)
    atoms = random_molecule(16, seed=6)
    results = []
    for net in (model, frozen):
        positions = torch.as_tensor(atoms.positions).requires_grad_()
        out = net.energy_and_forces(torch.as_tensor(atoms.numbers), positions,
                                    full_edges(len(atoms)), create_graph=True)
        (curvature,) = torch.autograd.grad(out["forces"].pow(2).sum(), positions)
        results.append(curvature)
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-10)
    assert results[0].abs().max() > 0


@needs_kernels
def test_kernels_refuse_an_index_out_of_range():
    inputs = _inputs(torch.float64)
    bad = inputs["neighbors"].clone()
    bad[3] = 9  # v has 9 rows
    with pytest.raises(RuntimeError, match="neighbors: index 9 outside"):
        edge_invariants(inputs["v"], None, None, inputs["sh"], inputs["centers"], bad)


@needs_kernels
def test_kernels_take_a_strided_edge_index():
    """An edge index that is a strided view (a transposed (E, 2) array) gives the same
    results: the wrappers make the inputs contiguous."""
    inputs = _inputs(torch.float64)
    pairs = torch.stack([inputs["centers"], inputs["neighbors"]], dim=1)  # (E, 2)
    centers, neighbors = pairs.T[0], pairs.T[1]
    assert not centers.is_contiguous()
    fused = edge_invariants(inputs["v"], None, None, inputs["sh"], centers, neighbors)[0]
    plain = edge_invariants(inputs["v"], None, None, inputs["sh"], inputs["centers"],
                            inputs["neighbors"])[0]
    torch.testing.assert_close(fused, plain, rtol=0, atol=0)


@needs_kernels
@pytest.mark.parametrize("chunk", [None, 20])
def test_frozen_model_takes_a_strided_edge_index(chunk):
    """A frozen model given the rows of a transposed (E, 2) array, as a neighbour list
    library may return them, equals the torch operations on a contiguous index."""
    model, plain = frozen_pair(chunk)
    atoms = random_molecule(12, seed=5, box=2.8)  # every pair within the 5 Å cutoff
    edges = full_edges(len(atoms))
    assert atoms.get_all_distances().max() < model.cutoff
    strided = edges.T.contiguous().T
    assert not strided[0].is_contiguous()
    numbers, positions = torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions)
    fused = model.energy_and_forces(numbers, positions, strided)
    reference = plain.energy_and_forces(numbers, positions, edges)
    torch.testing.assert_close(fused["forces"], reference["forces"], rtol=0, atol=1e-10)
    torch.testing.assert_close(fused["energy"], reference["energy"], rtol=0, atol=1e-10)
