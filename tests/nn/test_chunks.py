"""Edge chunking: the plan tiles the edges, and chunked evaluation equals the whole pass."""

import numpy as np
import pytest
import torch

from freecg_md.nn import chunks as chunks_module
from freecg_md.nn import model as model_module
from freecg_md.nn.chunks import edge_chunks, group_chunks, is_sorted, merge_chunks
from freecg_md.nn.cpu import layer_runs as layer_module
from freecg_md.nn.cpu import threads as threads_module
from freecg_md.nn.cpu.kernels import kernels_available
from freecg_md.nn.cpu.threads import AtomsInBlocks, atom_blocks, run_pool
from tests.conftest import full_edges, random_molecule, small_model


def test_chunks_tile_atoms_and_edges_and_respect_the_limit():
    # Atom 1 has no edges, atom 3 has more edges than the limit.
    counts = [3, 0, 2, 9, 1, 1, 4]
    centers = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    chunks = edge_chunks(centers, n_atoms=len(counts) + 1, max_edges=4)  # atom 7: no edges
    assert chunks[0].atoms.start == 0 and chunks[-1].atoms.stop == len(counts) + 1
    assert chunks[0].edges.start == 0 and chunks[-1].edges.stop == len(centers)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.atoms.stop == after.atoms.start
        assert before.edges.stop == after.edges.start
    for chunk in chunks:
        own = centers[chunk.edges]
        # Every edge of the chunk's atoms is in the chunk, and nothing else.
        assert ((own >= chunk.atoms.start) & (own < chunk.atoms.stop)).all()
        size = chunk.edges.stop - chunk.edges.start
        assert size <= 4 or chunk.atoms.stop - chunk.atoms.start == 1
    assert [c.edges.stop - c.edges.start for c in chunks if c.atoms == slice(3, 4)] == [9]


