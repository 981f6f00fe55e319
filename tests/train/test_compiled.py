"""The compiled training pass (TrainConfig.compile) computes what the reference computes."""

import numpy as np
import pytest
import torch
from e3nn import o3

from freecg_md.train import train
from freecg_md.train.compiled import CompiledForces, CompiledPassWarning, spherical_harmonics_l12
from freecg_md.train.data import collate, structures_from_atoms
from freecg_md.train.loss import loss_fn
from tests.conftest import random_molecule, small_model
from tests.train.conftest import config_for, labelled_set


def test_harmonics_equal_e3nns():
    vectors = torch.randn(200, 3, dtype=torch.float64)
    expected = o3.spherical_harmonics("1x1o+1x2e", vectors, normalize=True,
                                      normalization="norm")
    torch.testing.assert_close(spherical_harmonics_l12(vectors), expected, rtol=0, atol=1e-14)


def _batch():
    """Two labelled molecules and a periodic box, with pairs beyond the cutoff listed too
    (the compiled pass must drop them as the reference does)."""
    atoms = labelled_set(2, seed=7)
    box = random_molecule(8, seed=9, box=5.0, species=(1, 6))
    box.cell, box.pbc = np.diag([5.0, 5.5, 6.0]), True
    box.calc = atoms[0].calc.__class__(box, energy=0.3,
                                       forces=np.random.default_rng(0).normal(size=(8, 3)))
    structures = structures_from_atoms([*atoms, box], cutoff=4.0)
    far = torch.tensor([[0], [1]])  # a pair of the first molecule, listed twice as far apart
    structures[0].edge_index = torch.cat([structures[0].edge_index, far], dim=1)
    batch = collate(structures).to(torch.device("cpu"), torch.float64)
    # Move the extra pair beyond the cutoff with a shift (the first molecule has none).
    batch.shifts[structures[0].edge_index.shape[1] - 1] = torch.tensor([9.0, 0.0, 0.0])
    return batch


def test_compiled_pass_equals_the_reference_with_its_parameter_gradients():
    model = small_model(torch.float64)
    batch = _batch()
    args = (batch.numbers, batch.positions, batch.edge_index, batch.shifts, batch.batch,
            batch.num_graphs)
    results = []
    for compiled in (False, True):
        model.zero_grad()
        if compiled:
            out = CompiledForces(model).energy_and_forces(*args)
        else:
            out = model.energy_and_forces(*args, create_graph=True)
        loss_fn(out["energy"], out["forces"], batch, 0.1, 0.9).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((out["energy"].detach(), out["forces"].detach(), grads))
    (e_ref, f_ref, g_ref), (e_c, f_c, g_c) = results
    torch.testing.assert_close(e_c, e_ref, rtol=0, atol=1e-10)
    torch.testing.assert_close(f_c, f_ref, rtol=0, atol=1e-10)
    assert len(g_c) == len(g_ref) > 0
    for got, expected in zip(g_c, g_ref, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-10)


def test_self_loops_and_large_passes_stay_on_the_reference_path():
    assert not CompiledForces(small_model(self_loops=True)).supports(100)
    compiled = CompiledForces(small_model())
    assert compiled.supports(100) and not compiled.supports(10**9)


def test_training_with_compile_logs_the_same_losses(data_file, tmp_path):
    logs = []
    for compiled in (False, True):
        out = tmp_path / f"run_{compiled}"
        train(config_for(data_file, out, max_epochs=1, dtype="float64", compile=compiled),
              progress=False)
        logs.append((out / "log.csv").read_text().splitlines())
    header = logs[0][0].split(",")
    for row_eager, row_compiled in zip(logs[0][1:], logs[1][1:], strict=True):
        for name, a, b in zip(header, row_eager.split(","), row_compiled.split(","),
                              strict=True):
            if name.endswith("loss") or "mae" in name:
                np.testing.assert_allclose(float(b), float(a), rtol=1e-7, err_msg=name)


def test_the_command_line_compile_flag_sets_the_config(data_file, tmp_path, monkeypatch):
    import json

    import freecg_md.train.__main__ as command

    seen = {}

    def fake_train(config, resume=False, progress=True):
        seen["compile"] = config.compile
        return {}

    monkeypatch.setattr(command, "train", fake_train)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config_for(data_file, tmp_path / "run").to_dict()))
    command.main([str(path)])
    assert seen["compile"] is False
    command.main([str(path), "--compile"])
    assert seen["compile"] is True
    # A config that compiles can be run without compiling, and is otherwise left as it says.
    compiled = config_for(data_file, tmp_path / "run")
    compiled.compile = True
    path.write_text(json.dumps(compiled.to_dict()))
    command.main([str(path)])
    assert seen["compile"] is True
    command.main([str(path), "--no-compile"])
    assert seen["compile"] is False


def _wrong_terms(compiled):
    """Edge terms whose forces are 1 % off, as a miscompiled pass's were."""
    right = compiled._edge_terms_eager

    def wrong(*inputs):
        out, gradient = right(*inputs)
        return out, gradient * 1.01

    return wrong


