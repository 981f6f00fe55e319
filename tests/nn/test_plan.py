"""The execution plan: chosen in one place (plan_pass), followed by the model, shown to users."""

import copy

import pytest
import torch

from freecg_md.nn import chunks as chunks_module
from freecg_md.nn import model as model_module
from freecg_md.nn.cpu.kernels import kernels_available
from freecg_md.nn.plan import (
    DEFAULT_EDGE_CHUNK,
    FUSED_EDGES_PER_RUN,
    FUSED_MIN_EDGES_PER_THREAD,
    GPU_RUNS_ABOVE_EDGES,
    MAX_EDGE_RUNS,
    plan_pass,
)
from tests.conftest import full_edges, random_molecule, small_model


def frozen(model):
    return copy.deepcopy(model).requires_grad_(False)


def test_training_runs_torch_operations_in_one_whole_pass():
    plan = plan_pass(small_model(), "cpu", n_atoms=20, n_edges=300)
    assert not plan.frozen and plan.kernels == "torch" and not plan.in_runs
    assert plan.describe() == "cpu, trainable, torch operations, one whole pass"


@pytest.mark.skipif(not kernels_available(), reason="the fused CPU kernels do not build here")
def test_a_frozen_model_on_a_cpu_takes_the_fused_kernels_unless_told_not_to():
    model = frozen(small_model())
    assert plan_pass(model, "cpu", 20, 300).kernels == "fused-cpu"
    model.fused_kernels = False
    assert plan_pass(model, "cpu", 20, 300).kernels == "torch"
    # Forces to be differentiated again (a force loss): only autograd's paths.
    assert plan_pass(frozen(small_model()), "cpu", 20, 300, create_graph=True).kernels == "torch"


def test_runs_above_four_runs_of_edges_on_a_cpu_shared_among_threads(monkeypatch):
    model = frozen(small_model())
    model.edge_chunk_size = 100
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert not plan_pass(model, "cpu", 50, 400).in_runs
    plan = plan_pass(model, "cpu", 50, 401)
    assert plan.max_edges_per_run == 100 and plan.threads == 3 and plan.keep_graphs
    assert plan.n_runs == 5 and "5 runs of at most 100 edges in 3 threads" in plan.describe()
    model.edge_chunk_size = None
    assert not plan_pass(model, "cpu", 50, 10**6).in_runs


@pytest.mark.skipif(not kernels_available(), reason="the fused CPU kernels do not build here")
def test_auto_runs_of_the_fused_kernels_are_one_per_thread_up_to_their_limit(monkeypatch):
    model = frozen(small_model())
    assert model.edge_chunk_size == "auto"
    threads = {"n": 2}
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads["n"])
    # A chignolin's edges: one run per thread.
    plan = plan_pass(model, "cpu", 166, 5546)
    assert (plan.n_runs, plan.max_edges_per_run, plan.threads) == (2, FUSED_EDGES_PER_RUN, 2)
    assert "2 runs of at most 8192 edges in 2 threads" in plan.describe()
    # Too few edges to share: whole.
    assert not plan_pass(model, "cpu", 40, 2 * FUSED_MIN_EDGES_PER_THREAD - 1).in_runs
    # Beyond a run's limit per thread: more runs, a multiple of the threads.
    assert plan_pass(model, "cpu", 1002, 42286).n_runs == 6
    threads["n"] = 1  # one thread: runs only beyond the limit
    assert not plan_pass(model, "cpu", 166, 5546).in_runs
    plan = plan_pass(model, "cpu", 1002, 42286)
    assert plan.n_runs == 6 and plan.threads == 1
    # On torch operations "auto" means runs of about DEFAULT_EDGE_CHUNK edges.
    model.fused_kernels = False
    plan = plan_pass(model, "cpu", 166, 5546)
    assert plan.kernels == "torch" and plan.max_edges_per_run == DEFAULT_EDGE_CHUNK
    assert plan.n_runs == 6