def test_runs_are_even_without_a_short_tail():
    # 166 atoms of 20-45 edges, as in chignolin: filling runs up to ~E/6 edges each left
    # six full runs and a short seventh: four runs for one of two threads, three for the other.
    counts = torch.from_numpy(np.random.default_rng(0).integers(20, 46, size=166))
    centers = torch.repeat_interleave(torch.arange(166), counts)
    n_edges, max_edges = len(centers), 1024
    chunks = edge_chunks(centers, 166, max_edges)
    sizes = [c.edges.stop - c.edges.start for c in chunks]
    assert len(chunks) == -(-n_edges // max_edges)
    assert max(sizes) <= max_edges
    # Each run ends at the atom boundary nearest its share: within one atom's edges of it.
    assert max(sizes) - min(sizes) <= 2 * int(counts.max())


def test_runs_asked_for_by_number_are_even():
    # The fused kernels' plan: one run per thread, far below the limit.
    counts = torch.from_numpy(np.random.default_rng(1).integers(20, 46, size=166))
    centers = torch.repeat_interleave(torch.arange(166), counts)
    for n_runs in (2, 3, 4):
        chunks = edge_chunks(centers, 166, 8192, n_runs)
        sizes = [c.edges.stop - c.edges.start for c in chunks]
        assert len(chunks) == n_runs and sum(sizes) == len(centers)
        assert max(sizes) - min(sizes) <= 2 * int(counts.max())
    # Never fewer runs than the limit allows.
    assert len(edge_chunks(centers, 166, 1024, 2)) == -(-len(centers) // 1024)


def test_chunk_limit_must_be_positive():
    with pytest.raises(ValueError, match="max_edges=0"):
        edge_chunks(torch.zeros(3, dtype=torch.long), 1, 0)


def test_is_sorted():
    assert is_sorted(torch.tensor([0, 0, 1, 3]))
    assert not is_sorted(torch.tensor([0, 2, 1]))
    assert is_sorted(torch.tensor([], dtype=torch.long))


def _energy_forces(model, atoms, edges, positions=None):
    dtype = next(model.parameters()).dtype
    pos = torch.as_tensor(atoms.positions if positions is None else positions, dtype=dtype)
    out = model.energy_and_forces(torch.as_tensor(atoms.numbers), pos, edges)
    return out["energy"].detach().double(), out["forces"].detach().double()


def _whole_pass_and_runs(model, atoms, edges, chunk):
    """``(energy, forces)`` of ``model`` as a whole pass (``edge_chunk_size = None``), after
    checking that in runs of ``chunk`` edges it gives the same to 1e-10 (eV, eV/Å)."""
    model.edge_chunk_size = None
    energy, forces = _energy_forces(model, atoms, edges)
    model.edge_chunk_size = chunk
    energy2, forces2 = _energy_forces(model, atoms, edges)
    torch.testing.assert_close(energy2, energy, rtol=0, atol=1e-10)
    torch.testing.assert_close(forces2, forces, rtol=0, atol=1e-10)
    return energy, forces


@pytest.mark.parametrize("whole_embedding", [True, False])
@pytest.mark.parametrize("chunk", [7, 20, 50])
def test_chunked_pass_equals_whole_pass_in_float64(chunk, whole_embedding, monkeypatch):
    if not whole_embedding:
        monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    model = small_model(torch.float64)
    if whole_embedding:
        # Below the kept-graph budget only a frozen model goes in runs.
        model.requires_grad_(False)
    atoms = random_molecule(16, seed=11)
    edges = full_edges(len(atoms))  # 240 edges, all within the cutoff or not
    energy, forces = _whole_pass_and_runs(model, atoms, edges, chunk)
    # Edges in any order: the model sorts them by centre before chunking.
    shuffled = edges[:, torch.randperm(edges.shape[1], generator=torch.Generator().manual_seed(0))]
    energy3, forces3 = _energy_forces(model, atoms, shuffled)
    torch.testing.assert_close(energy3, energy, rtol=0, atol=1e-10)
    torch.testing.assert_close(forces3, forces, rtol=0, atol=1e-10)


def _record_results(monkeypatch, name):
    """The list of what ``freecg_md.nn.model.<name>`` returns, call by call."""
    results = []
    original = getattr(model_module, name)

    def spy(*args, **kwargs):
        results.append(original(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(model_module, name, spy)
    return results


@pytest.mark.parametrize("budget", ["default", 0])
def test_trainable_model_takes_runs_only_above_the_kept_graph_budget(budget, monkeypatch):
    """Checkpointed runs only save memory (and cost a recomputation): a trainable model
    below the budget is evaluated whole, above it in runs; a frozen one always in runs."""
    if budget == 0:
        monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    plans = _record_results(monkeypatch, "edge_chunks")
    atoms = random_molecule(12, seed=12)
    model = small_model(torch.float64)
    model.edge_chunk_size = 10
    _energy_forces(model, atoms, full_edges(len(atoms)))
    assert len(plans) == (1 if budget == 0 else 0)
    model.requires_grad_(False)
    _energy_forces(model, atoms, full_edges(len(atoms)))
    assert len(plans[-1]) > 1


def test_chunked_pass_trains_like_the_whole_pass(monkeypatch):
    """The checkpointed chunks support create_graph=True: a force loss has the same
    parameter gradients."""
    monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    atoms = random_molecule(12, seed=12)
    edges = full_edges(len(atoms))
    gradients = []
    for chunk in (None, 30):
        model = small_model(torch.float64)
        model.edge_chunk_size = chunk
        pos = torch.as_tensor(atoms.positions).requires_grad_(True)
        out = model.energy_and_forces(torch.as_tensor(atoms.numbers), pos, edges,
                                      create_graph=True)
        ((out["forces"] ** 2).sum() + out["energy"].sum()).backward()
        gradients.append(torch.cat([p.grad.flatten() for p in model.parameters()
                                    if p.grad is not None]))
    assert gradients[0].abs().max() > 1e-6
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-9, atol=1e-12)


def test_chunked_pass_in_a_batch_without_grad_and_with_lonely_atoms(monkeypatch):
    """Energies without autograd (no checkpoint) match, and an atom beyond the cutoff of
    everyone (no edges) still gets its chunk."""
    monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)  # runs, trainable
    model = small_model(torch.float64)
    atoms = random_molecule(12, seed=13)
    positions = atoms.positions.copy()
    positions[0] += 100.0  # isolated
    edges = full_edges(len(atoms))
    z = torch.as_tensor(atoms.numbers)
    pos = torch.as_tensor(positions)
    model.edge_chunk_size = None
    with torch.no_grad():
        whole = model(z, pos, edges)
        model.edge_chunk_size = 5
        chunked = model(z, pos, edges)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-10)
    assert np.isfinite(chunked.numpy()).all()


@pytest.mark.parametrize("atom_block", [None, 5], ids=["one-block", "blocks-of-5"])
@pytest.mark.parametrize("keep_graphs", [True, False], ids=["graphs-kept", "recomputed"])
@pytest.mark.parametrize("threads", [1, 2])
def test_runs_shared_among_threads_equal_the_whole_pass(threads, keep_graphs, atom_block,
                                                        monkeypatch):
    """Inference (no parameter needs a gradient): the runs go to a thread pool, forward and
    backward, with the neighbours' gradients summed per thread, and the per-atom work
    before and after them in blocks of atoms (16 atoms: one block, or four of at most 5);
    forces are unchanged."""
    if not keep_graphs:
        monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    if atom_block is not None:
        monkeypatch.setattr(threads_module, "ATOM_BLOCK", atom_block)
        calls = _record_results(monkeypatch, "atom_blocks")
    model = small_model(torch.float64).requires_grad_(False)
    atoms = random_molecule(16, seed=14)
    edges = full_edges(len(atoms))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, forces = _whole_pass_and_runs(model, atoms, edges, 9)
    finally:
        torch.set_num_threads(previous)
    assert forces.abs().max() > 1e-3
    if atom_block is not None:  # the read-out's blocks (the layers' come from layer.py)
        assert calls and all(len(blocks) == 4 for blocks in calls)


def _frozen_in_blocks(monkeypatch, threads):
    """A frozen float64 model in runs of 9 edges and blocks of 5 atoms on a 16-atom
    molecule, with ``threads`` torch threads until the test ends, and its inputs."""
    monkeypatch.setattr(threads_module, "ATOM_BLOCK", 5)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    # The thread count is faked: the calling thread's real one must not be set from it.
    monkeypatch.setattr(threads_module, "CALLING_THREAD_ALONE", False)
    model = small_model(torch.float64).requires_grad_(False)
    model.edge_chunk_size = 9
    atoms = random_molecule(16, seed=14)
    return model, torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions), \
        full_edges(len(atoms))


