"""The reduced-precision mode (freecg_md/nn/precision.py): off by default, bfloat16 products
in the runs of the interaction layers on a frozen CPU model, close to float32 but not equal,
torch's settings restored, and clear errors where the mode does not apply."""

import copy

import numpy as np
import pytest
import torch
from ase.build import molecule

from freecg_md import FreeCG, FreeCGCalculator
from freecg_md.neighbors import build_neighbor_list
from freecg_md.nn.precision import cpu_has_bfloat16, matmul_precision

needs_bf16 = pytest.mark.skipif(not cpu_has_bfloat16(),
                                reason="this CPU has no bfloat16 units (AMX, AVX512-BF16)")


def _model(**overrides):
    torch.manual_seed(0)
    return FreeCG(species=(1, 6, 7, 8), hidden=64, num_layers=2, num_groups=8,
                  **overrides).requires_grad_(False)


def _call(model, atoms):
    neighbors = build_neighbor_list(atoms.positions, model.cutoff)
    return model.energy_and_forces(
        torch.tensor(atoms.numbers), torch.tensor(atoms.positions, dtype=torch.float32),
        torch.as_tensor(neighbors.edge_index))


@pytest.fixture
def peptide():
    atoms = molecule("CH3CH2NH2")
    atoms.positions += np.random.default_rng(0).normal(0, 0.05, atoms.positions.shape)
    return atoms


def test_float32_is_the_default_and_changes_nothing(peptide):
    model = _model()
    assert model.matmul_precision == "float32"
    before = _call(model, peptide)
    assert model.last_plan.matmul_precision == "float32"
    assert "bfloat16" not in model.last_plan.describe()
    again = _call(model, peptide)
    torch.testing.assert_close(before["forces"], again["forces"], rtol=0, atol=0)


@needs_bf16
@pytest.mark.parametrize("threads", [1, 2])
def test_bfloat16_products_are_close_to_float32_and_settings_come_back(peptide, threads):
    model = _model()
    model.edge_chunk_size = 8  # several runs: the threaded path as well as a whole pass
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        reference = _call(model, peptide)
        model.matmul_precision = "bfloat16"
        reduced = _call(model, peptide)
    finally:
        torch.set_num_threads(previous)
    assert model.last_plan.kernels == "fused-cpu" and model.last_plan.n_runs > 1
    assert model.last_plan.matmul_precision == "bfloat16"
    assert "bfloat16 products in the interaction layers" in model.last_plan.describe()
    # The mode is on (the results move) but small next to the forces themselves.
    difference = (reduced["forces"] - reference["forces"]).abs()
    scale = reference["forces"].abs().mean()
    assert difference.max() > 0
    assert difference.mean() < 0.02 * scale
    assert abs(float(reduced["energy"].detach() - reference["energy"].detach())) < (
        1e-2 * len(peptide))
    assert torch.backends.mkldnn.matmul.fp32_precision == "none"


@needs_bf16
def test_the_setting_comes_back_after_an_error():
    with pytest.raises(RuntimeError, match="inside"):
        with matmul_precision("bfloat16", "cpu"):
            assert torch.backends.mkldnn.matmul.fp32_precision == "bf16"
            raise RuntimeError("inside")
    assert torch.backends.mkldnn.matmul.fp32_precision == "none"


def test_modes_that_do_not_apply_are_refused(peptide):
    model = _model()
    model.matmul_precision = "half"
    with pytest.raises(ValueError, match="matmul_precision='half': expected one of"):
        _call(model, peptide)
    model.matmul_precision = "tf32"
    with pytest.raises(ValueError, match="'tf32' is a CUDA mode"):
        _call(model, peptide)
    # The mode lives on the fused CPU path only: a trainable model runs torch operations.
    trainable = _model().requires_grad_(True)
    trainable.matmul_precision = "bfloat16"
    if cpu_has_bfloat16():
        with pytest.raises(ValueError, match="needs the frozen model's fused CPU path"):
            _call(trainable, peptide)
    with pytest.raises(ValueError, match="need dtype='float32'"):
        FreeCGCalculator(model, dtype="float64", matmul_precision="bfloat16")


@needs_bf16
def test_the_calculator_sets_the_mode_on_its_own_copy(peptide):
    model = _model()
    original = copy.deepcopy(model)
    atoms = peptide.copy()
    atoms.calc = FreeCGCalculator(model, matmul_precision="bfloat16")
    forces = atoms.get_forces()
    assert model.matmul_precision == "float32"  # the caller's model is untouched
    assert atoms.calc.model.matmul_precision == "bfloat16"
    assert forces.dtype == np.float64
    expected = FreeCGCalculator(original).get_forces(peptide.copy())
    assert 0 < np.abs(forces - expected).max() < 0.05 * np.abs(expected).mean() + 1e-3


@needs_bf16
def test_the_md_potential_passes_the_mode_to_its_worker_processes(peptide):
    from freecg_md.md import FreeCGPotential

    model = _model()
    positions = torch.tensor(np.stack([peptide.positions] * 2))
    forces = {}
    for precision in ("float32", "bfloat16"):
        potential = FreeCGPotential(model, peptide.numbers, workers=2,
                                    matmul_precision=precision)
        try:
            forces[precision] = potential.evaluate(positions)[1]
            description = potential.execution(positions[0], 2)["description"]
        finally:
            potential.close()
        assert ("bfloat16 products" in description) == (precision == "bfloat16")
    difference = (forces["bfloat16"] - forces["float32"]).abs()
    assert 0 < difference.max() and difference.mean() < 0.02 * forces["float32"].abs().mean()
    assert model.matmul_precision == "float32"
    with pytest.raises(ValueError, match="need dtype='float32'"):
        FreeCGPotential(model, peptide.numbers, dtype="float64", matmul_precision="bfloat16")
