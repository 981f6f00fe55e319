"""The training domain in a model file, and the warnings when a system leaves it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule

from freecg_md import FreeCGCalculator, load_model, save_model
from freecg_md.data import load_chignolin
from freecg_md.domain import (
    DomainWatcher,
    OutOfDomainWarning,
    TrainingDomain,
    composition,
    domain_from_structures,
    domain_of_model,
    labels_provenance,
)
from freecg_md.io import model_fingerprint
from freecg_md.md import FreeCGPotential
from tests.conftest import small_model

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "chignolin.pt"
# Trained on classical conformations only: its domain excludes the contacts its own MD made.
CLASSICAL = Path(__file__).resolve().parents[1] / "models" / "chignolin_v1.pt"


def test_the_shipped_model_records_what_it_was_trained_on():
    domain = domain_of_model(load_model(SHIPPED).metadata)
    assert domain.compositions == ["C62H73N11O20"] and domain.elements == [1, 6, 7, 8]
    # The classical conformations and the 624 frames of two rounds of active learning.
    assert domain.n_structures == 5244 and domain.temperatures_K[-1] == 600
    assert "GFN2-xTB" in domain.reference
    assert 0.85 < domain.min_distances["C-H"] < 1.05 and domain.min_distances["H-H"] > 1.0


def test_domain_from_structures_finds_the_shortest_distance_per_pair():
    water = molecule("H2O")
    stretched = water.copy()
    stretched.positions[1] *= 1.2
    domain = domain_from_structures([(w.numbers, w.positions) for w in (water, stretched)])
    o_h = np.linalg.norm(water.positions[1] - water.positions[0])
    assert domain.min_distances["O-H"] == pytest.approx(o_h, abs=1e-4)
    assert domain.compositions == ["H2O"] and composition([8, 1, 1]) == "H2O"
    assert TrainingDomain.from_dict(domain.to_dict()) == domain
    with pytest.raises(ValueError, match="structures is empty"):
        domain_from_structures([])


def test_the_calculator_warns_for_another_composition_and_for_a_close_contact():
    calc = FreeCGCalculator(SHIPPED)
    chignolin = load_chignolin().atoms
    chignolin.calc = calc
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        chignolin.get_potential_energy()  # its own system: quiet
    water = Atoms("OH2", positions=[[0, 0, 0], [0.3, 0, 0], [-0.25, 0.9, 0]])
    water.calc = calc
    with pytest.warns(OutOfDomainWarning) as caught:
        water.get_potential_energy()
    text = " ".join(str(w.message) for w in caught)
    assert "trained on C62H73N11O20" in text and "not on H2O" in text
    assert "(O-H) are 0.300 Å apart, closer than any O-H pair" in text
    # Once per problem, not at every call.
    water.positions[1, 0] = 0.31
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        water.get_potential_energy()


def test_the_calculator_warns_for_a_net_charge_the_model_was_not_trained_on():
    chignolin = load_chignolin().atoms  # info["charge"] = -2, as the labels were made
    chignolin.calc = FreeCGCalculator(SHIPPED)
    assert domain_of_model(chignolin.calc.model.metadata).charges == [-2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        chignolin.get_potential_energy()
        del chignolin.info["charge"]  # not stated: nothing to check
        chignolin.positions[0, 0] += 1e-3
        chignolin.get_potential_energy()
    chignolin.info["charge"] = 0
    chignolin.positions[0, 0] += 1e-3
    with pytest.warns(OutOfDomainWarning, match="net charge is 0 but the model was trained "
                                                "on net charge -2 only"):
        chignolin.get_potential_energy()


def test_charges_are_compared_as_whole_numbers_and_warned_once_per_value():
    domain = TrainingDomain([1, 8], ["H2O"], {}, 3.0, charges=[-2])
    watcher = DomainWatcher(domain, [8, 1, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        for same in (-2, -2.0, np.float64(-2.0000000001), np.array([-2]), None):
            watcher.check_charge(same)
    with pytest.warns(OutOfDomainWarning) as caught:
        for other in (0, 0.0, np.int64(0), "0", "neutral", "neutral"):
            watcher.check_charge(other)
    assert [str(w.message).split(" but")[0] for w in caught] == [
        "the system's net charge is 0", "the system's net charge is neutral"]
    # A file from a later version, with a field this one does not know, still loads.
    later = {**domain.to_dict(), "spin_multiplicities": [1], "charges": [-2.0]}
    assert TrainingDomain.from_dict(later) == domain


def test_labels_provenance_reads_temperature_method_and_charge():
    infos = [{"temperature": 300.0, "method": "GFN2-xTB/ALPB(water), charge -2 (tblite)"},
             {"temperature": 450, "method": "GFN2-xTB/ALPB(water), charge -2 (tblite)"},
             {"temperature": 300.0, "charge": 1.0, "method": "other"}]
    assert labels_provenance(infos) == {
        "temperatures_K": [300.0, 450.0], "charges": [-2, 1],
        "reference": "GFN2-xTB/ALPB(water), charge -2 (tblite); other"}
    assert labels_provenance([{}, {"energy": 1.0}]) == {}


def test_the_md_potential_warns_and_a_model_without_a_domain_is_quiet(tmp_path):
    ethanol = molecule("CH3CH2OH")
    with pytest.warns(OutOfDomainWarning, match="not on C2H6O"):
        FreeCGPotential(SHIPPED, ethanol.numbers)
    plain = save_model(small_model(), tmp_path / "plain.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        DomainWatcher(domain_of_model(load_model(plain).metadata), ethanol.numbers)
        FreeCGCalculator(plain).get_potential_energy(
            Atoms(ethanol.numbers[:4], ethanol.positions[:4]))


def test_recording_a_domain_keeps_the_weights_fingerprint(tmp_path):
    from freecg_md.domain import main

    path = save_model(small_model(), tmp_path / "m.pt", metadata={"note": "kept"})
    before = model_fingerprint(path)
    data = tmp_path / "data.extxyz"
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    water = molecule("H2O")
    water.calc = SinglePointCalculator(water, energy=-1.0, forces=np.zeros((3, 3)))
    write(data, [water])
    assert main([str(path), str(data), "--reference", "test"]) == 0
    model = load_model(path)
    assert model.metadata["note"] == "kept"
    assert domain_of_model(model.metadata).compositions == ["H2O"]
    assert model_fingerprint(path) == before


def test_a_new_bond_in_a_running_system_warns():
    """A hydrogen pulled onto an oxygen it is not bonded to (a conformation of
    chignolin_v1.pt's own MD at 300 K): a calculator of that model, which never saw such a
    contact, warns when it started from the native structure."""
    import ase.io

    domain = domain_of_model(load_model(CLASSICAL).metadata)
    assert 1.2 < domain.min_nonbonded_ratio < 1.5
    conformations = Path(__file__).resolve().parents[1] / "docs" / "results" / \
        "active_learning" / "probe_300K_v1.extxyz.gz"
    unfolded = next(a for a in ase.io.read(conformations, ":")
                    if a.info["run"] == "run r3" and a.info["basin"] == "unfolded")
    chignolin = load_chignolin().atoms
    chignolin.calc = FreeCGCalculator(CLASSICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutOfDomainWarning)
        chignolin.get_potential_energy()
    chignolin.positions = unfolded.positions
    with pytest.warns(OutOfDomainWarning, match=r"\(O-H\), not bonded in the first structure"):
        chignolin.get_potential_energy()