def test_a_compiled_pass_that_disagrees_is_compiled_again_without_fusion(monkeypatch):
    """A compiled pass whose forces are wrong (as inductor's fused code was for a model
    without group CG) is caught on its first batch and compiled again without kernel
    fusion; where that agrees, training goes on compiled, checked as before."""
    model = small_model(torch.float64)
    batch = _batch()
    args = (batch.numbers, batch.positions, batch.edge_index, batch.shifts, batch.batch,
            batch.num_graphs)
    compiled = CompiledForces(model)
    monkeypatch.setattr(compiled, "_edge_terms", _wrong_terms(compiled))
    asked = []

    def compile_again(fused):
        asked.append(fused)
        return compiled._edge_terms_eager

    monkeypatch.setattr(compiled, "_compile", compile_again)
    with pytest.warns(CompiledPassWarning, match="compiling it again without kernel fusion"):
        out = compiled.energy_and_forces(*args)
    assert asked == [False] and not compiled.fused and compiled.failed is None
    reference = model.energy_and_forces(*args)
    torch.testing.assert_close(out["forces"], reference["forces"], rtol=0, atol=1e-12)
    assert compiled.supports(batch.edge_index.shape[1])
    # torch.compile is asked for no fusion through inductor's options.
    seen = {}
    monkeypatch.setattr(torch, "compile", lambda fn, **options: seen.update(options) or fn)
    CompiledForces(model, check_every=0)._compile(fused=False)
    assert seen == {"dynamic": True, "options": {"max_fusion_size": 1}}


def test_a_compiled_pass_that_disagrees_unfused_too_is_set_aside_for_the_reference(
        monkeypatch):
    """Where the pass compiled without fusion disagrees too: a warning, this batch's
    reference result with its graph, and the reference path from then on."""
    model = small_model(torch.float64)
    batch = _batch()
    args = (batch.numbers, batch.positions, batch.edge_index, batch.shifts, batch.batch,
            batch.num_graphs)
    compiled = CompiledForces(model)
    wrong = _wrong_terms(compiled)
    monkeypatch.setattr(compiled, "_edge_terms", wrong)
    monkeypatch.setattr(compiled, "_compile", lambda fused: wrong)
    assert compiled.supports(batch.edge_index.shape[1])
    with pytest.warns(CompiledPassWarning, match="without kernel fusion too"):
        out = compiled.energy_and_forces(*args)
    reference = model.energy_and_forces(*args, create_graph=True)
    torch.testing.assert_close(out["forces"], reference["forces"], rtol=0, atol=1e-12)
    assert out["forces"].requires_grad  # the loss can be back-propagated
    assert compiled.failed is not None and not compiled.supports(batch.edge_index.shape[1])


class _GradientOff(torch.autograd.Function):
    """The identity forward, 1 % too large backward: right forces, wrong parameter
    gradients, as a miscompiled backward pass would give."""

    @staticmethod
    def forward(ctx, value):
        return value.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 1.01


def test_a_compiled_pass_with_wrong_parameter_gradients_is_caught(monkeypatch):
    model = small_model(torch.float64)
    batch = _batch()
    args = (batch.numbers, batch.positions, batch.edge_index, batch.shifts, batch.batch,
            batch.num_graphs)
    compiled = CompiledForces(model)
    right = compiled._edge_terms_eager

    def wrong_backward(*inputs):
        out, gradient = right(*inputs)
        return out, _GradientOff.apply(gradient)

    monkeypatch.setattr(compiled, "_edge_terms", wrong_backward)
    monkeypatch.setattr(compiled, "_compile", lambda fused: wrong_backward)
    with pytest.warns(CompiledPassWarning, match="parameter gradients differ by up to"):
        out = compiled.energy_and_forces(*args)
    assert compiled.failed is not None and "parameter gradients" in compiled.failed
    # This batch trains on the reference result, whose gradients are right.
    reference = model.energy_and_forces(*args, create_graph=True)
    torch.testing.assert_close(out["forces"], reference["forces"], rtol=0, atol=1e-12)


def test_a_compiled_pass_that_agrees_is_checked_every_so_many_batches(monkeypatch):
    model = small_model(torch.float64)
    batch = _batch()
    args = (batch.numbers, batch.positions, batch.edge_index, batch.shifts, batch.batch,
            batch.num_graphs)
    compiled = CompiledForces(model, check_every=2)
    monkeypatch.setattr(compiled, "_edge_terms", compiled._edge_terms_eager)
    checks = []
    original = model.energy_and_forces

    def counted(*inputs, **options):
        checks.append(options.get("create_graph", False))
        return original(*inputs, **options)

    monkeypatch.setattr(model, "energy_and_forces", counted)
    for _ in range(5):
        compiled.energy_and_forces(*args)
    assert checks == [True, True, True]  # batches 0, 2 and 4, with the graph for gradients
    assert compiled.failed is None
    with pytest.raises(ValueError, match="check_every=-1"):
        CompiledForces(model, check_every=-1)