@pytest.mark.parametrize("bad", [0, -5, "big", 1.5])
def test_a_bad_edge_chunk_size_is_named(bad):
    model = frozen(small_model())
    model.edge_chunk_size = bad
    with pytest.raises(ValueError, match="edge_chunk_size"):
        plan_pass(model, "cpu", 20, 300)


def test_a_trainable_model_takes_runs_only_beyond_the_kept_graph_budget(monkeypatch):
    model = small_model()
    model.edge_chunk_size = 100
    assert not plan_pass(model, "cpu", 50, 5000).in_runs
    monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    plan = plan_pass(model, "cpu", 50, 100 * MAX_EDGE_RUNS * 3)
    # At most MAX_EDGE_RUNS runs, recomputed in the backward pass, one thread.
    assert plan.max_edges_per_run == 300 and not plan.keep_graphs and plan.threads == 1


def test_a_gpu_takes_whole_passes_and_no_cpu_machinery():
    model = frozen(small_model())
    plan = plan_pass(model, "cuda", 5000, GPU_RUNS_ABOVE_EDGES)
    assert plan.kernels == "torch" and not plan.in_runs and plan.threads == 1
    assert plan_pass(model, "cuda", 5000, GPU_RUNS_ABOVE_EDGES + 1).in_runs


def test_a_compiled_network_runs_where_the_kernels_do_not():
    model = frozen(small_model())
    model._compiled_network = object()  # stands for torch.compile's function here
    model.fused_kernels = False
    assert plan_pass(model, "cpu", 20, 300).compiled
    model.edge_chunk_size = 10
    assert not plan_pass(model, "cpu", 20, 300).compiled  # runs: the loop depends on data
    # Training with a force loss differentiates the backward again, which the compiled
    # network's cannot be.
    trainable = small_model()
    trainable._compiled_network = object()
    trainable.fused_kernels = False
    assert plan_pass(trainable, "cpu", 20, 300).compiled
    assert not plan_pass(trainable, "cpu", 20, 300, create_graph=True).compiled


@pytest.mark.parametrize("chunk", [None, 20])
@pytest.mark.parametrize("trainable", [True, False])
def test_the_model_follows_its_plan_and_keeps_it(chunk, trainable, monkeypatch):
    calls = []
    original = model_module.edge_chunks

    def spy(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(model_module, "edge_chunks", spy)
    model = small_model(torch.float64) if trainable else frozen(small_model(torch.float64))
    model.edge_chunk_size = chunk
    if trainable:
        monkeypatch.setattr(chunks_module, "KEEP_GRAPHS_MAX_EDGE_CHANNELS", 0)
    atoms = random_molecule(16, seed=1)
    model.energy_and_forces(torch.as_tensor(atoms.numbers), torch.as_tensor(atoms.positions),
                            full_edges(len(atoms)))
    plan = model.last_plan
    assert plan is not None and plan.frozen is (not trainable)
    assert plan.in_runs is (chunk is not None) and bool(calls) is plan.in_runs


def test_the_potential_reports_its_execution():
    from freecg_md.md import FreeCGPotential

    model = small_model()
    atoms = random_molecule(12, seed=2)
    potential = FreeCGPotential(model, atoms.numbers, workers=2)
    execution = potential.execution(atoms.positions, n_replicas=8)
    assert execution["replicas_per_pass"] == 1 and execution["passes"] == 8
    assert execution["worker_processes"] == 2 and execution["pass"]["frozen"]
    assert execution["description"].startswith("float32, 1 replica(s) per pass, 8 pass(es) "
                                               "per step in 2 process(es); each pass: cpu")
    one_pass = FreeCGPotential(model, atoms.numbers, workers=1, replicas_per_pass=None)
    assert one_pass.execution(atoms.positions, 8)["passes"] == 1
    with pytest.raises(ValueError, match="n_replicas=0"):
        potential.execution(atoms.positions, 0)
