"""freecg_md.analysis.scoring: the refusals of its set builders (the figures themselves are
checked against the training code's metrics in test_scripts.py)."""

from __future__ import annotations

import json

import ase.io
import pytest
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

from freecg_md.analysis.scoring import add_named_sets, round_sets, run_structures
from freecg_md.data.molecules import load_chignolin
from freecg_md.train import TrainConfig


@pytest.fixture
def config(tmp_path):
    frame = load_chignolin().atoms.copy()
    frame.calc = EMT()
    energy, forces = frame.get_potential_energy(), frame.get_forces()
    frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
    for name in ("classical", "own_md"):
        ase.io.write(tmp_path / f"{name}.extxyz", [frame, frame])
    (tmp_path / "config.json").write_text(json.dumps(
        {"data": ["classical.extxyz", "own_md.extxyz"], "output_dir": "run",
         "model": {"cutoff": 4.0}}))
    return TrainConfig.from_json(tmp_path / "config.json")


def test_run_structures_refuses_an_origin_cut_outside_the_data_and_a_run_without_split(
        config, tmp_path):
    for own_md_from in (0, 2):
        with pytest.raises(ValueError, match=f"own_md_from={own_md_from}: expected 1 to 1"):
            run_structures(config, own_md_from)
    with pytest.raises(FileNotFoundError, match="split.json is missing"):
        run_structures(config, 1)


def test_round_sets_wants_a_fine_tune_and_named_sets_new_names(config, tmp_path):
    with pytest.raises(ValueError, match="no init_from"):
        round_sets(config, None)
    sets: dict[str, list] = {"taken": []}
    add_named_sets(sets, [("new", tmp_path / "own_md.extxyz")], cutoff=4.0)
    assert len(sets["new"]) == 2
    with pytest.raises(ValueError, match="'taken': that name is taken"):
        add_named_sets(sets, [("taken", tmp_path / "own_md.extxyz")], cutoff=4.0)
