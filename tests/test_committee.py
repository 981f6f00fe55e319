"""Committees: the mean is the members' mean, the spread follows its definition, errors."""

import numpy as np
import pytest
import torch

from freecg_md import Committee, FreeCGCalculator, load_committee, save_model
from freecg_md.committee import force_disagreement
from tests.conftest import random_molecule, small_model


def members(n=3, dtype=torch.float64):
    return [small_model(dtype, seed=seed) for seed in range(n)]


def test_the_committee_is_the_mean_of_its_members_and_reports_their_spread():
    models = members()
    atoms = random_molecule(8, seed=4)
    singles = []
    for model in models:
        atoms.calc = FreeCGCalculator(model, dtype="float64")
        singles.append((atoms.get_potential_energy(), atoms.get_forces()))
    atoms.calc = FreeCGCalculator(models, dtype="float64")
    energies = np.array([e for e, _ in singles])
    forces = np.stack([f for _, f in singles])
    assert atoms.get_potential_energy() == pytest.approx(energies.mean(), abs=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), forces.mean(axis=0), atol=1e-10)
    results = atoms.calc.results
    np.testing.assert_allclose(results["energy_comm"], energies, atol=1e-10)
    np.testing.assert_allclose(results["forces_comm"], forces, atol=1e-10)
    assert results["energy_std"] == pytest.approx(energies.std(), abs=1e-10)
    assert results["energy_var"] == pytest.approx(energies.var(), abs=1e-12)
    # Per atom: the root mean square distance of the members' force vectors from their mean.
    expected = np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=-1).mean(axis=0))
    np.testing.assert_allclose(results["forces_std"], expected, atol=1e-10)
    assert results["max_force_std"] == pytest.approx(expected.max())
    assert atoms.calc.get_property("max_force_std", atoms) == results["max_force_std"]
    assert "max_force_std" in atoms.calc.implemented_properties
    assert "max_force_std" not in FreeCGCalculator.implemented_properties


def test_identical_members_agree_exactly_and_one_member_is_a_plain_model(tmp_path):
    model = small_model(torch.float64, seed=5)
    save_model(model, tmp_path / "a.pt")
    committee = load_committee([tmp_path / "a.pt", tmp_path / "a.pt"])
    atoms = random_molecule(6, seed=1)
    atoms.calc = FreeCGCalculator(committee, dtype="float64")
    atoms.get_forces()
    assert atoms.calc.results["max_force_std"] == 0.0
    assert atoms.calc.results["energy_std"] == 0.0
    single = FreeCGCalculator([tmp_path / "a.pt"], dtype="float64")
    assert not isinstance(single.model, Committee)
    assert "forces_std" not in single.implemented_properties


def test_force_disagreement_definition():
    forces = torch.tensor([[[1.0, 0.0, 0.0]], [[-1.0, 0.0, 0.0]]])  # K=2, N=1
    assert force_disagreement(forces).tolist() == [1.0]


def test_committee_members_must_share_cutoff_and_elements():
    with pytest.raises(ValueError, match="at least 2"):
        Committee([small_model()])
    with pytest.raises(ValueError, match=r"members\[1\] has cutoff"):
        Committee([small_model(), small_model(cutoff=3.0)])
    with pytest.raises(TypeError, match=r"members\[1\] is a int"):
        Committee([small_model(), 3])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Committee([small_model(), "no_such_model.pt"])
