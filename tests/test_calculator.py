"""The ASE calculator: ASE's contract, the neighbour cache, periodic cells, bad input."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.fd import calculate_numerical_forces

from freecg_md import FreeCG, FreeCGCalculator, save_model
from tests.conftest import random_molecule, small_model


@pytest.fixture
def calc64():
    return FreeCGCalculator(small_model(torch.float64), dtype="float64")


def test_contract_properties_units_and_types(calc64):
    assert FreeCGCalculator.implemented_properties == (
        "energy",
        "free_energy",
        "energies",
        "forces",
    )
    atoms = random_molecule(9, seed=1)
    atoms.calc = calc64
    energy = atoms.get_potential_energy()
    assert isinstance(energy, float)
    assert atoms.get_potential_energy(force_consistent=True) == energy
    energies = atoms.get_potential_energies()
    forces = atoms.get_forces()
    assert energies.dtype == np.float64 and energies.shape == (9,)
    assert forces.dtype == np.float64 and forces.shape == (9, 3)
    assert energies.sum() == pytest.approx(energy, abs=1e-9)


def test_results_are_cached_until_atoms_change(calc64):
    atoms = random_molecule(6, seed=2)
    atoms.calc = calc64
    calls = []
    original = calc64.model.energy_and_forces
    calc64.model.energy_and_forces = lambda *a, **k: calls.append(1) or original(*a, **k)
    atoms.get_potential_energy()
    atoms.get_forces()
    assert len(calls) == 1
    atoms.positions[0, 0] += 0.01
    atoms.get_forces()
    assert len(calls) == 2
    atoms.numbers[0] = 1 if atoms.numbers[0] != 1 else 6
    atoms.get_forces()
    assert len(calls) == 3


def test_forces_match_finite_differences(calc64):
    atoms = random_molecule(7, seed=3)
    atoms.calc = calc64
    numerical = calculate_numerical_forces(atoms, eps=1e-5)
    np.testing.assert_allclose(atoms.get_forces(), numerical, atol=1e-6)


@pytest.mark.parametrize("skin", [0.0, 0.5, 2.0])
def test_cached_neighbours_give_fresh_results_along_a_random_walk(skin):
    model = small_model(torch.float64)
    cached = FreeCGCalculator(model, dtype="float64", skin=skin)
    fresh = FreeCGCalculator(model, dtype="float64", skin=0.0)
    # Dense: a jittered lattice of 150 atoms 1.4 Å apart, ~90 neighbours within the 4 Å
    # cutoff, far over the 32 that the reference code keeps.
    rng = np.random.default_rng(4)
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in (5, 5, 6)], indexing="ij"), -1)
    positions = 1.4 * grid.reshape(-1, 3) + rng.normal(scale=0.05, size=(150, 3))
    atoms = Atoms(numbers=rng.choice([1, 6, 8], 150), positions=positions)
    n_steps = 12
    for _ in range(n_steps):
        atoms.positions += rng.normal(scale=0.04, size=(150, 3))
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = cached, fresh
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-9)
        np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-9)
    if skin > 0:
        assert cached.neighbor_stats["reuses"] > 0
    else:
        assert cached.neighbor_stats == {"builds": n_steps, "reuses": 0}


def test_periodic_supercell_is_extensive(calc64):
    rng = np.random.default_rng(5)
    cell = np.array([[4.5, 0.0, 0.0], [0.8, 4.2, 0.0], [0.3, 0.4, 4.8]])
    atoms = Atoms(numbers=rng.choice([1, 6, 8], 6), cell=cell, pbc=True)
    atoms.set_scaled_positions(rng.uniform(0, 1, (6, 3)))
    atoms.calc = calc64
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    supercell = atoms.repeat((2, 1, 3))
    supercell.calc = FreeCGCalculator(calc64.model, dtype="float64")
    assert supercell.get_potential_energy() == pytest.approx(6 * energy, rel=1e-9)
    np.testing.assert_allclose(supercell.get_forces()[:6], forces, atol=1e-9)
    # Translating every atom by a lattice vector changes nothing.
    shifted = atoms.copy()
    shifted.positions[2] += cell[1]
    shifted.calc = FreeCGCalculator(calc64.model, dtype="float64")
    assert shifted.get_potential_energy() == pytest.approx(energy, abs=1e-9)


def test_float32_and_float64_agree():
    model = small_model(torch.float64)
    atoms = random_molecule(10, seed=6)
    a, b = atoms.copy(), atoms.copy()
    a.calc = FreeCGCalculator(model, dtype="float64")
    b.calc = FreeCGCalculator(small_model(torch.float64), dtype="float32")
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-4)
    np.testing.assert_allclose(a.get_forces(), b.get_forces(), atol=1e-4)


def test_global_torch_state_untouched(tmp_path):
    before = (torch.get_default_dtype(), torch.is_grad_enabled())
    path = save_model(small_model(), tmp_path / "m.pt")
    atoms = random_molecule(5, seed=7)
    atoms.calc = FreeCGCalculator(path, dtype="float64")
    with torch.no_grad():
        atoms.get_forces()  # forces work even inside a no_grad block
    assert (torch.get_default_dtype(), torch.is_grad_enabled()) == before


def test_loads_from_path(tmp_path):
    model = small_model()
    path = save_model(model, tmp_path / "m.pt")
    atoms = random_molecule(5, seed=8)
    a, b = atoms.copy(), atoms.copy()
    a.calc = FreeCGCalculator(str(path))
    b.calc = FreeCGCalculator(model)
    assert a.get_potential_energy() == b.get_potential_energy()


def test_single_atom_and_isolated_atoms_have_zero_force(calc64):
    atoms = Atoms("CO", positions=[[0, 0, 0], [20, 0, 0]])
    atoms.calc = calc64
    np.testing.assert_array_equal(atoms.get_forces(), 0.0)


def test_unknown_element_is_named(calc64):
    atoms = Atoms("CFe", positions=[[0, 0, 0], [2, 0, 0]])
    atoms.calc = calc64
    with pytest.raises(ValueError, match="Fe.*not trained on.*knows H, C, N, O, S"):
        atoms.get_potential_energy()


def test_nan_positions(calc64):
    atoms = random_molecule(4, seed=9)
    atoms.positions[2, 1] = np.nan
    atoms.calc = calc64
    with pytest.raises(ValueError, match=r"NaN or infinite positions \(atom indices \[2\]\)"):
        atoms.get_forces()


def test_empty_atoms(calc64):
    atoms = Atoms()
    atoms.calc = calc64
    with pytest.raises(ValueError, match="empty"):
        atoms.get_potential_energy()


def test_overlapping_atoms(calc64):
    atoms = Atoms("CCO", positions=[[0, 0, 0], [1.5, 0, 0], [1.5, 0.01, 0]])
    atoms.calc = calc64
    with pytest.raises(ValueError, match="atoms 1 and 2 overlap|atoms 2 and 1 overlap"):
        atoms.get_potential_energy()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(dtype="float16"), "dtype='float16'"),
        (dict(dtype="double"), "expected 'float32' or 'float64'"),
        (dict(device="gpu0"), "device='gpu0'"),
        (dict(device="cuda:7"), "cuda:7"),
        (dict(skin=-0.5), "skin"),
    ],
)
def test_bad_arguments(kwargs, match):
    if "cuda" in str(kwargs.get("device", "")) and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    with pytest.raises(ValueError, match=match):
        FreeCGCalculator(small_model(), **kwargs)


def test_bad_model_argument():
    with pytest.raises(TypeError, match="expected a FreeCG"):
        FreeCGCalculator(torch.nn.Linear(2, 2))


def test_ase_langevin_runs_with_the_calculator():
    from ase import units
    from ase.md.langevin import Langevin
    try:  # ASE 3.29 deprecates MaxwellBoltzmannDistribution for thermalize_momenta
        from ase.md.velocitydistribution import thermalize_momenta
    except ImportError:
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize_momenta

    atoms = random_molecule(8, seed=10)
    atoms.calc = FreeCGCalculator(small_model(torch.float64), dtype="float64")
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = Langevin(
        atoms,
        0.5 * units.fs,
        temperature_K=300,
        friction=0.01 / units.fs,
        fixcm=False,
        rng=np.random.default_rng(1),
    )
    dyn.run(5)
    assert np.all(np.isfinite(atoms.positions))
    assert atoms.calc.neighbor_stats["reuses"] >= 4


def test_callers_model_is_not_converted_in_place():
    model = small_model(torch.float32)
    calc64 = FreeCGCalculator(model, dtype="float64")
    calc32 = FreeCGCalculator(model, dtype="float32")
    assert next(model.parameters()).dtype == torch.float32
    # A trainable model is copied and frozen (inference needs no parameter gradients);
    # the caller's keeps its gradients. A frozen model in the right dtype is used as is.
    assert calc32.model is not model and calc64.model is not model
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in calc32.model.parameters())
    frozen = small_model(torch.float32).requires_grad_(False)
    assert FreeCGCalculator(frozen, dtype="float32").model is frozen
    atoms = random_molecule(6, seed=11)
    a, b = atoms.copy(), atoms.copy()
    a.calc, b.calc = calc32, calc64
    assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-4)


def test_compiled_network_equals_eager_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = FreeCG(hidden=16, num_layers=2, num_heads=2, num_groups=2, num_basis=8,
                   cutoff=4.0)
    eager, compiled = (FreeCGCalculator(model, dtype="float64", compile=flag)
                       for flag in (False, True))
    assert model._compiled_network is None and compiled.model._compiled_network is not None
    # On a CPU the fused kernels take precedence over compiled code; without them (as on a
    # GPU) the compiled network runs.
    compiled.model.fused_kernels = False
    rng = np.random.default_rng(4)
    atoms = random_molecule(12, seed=1)
    for n_atoms in (12, 9):  # another atom and edge count reuses the dynamic-shape code
        probe = atoms[:n_atoms].copy()
        probe.positions += rng.normal(scale=0.1, size=probe.positions.shape)
        results = []
        for calc in (eager, compiled):
            probe.calc = calc
            results.append((probe.get_potential_energy(), probe.get_forces()))
        assert abs(results[0][0] - results[1][0]) < 1e-10
        np.testing.assert_allclose(results[1][1], results[0][1], rtol=0, atol=1e-10)


def test_compiled_runs_equal_eager_runs():
    """With edges in runs (as a chignolin on a CPU), compile=True compiles each layer's run
    update; energies and forces stay those of the eager runs."""
    torch.manual_seed(0)
    model = FreeCG(hidden=16, num_layers=2, num_heads=2, num_groups=2, num_basis=8,
                   cutoff=4.0)
    model.edge_chunk_size = 4  # runs from 17 edges on
    eager, compiled = (FreeCGCalculator(model, dtype="float64") for _ in range(2))
    # The calculator's compile=True is compile_network() with inductor; the cheaper
    # aot_eager backend traces the same code, forward and backward (inductor took minutes
    # here, and the whole-network test above already runs it).
    compiled.model.compile_network(backend="aot_eager")
    compiled.model.fused_kernels = False  # they would take precedence on a CPU
    assert all(layer._compiled_update is None for layer in model.layers)
    calls = []
    for layer in compiled.model.layers:
        def counting(*args, _inner=layer._compiled_update):
            calls.append(1)
            return _inner(*args)
        layer._compiled_update = counting
    atoms = random_molecule(12, seed=1)
    results = []
    for calc in (eager, compiled):
        probe = atoms.copy()
        probe.calc = calc
        results.append((probe.get_potential_energy(), probe.get_forces()))
    assert calls, "the compiled run update was not used"
    assert abs(results[0][0] - results[1][0]) < 1e-10
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=0, atol=1e-10)


def test_the_readme_ase_example_runs_without_warnings(monkeypatch):
    """The README's snippets of the calculator and of ASE's Langevin dynamics, as written
    but for a few steps: no FutureWarning, no domain warning, no guard stops them."""
    import re
    import warnings
    from pathlib import Path

    repository = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repository)  # the snippets name models/chignolin.pt
    readme = (repository / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    quick_start = next(b for b in blocks if "shipped_model(\"chignolin\")" in b)
    dynamics = next(b for b in blocks if "DynamicsGuard" in b)
    code = (quick_start + dynamics).replace("dynamics.run(1000)", "dynamics.run(3)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["atoms"].calc.results["forces"].shape == (166, 3)
