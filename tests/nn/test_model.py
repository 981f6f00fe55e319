"""Physics of the FreeCG model: symmetries, forces, batching, smoothness, configuration."""

import math

import numpy as np
import pytest
import torch
from e3nn import o3

from freecg_md import FreeCG, FreeCGConfig
from tests.conftest import full_edges, random_molecule, small_model


def evaluate(model, atoms, positions=None):
    dtype = next(model.parameters()).dtype
    pos = torch.as_tensor(atoms.positions if positions is None else positions, dtype=dtype)
    out = model.energy_and_forces(torch.as_tensor(atoms.numbers), pos, full_edges(len(atoms)))
    return out["energy"].item(), out["forces"].detach().double().numpy()


TOL = {
    torch.float32: dict(energy=2e-5, forces=2e-4),
    torch.float64: dict(energy=1e-10, forces=1e-9),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("parity", [1, -1], ids=["rotation", "rotoreflection"])
def test_energy_invariant_forces_equivariant(dtype, parity):
    model = small_model(dtype)
    atoms = random_molecule(14, seed=4)
    energy, forces = evaluate(model, atoms)
    for trial in range(3):
        rotation = (o3.rand_matrix(dtype=torch.float64) * parity).numpy()
        translation = np.random.default_rng(trial).normal(size=3) * 10
        moved = atoms.positions @ rotation.T + translation
        energy2, forces2 = evaluate(model, atoms, moved)
        scale = max(1.0, abs(energy))
        assert abs(energy2 - energy) < TOL[dtype]["energy"] * scale * len(atoms)
        np.testing.assert_allclose(forces2, forces @ rotation.T, atol=TOL[dtype]["forces"])


def test_forces_not_trivially_zero_and_sum_to_zero(model64):
    energy, forces = evaluate(model64, random_molecule(10, seed=5))
    assert np.abs(forces).max() > 1e-3
    np.testing.assert_allclose(forces.sum(axis=0), 0.0, atol=1e-10)


def test_reflection_changes_nothing_for_a_mirror_image_pair(model64):
    # Sanity check that the model is not invariant to everything: a different molecule
    # (atoms permuted without permuting elements) has a different energy.
    atoms = random_molecule(10, seed=6, species=(1, 6, 8))
    energy, _ = evaluate(model64, atoms)
    shuffled = atoms.copy()
    shuffled.numbers = np.roll(atoms.numbers, 1)
    if (shuffled.numbers != atoms.numbers).any():
        assert abs(evaluate(model64, shuffled)[0] - energy) > 1e-6


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_permutation_invariance(dtype):
    model = small_model(dtype)
    atoms = random_molecule(12, seed=7)
    energy, forces = evaluate(model, atoms)
    order = np.random.default_rng(0).permutation(len(atoms))
    permuted = atoms[order]
    energy2, forces2 = evaluate(model, permuted)
    assert abs(energy2 - energy) < TOL[dtype]["energy"] * max(1, abs(energy)) * len(atoms)
    np.testing.assert_allclose(forces2, forces[order], atol=TOL[dtype]["forces"])


def test_forces_match_finite_differences(model64):
    atoms = random_molecule(8, seed=8)
    _, forces = evaluate(model64, atoms)
    eps = 1e-5
    numerical = np.zeros_like(forces)
    for a in range(len(atoms)):
        for c in range(3):
            plus = atoms.positions.copy()
            minus = atoms.positions.copy()
            plus[a, c] += eps
            minus[a, c] -= eps
            numerical[a, c] = -(
                evaluate(model64, atoms, plus)[0] - evaluate(model64, atoms, minus)[0]
            ) / (2 * eps)
    np.testing.assert_allclose(forces, numerical, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("use_group_cg", [True, False])
def test_batch_equals_single(use_group_cg):
    model = small_model(torch.float64, use_group_cg=use_group_cg)
    molecules = [random_molecule(n, seed=10 + n) for n in (5, 9, 7)]
    singles = [evaluate(model, m) for m in molecules]
    numbers, positions, edges, batch, offset = [], [], [], [], 0
    for index, m in enumerate(molecules):
        numbers.append(torch.as_tensor(m.numbers))
        positions.append(torch.as_tensor(m.positions))
        edges.append(full_edges(len(m)) + offset)
        batch.append(torch.full((len(m),), index))
        offset += len(m)
    out = model.energy_and_forces(
        torch.cat(numbers),
        torch.cat(positions),
        torch.cat(edges, dim=1),
        batch=torch.cat(batch),
        num_graphs=len(molecules),
    )
    forces = out["forces"].detach().numpy()
    start = 0
    for index, (energy, single_forces) in enumerate(singles):
        assert abs(out["energy"][index].item() - energy) < 1e-10
        np.testing.assert_allclose(
            forces[start : start + len(molecules[index])], single_forces, atol=1e-10
        )
        start += len(molecules[index])


def test_energy_smooth_when_an_atom_crosses_the_cutoff(model64):
    """Energy and force are continuous as a third atom crosses r_c of another."""
    cutoff = model64.cutoff
    base = np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0]])
    numbers = np.array([6, 8, 1])
    from ase import Atoms

    distances = cutoff + np.linspace(-0.02, 0.02, 81)  # third atom's distance to atom 0
    energies, forces = [], []
    for d in distances:
        atoms = Atoms(numbers=numbers, positions=np.vstack([base, [-d, 0.0, 0.0]]))
        e, f = evaluate(model64, atoms)
        energies.append(e)
        forces.append(f[2, 0])
    energies, forces = np.array(energies), np.array(forces)
    step = distances[1] - distances[0]
    # Continuity: neighbouring samples differ by no more than a smooth function's slope allows.
    max_slope = np.abs(np.diff(energies)).max() / step
    assert max_slope < 1e-3, max_slope
    assert np.abs(np.diff(forces)).max() < 1e-3
    # And the interaction is really there inside the cutoff.
    inner = Atoms(numbers=numbers, positions=np.vstack([base, [-(cutoff - 1.0), 0, 0]]))
    outer = Atoms(numbers=numbers, positions=np.vstack([base, [-(cutoff + 1.0), 0, 0]]))
    assert abs(evaluate(model64, inner)[0] - evaluate(model64, outer)[0]) > 1e-4