def test_threads_sums_of_neighbour_gradients_are_added_up(monkeypatch):
    """However the runs fall to the threads, the threads' sums are added up: each sum
    split at random between two threads gives the forces of the whole pass."""
    original = layer_module.runs_into_sums
    generator = torch.Generator().manual_seed(5)
    splits = []

    def two_threads(*args, **kwargs):
        threads = []
        for sums in original(*args, **kwargs):
            share = [None if t is None else torch.rand(t.shape, dtype=t.dtype,
                                                       generator=generator) * t
                     for t in sums]
            threads += [share, [None if t is None else t - part
                                for t, part in zip(sums, share, strict=True)]]
        splits.append(len(threads))
        return threads

    monkeypatch.setattr(layer_module, "runs_into_sums", two_threads)
    monkeypatch.setattr(threads_module, "ATOM_BLOCK", 5)
    model = small_model(torch.float64).requires_grad_(False)
    atoms = random_molecule(16, seed=14)
    _whole_pass_and_runs(model, atoms, full_edges(len(atoms)), 9)
    assert splits and min(splits) >= 2


@pytest.mark.parametrize("threads", [1, 2])
def test_inference_mode_in_the_pool(threads, monkeypatch):
    """Under ``torch.inference_mode`` the pool's threads write into the caller's inference
    tensors (the mode is per thread): the energies equal those under ``no_grad``."""
    model, numbers, positions, edges = _frozen_in_blocks(monkeypatch, threads)
    with torch.no_grad():
        want = model(numbers, positions, edges)
    with torch.inference_mode():
        got = model(numbers, positions, edges)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("keep_graphs", [True, False], ids=["graphs-kept", "recomputed"])
