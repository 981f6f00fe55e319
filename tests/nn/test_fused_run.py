"""A run's hand-written forward and backward pass (fused_run) equal autograd's of the layer."""

import pytest
import torch

from freecg_md.nn import chunks
from freecg_md.nn.chunks import EdgeRun
from freecg_md.nn.cpu import threads
from freecg_md.nn.cpu.fused_run import layer_constants, run_backward, run_forward, runs_fusable
from freecg_md.nn.cpu.kernels import kernels_available
from freecg_md.nn.layer import FreeCGLayer, NodeTerms, gather_terms
from tests.conftest import frozen_pair, full_edges, random_molecule

needs_kernels = pytest.mark.skipif(not kernels_available(),
                                   reason="the fused kernels could not be built here")

WIDTH, HEADS, CENTERS, ROWS, EDGES = 16, 4, 6, 9, 40


def _layer(zero_vectors_in: bool, update_edges: bool, use_group_cg: bool,
           num_groups: int = 2) -> FreeCGLayer:
    torch.manual_seed(1)
    layer = FreeCGLayer(WIDTH, HEADS, num_groups, update_edges, use_group_cg,
                        zero_vectors_in).double()
    with torch.no_grad():  # biases are zero at initialisation: make every term count
        for parameter in layer.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return layer.requires_grad_(False)


def _run_inputs(layer: FreeCGLayer, seed: int = 0):
    """Leaves ``(q, v, f, sh, phi)`` of a run of 6 centres, the per-atom terms ``nb`` of 9
    atoms (a centre without edges, an atom that no edge reads), and the run."""
    generator = torch.Generator().manual_seed(seed)
    centers = torch.sort(torch.randint(0, CENTERS - 1, (EDGES,), generator=generator)).values
    neighbors = torch.randint(0, ROWS - 1, (EDGES,), generator=generator)

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=generator).requires_grad_()

    depth = WIDTH // HEADS
    own = [leaf(CENTERS, HEADS, depth), leaf(CENTERS, 8, WIDTH), leaf(EDGES, WIDTH),
           leaf(EDGES, 8),
           torch.rand(EDGES, dtype=torch.float64, generator=generator).requires_grad_()]
    nb = NodeTerms(leaf(ROWS, HEADS, depth), leaf(ROWS, HEADS, depth), leaf(ROWS, 8, WIDTH),
                   leaf(ROWS, 8, WIDTH) if layer.returns_edge_update else None)
    if layer.zero_vectors_in:  # the layer's contract: its input vectors are zero
        own[1] = torch.zeros_like(own[1]).requires_grad_()
        nb = nb._replace(v=torch.zeros_like(nb.v).requires_grad_())
    run = chunks.for_kernels(EdgeRun(
        0, CENTERS, centers, neighbors, torch.empty(EDGES, dtype=torch.float64), own[3],
        own[4]))
    return own, nb, run


@needs_kernels
@pytest.mark.parametrize("zero_vectors_in,update_edges,use_group_cg", [
    (True, True, True),     # the first layer
    (False, True, True),    # a middle layer
    (False, False, True),   # the last layer: no edge update
    (False, True, False),   # without the group CG transform (the ablation)
])
def test_run_forward_and_backward_equal_autograd(zero_vectors_in, update_edges, use_group_cg):
    layer = _layer(zero_vectors_in, update_edges, use_group_cg)
    own, nb, run = _run_inputs(layer)
    q, v, f, _, _ = own
    assert runs_fusable(layer, [run])

    # The reference: the layer's update in torch operations, on each edge's rows of the
    # neighbours' terms.
    expected = layer._update(q, v, gather_terms(nb, run), f, run)
    constants = layer_constants(layer)
    outputs, saved = run_forward(layer, constants, q, v, nb, f, run, save=True)
    assert (outputs[2] is None) == (expected[2] is None) == (not layer.returns_edge_update)
    for got, want in zip(outputs, expected, strict=True):
        if want is not None:
            torch.testing.assert_close(got, want.detach(), rtol=1e-12, atol=1e-12)

    generator = torch.Generator().manual_seed(5)
    weights = [None if t is None else torch.randn(t.shape, dtype=t.dtype, generator=generator)
               for t in expected]
    inputs = own + [t for t in nb if t is not None]
    reference = torch.autograd.grad([t for t in expected if t is not None], inputs,
                                    [w for w in weights if w is not None], allow_unused=True)
    # The neighbours' gradients are added into sums that already hold other runs' ones.
    before = [None if t is None else torch.randn(t.shape, dtype=t.dtype, generator=generator)
              for t in nb]
    sums = NodeTerms(*(None if t is None else t.clone() for t in before))
    grads = run_backward(layer, constants, saved, *weights, sums)
    assert len(grads) == len(own)
    grads += [total - earlier for total, earlier in zip(sums, before, strict=True)
              if total is not None]
    for index, (got, want) in enumerate(zip(grads, reference, strict=True)):
        if layer.zero_vectors_in and index == len(own) + 2:
            want = None  # the neighbours' v, which the fused first layer does not read
        if want is None:  # the first layer does not read its own atoms' v
            assert got is None or not got.any(), index
            continue
        assert want.abs().max() > 0, index  # every other input reaches the outputs
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"input {index}")


@needs_kernels
def test_a_group_size_without_kernel_is_not_fused():
    layer = _layer(False, True, True, num_groups=8)  # T = 2: no compiled kernel
    _, _, run = _run_inputs(layer)
    assert not runs_fusable(layer, [run])
    assert not runs_fusable(_layer(False, True, True), [run._replace(neighbor_order=None)])


@needs_kernels
@pytest.mark.parametrize("atom_block", [None, 5])
@pytest.mark.parametrize("keep_graphs", [True, False])
def test_frozen_model_in_fused_runs_equals_torch_operations(keep_graphs, atom_block,
                                                            monkeypatch):
    """The whole model with its runs in the pool, the runs' forward passes kept for the
    backward pass or recomputed there, the per-atom work in one block or in four, against
    the torch operations."""
    if not keep_graphs:
        monkeypatch.setattr(chunks, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    if atom_block is not None:
        monkeypatch.setattr(threads, "ATOM_BLOCK", atom_block)
    calls = []
    real = run_backward

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr("freecg_md.nn.cpu.layer_runs.run_backward", counting)
    model, plain = frozen_pair(20)
    atoms = random_molecule(16, seed=4)
    edges = full_edges(len(atoms))
    numbers, positions = torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions)
    fused = model.energy_and_forces(numbers, positions, edges)
    assert calls  # the runs went through fused_run
    reference = plain.energy_and_forces(numbers, positions, edges)
    torch.testing.assert_close(fused["energy"], reference["energy"], rtol=0, atol=1e-10)
    torch.testing.assert_close(fused["forces"], reference["forces"], rtol=0, atol=1e-10)
    assert reference["forces"].abs().max() > 1e-3