def test_pairs_beyond_cutoff_are_ignored(model64):
    atoms = random_molecule(10, seed=12, box=9.0)
    pos = torch.as_tensor(atoms.positions)
    z = torch.as_tensor(atoms.numbers)
    all_pairs = full_edges(len(atoms))
    d = (pos[all_pairs[1]] - pos[all_pairs[0]]).norm(dim=1)
    inside = all_pairs[:, d < model64.cutoff]
    assert inside.shape[1] < all_pairs.shape[1]  # some pairs really are outside
    e_all = model64(z, pos, all_pairs).item()
    e_inside = model64(z, pos, inside).item()
    assert abs(e_all - e_inside) < 1e-12


def test_a_pair_of_zero_length_is_refused_on_every_path(model64):
    """An atom listed with itself (as cdist(r, r) < cutoff gives) or two atoms at one place
    have no direction: refused by name, on the reference layers and on the frozen fused
    path alike (they counted it as a neighbour, and returned NaN)."""
    atoms = random_molecule(6, seed=2)
    pos = torch.as_tensor(atoms.positions)
    z = torch.as_tensor(atoms.numbers)
    with_self = torch.cat([full_edges(6), torch.tensor([[2], [2]])], dim=1)
    frozen = small_model(torch.float64).requires_grad_(False)
    for model in (model64, frozen):
        with pytest.raises(ValueError, match=r"1 pair\(s\) at zero distance, e.g. \[\[2, 2\]\]"):
            model.energy_and_forces(z, pos, with_self)
    on_top = pos.clone()
    on_top[1] = on_top[0]
    with pytest.raises(ValueError, match="2 pair.* at zero distance"):
        model64.energy_and_forces(z, on_top, full_edges(6))
    lost = pos.clone()
    lost[4, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite pair distances"):
        model64.energy_and_forces(z, lost, full_edges(6))


def test_reference_settings_train_on_an_atom_without_neighbours():
    """The reference head has no epsilon under its norms: an atom with no neighbour (its
    vectors stay zero) must leave every parameter gradient of a force loss finite."""
    torch.manual_seed(0)
    model = FreeCG.reference(hidden=16, num_layers=2, num_heads=2, num_groups=2).double()
    atoms = random_molecule(4, seed=5)
    pos = torch.as_tensor(atoms.positions)
    pos[3] = torch.tensor([50.0, 50.0, 50.0])  # far beyond the cutoff of every other atom
    out = model.energy_and_forces(torch.as_tensor(atoms.numbers), pos, full_edges(4),
                                  create_graph=True)
    (out["energy"].sum() + (out["forces"] ** 2).sum()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)


def test_group_cg_ablation_is_a_different_smaller_model():
    full = FreeCG(hidden=32, num_layers=2, num_heads=4, num_groups=4)
    ablated = FreeCG(hidden=32, num_layers=2, num_heads=4, num_groups=4, use_group_cg=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(ablated) == 2 * 4 * 4 * 8**3
    assert all(layer.group_cg is None for layer in ablated.layers)


def test_default_model_is_small_md_size():
    model = FreeCG()
    assert (model.config.hidden, model.config.num_layers, model.config.num_groups) == (128, 4, 16)
    assert model.layers[0].shuffle == 24  # 1.5 G
    assert torch.get_default_dtype() == torch.float32


def test_energy_standardisation_applies_per_element_energies(model64):
    atoms = random_molecule(6, seed=13, species=(1, 6))
    energy, forces = evaluate(model64, atoms)
    model64.set_energy_standardisation({1: -13.6, 6: -1000.0}, scale=1.0, shift=0.5)
    energy2, forces2 = evaluate(model64, atoms)
    n_h = (atoms.numbers == 1).sum()
    n_c = (atoms.numbers == 6).sum()
    assert energy2 - energy == pytest.approx(-13.6 * n_h - 1000.0 * n_c + 0.5 * len(atoms))
    np.testing.assert_allclose(forces2, forces, atol=1e-12)


def test_float32_model_keeps_float64_reference_energies():
    model = small_model(torch.float32)
    model.set_energy_standardisation({6: -1000.123456789}, scale=1.0, shift=0.0)
    model = model.float()
    assert model.atomic_energies.dtype == torch.float64
    assert model.atomic_energies[1].item() == -1000.123456789


@pytest.mark.parametrize(
    "bad",
    [
        dict(hidden=30, num_heads=4),
        dict(num_groups=5),
        dict(cutoff=-1.0),
        dict(species=(1, 1)),
        dict(num_layers=0),
    ],
)
def test_invalid_config_is_refused(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        FreeCGConfig(**bad)


def test_config_json_round_trip_and_unknown_keys():
    config = FreeCGConfig(hidden=64, num_groups=8)
    assert FreeCGConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown FreeCG config keys"):
        FreeCGConfig.from_dict({**config.to_dict(), "lmax": 3})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radial_basis_has_no_subnormal_values(dtype):
    """Subnormal operands slowed the next linear map 5x on a CPU, and exp with results
    below the normal range 100x; the basis flushes both."""
    from freecg_md.nn.radial import ExpNormalBasis

    basis = ExpNormalBasis(5.0, 32).to(dtype)
    distances = torch.linspace(0.0, 5.5, 20001, dtype=dtype)
    values = basis(distances)
    tiny = torch.finfo(dtype).tiny
    assert not ((values != 0) & (values.abs() < tiny)).any()
    # Only values below e^8 times the smallest normal number changed (3.5e-35 in float32):
    # the rest equal the formula.
    d = distances.unsqueeze(-1)
    raw = torch.exp(-basis.betas * (torch.exp(-basis.alpha * d) - basis.means) ** 2)
    raw = raw * basis.cutoff_fn(d)
    assert (values - raw).abs().max() < tiny * math.exp(8.0)
    values_again, _ = basis.with_derivative(distances)
    torch.testing.assert_close(values_again, values)
    if dtype == torch.float32:  # the flush did something here
        assert ((raw != 0) & (raw.abs() < tiny)).any()