def test_second_backward_pass_with_retained_graph(keep_graphs, monkeypatch):
    """``retain_graph=True`` and a second ``autograd.grad`` (stress after forces, say)
    give the same gradients again: the blocks' and runs' graphs freed by the first pass are
    evaluated again."""
    if not keep_graphs:
        monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    model, numbers, positions, edges = _frozen_in_blocks(monkeypatch, 2)
    positions.requires_grad_()
    energy = model(numbers, positions, edges).sum()
    first = torch.autograd.grad(energy, positions, retain_graph=True)[0]
    second = torch.autograd.grad(energy, positions)[0]
    assert first.abs().max() > 1e-3
    torch.testing.assert_close(second, first, rtol=0, atol=1e-12)


def test_atom_blocks_tile_the_atoms():
    assert atom_blocks(166, 2) == [slice(0, 166)]  # one block: the calling thread's
    assert atom_blocks(0, 2) == [slice(0, 0)]
    blocks = atom_blocks(1100, 2, size=512)
    assert [(b.start, b.stop) for b in blocks] == [(0, 366), (366, 733), (733, 1100)]
    assert len(atom_blocks(600, 4, size=512)) == 4  # several blocks: one per thread at least
    assert atom_blocks(3, 8, size=1) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    # A GPU has no per-core caches to fit: one block, one launch of each kernel.
    assert atom_blocks(5000, 2, device="meta") == [slice(0, 5000)]
    with pytest.raises(ValueError, match="size must be a positive"):
        atom_blocks(10, 2, size=0)
    # Wide features: a small system split among the threads too.
    limit = threads_module.SPLIT_ATOM_FEATURES
    assert atom_blocks(166, 2, width=limit // 166 - 1) == [slice(0, 166)]
    assert atom_blocks(166, 2, width=256) == [slice(0, 83), slice(83, 166)]
    assert atom_blocks(166, 1, width=256) == [slice(0, 166)]
    assert atom_blocks(166, 2, width=256, device="meta") == [slice(0, 166)]


def _in_threads(threads, function):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return function()
    finally:
        torch.set_num_threads(saved)


def test_the_calling_thread_runs_alone_and_gets_its_threads_back():
    """Inside calling_thread_alone the calling thread has one intra-op thread while
    team_threads gives its former count, nested or not; its count comes back on exit, after
    an error too; disabled, nothing changes."""
    def check():
        assert threads_module.team_threads() == 2
        with threads_module.calling_thread_alone():
            assert torch.get_num_threads() == 1 and threads_module.team_threads() == 2
            with threads_module.calling_thread_alone():
                assert torch.get_num_threads() == 1 and threads_module.team_threads() == 2
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2 and threads_module.team_threads() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with threads_module.calling_thread_alone():
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2 and threads_module.team_threads() == 2
        with threads_module.calling_thread_alone(enabled=False):
            assert torch.get_num_threads() == 2

    _in_threads(2, check)


@pytest.mark.skipif(not kernels_available(), reason="the fused CPU kernels do not build here")
@pytest.mark.parametrize("alone", [True, False])
@pytest.mark.parametrize("split", [True, False])
def test_a_pass_in_two_threads_plans_for_both_and_equals_one_thread(alone, split,
                                                                    monkeypatch):
    """A frozen model's pass with two torch threads plans its runs for two threads whether
    the calling thread runs alone or not, and with the per-atom work split or not gives
    one thread's energy and forces; the caller keeps its two threads."""
    monkeypatch.setattr(threads_module, "CALLING_THREAD_ALONE", alone)
    monkeypatch.setattr(threads_module, "SPLIT_ATOM_FEATURES", 1 if split else 2 ** 62)
    model = small_model(torch.float64).requires_grad_(False)
    model.edge_chunk_size = 9
    atoms = random_molecule(16, seed=14)
    inputs = (torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions),
              full_edges(len(atoms)))

    def call():
        out = model.energy_and_forces(*inputs)
        assert model.last_plan.threads == torch.get_num_threads()
        return out

    two = _in_threads(2, lambda: (call(), torch.get_num_threads()))
    assert two[1] == 2
    one = _in_threads(1, call)
    torch.testing.assert_close(two[0]["energy"], one["energy"], rtol=0, atol=1e-10)
    torch.testing.assert_close(two[0]["forces"], one["forces"], rtol=0, atol=1e-10)


@pytest.mark.parametrize("threads", [1, 2])
def test_atoms_in_blocks_equal_the_whole_function_with_gradients(threads):
    """AtomsInBlocks gives the function of all rows and its gradients, blocks in the pool;
    an input that the function does not read gets a zero gradient."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(11, 4, dtype=torch.float64, generator=generator).requires_grad_()
    v = torch.randn(11, 3, 4, dtype=torch.float64, generator=generator).requires_grad_()
    unused = torch.randn(11, 2, dtype=torch.float64, generator=generator).requires_grad_()

    def function(x, v, unused):
        return torch.tanh(x).sum(-1) * (v ** 2).sum((1, 2)).sqrt()

    pool = run_pool(threads)
    blocks = atom_blocks(11, threads, size=3)
    assert len(blocks) == 4
    got = AtomsInBlocks.apply(function, blocks, pool, x, v, unused)
    want = function(x, v, unused)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    weights = torch.randn(11, dtype=torch.float64, generator=generator)
    expected = torch.autograd.grad(want, (x, v), weights)
    # The second pass, with the blocks' graphs freed by the first, evaluates them again.
    for retain in (True, False):
        grads = torch.autograd.grad(got, (x, v, unused), weights, retain_graph=retain)
        for g, e in zip(grads, expected, strict=False):
            torch.testing.assert_close(g, e, rtol=0, atol=1e-14)
        assert not grads[2].any()


def test_embedding_blocks_of_several_runs_equal_the_whole_pass(monkeypatch):
    """Above the kept-graph budget a model being trained computes its embedding in at
    most MAX_EDGE_RUNS checkpointed blocks of consecutive runs (a frozen one in runs in the
    pool, tests/nn/test_embedding_runs.py); blocks of several runs change nothing."""
    monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    monkeypatch.setattr(model_module, "MAX_EDGE_RUNS", 3)
    blocks = _record_results(monkeypatch, "group_chunks")
    model = small_model(torch.float64)
    atoms = random_molecule(16, seed=13)
    _whole_pass_and_runs(model, atoms, full_edges(len(atoms)), 7)
    # (A trainable model's runs are already at most MAX_EDGE_RUNS: here 4 runs, 2 blocks.)
    assert len(blocks) == 1 and len(blocks[0]) <= 3
    assert max(len(group) for group in blocks[0]) > 1


def test_group_chunks_keeps_order_and_bounds_the_count():
    chunks = edge_chunks(torch.repeat_interleave(torch.arange(10), 3), 10, 3)
    for limit in (1, 3, 4, 10, 20):
        groups = group_chunks(chunks, limit)
        assert len(groups) <= limit
        assert [c for group in groups for c in group] == chunks
        merged = [merge_chunks(group) for group in groups]
        assert merged[0].atoms.start == 0 and merged[-1].edges.stop == 30
