"""Harvesting MD frames for labelling, and ranking them by a committee's disagreement."""

import numpy as np
import pytest
import torch

from freecg_md import save_model
from freecg_md.data.harvest import (
    committee_disagreement,
    harvest_frames,
    main,
    save_harvest,
    select_frames,
)
from freecg_md.md import FreeCGPotential, ReplicaState, RunConfig, run_replicas
from tests.conftest import random_molecule, small_model


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    atoms = random_molecule(6, seed=2)
    potential = FreeCGPotential(small_model(torch.float64), atoms.numbers, dtype="float64")
    config = RunConfig(temperatures=[300.0, 400.0], n_steps=40, output_dir=str(directory),
                       timestep_fs=0.5, report_interval=4, checkpoint_interval=40, seed=1,
                       dtype="float64")
    run_replicas(potential, ReplicaState.from_atoms(atoms, 2), config, progress=False)
    return directory


def test_frames_are_taken_at_the_spacing_from_every_replica(run_dir, tmp_path):
    # Frames every 2 fs (4 steps of 0.5 fs), 20 fs in all: 10 frames per replica.
    frames = harvest_frames([run_dir], spacing_ps=0.005, discard_ps=0.004)
    per_replica = [frames["time_ps"][frames["replica"] == r] for r in range(2)]
    for times in per_replica:
        np.testing.assert_allclose(np.diff(times), 0.006)  # 3 frames of 2 fs
        assert times[0] >= 0.004
    assert frames["positions"].shape == (len(frames["time_ps"]), 6, 3)
    assert set(frames["temperature"]) == {300.0, 400.0}
    path = save_harvest(frames, tmp_path / "pool.npz")
    with np.load(path) as saved:
        np.testing.assert_array_equal(saved["positions"], frames["positions"])


def test_bad_harvest_arguments_are_named(run_dir):
    with pytest.raises(ValueError, match="spacing_ps"):
        harvest_frames([run_dir], spacing_ps=0)
    with pytest.raises(ValueError, match="discard_ps"):
        harvest_frames([run_dir], spacing_ps=0.01, discard_ps=-1)
    with pytest.raises(ValueError, match="run_dirs is empty"):
        harvest_frames([], spacing_ps=0.01)
    with pytest.raises(ValueError, match="no frames"):
        harvest_frames([run_dir], spacing_ps=0.01, discard_ps=10.0)


def test_the_harvest_command_names_bad_input(run_dir, tmp_path, capsys):
    from freecg_md.data.harvest import main

    out = str(tmp_path / "x.npz")
    assert main([str(tmp_path / "missing"), "--out", out]) == 2
    assert "is missing" in capsys.readouterr().err
    assert main([str(run_dir), "--out", out, "--spacing-ps", "0"]) == 2
    assert "spacing_ps" in capsys.readouterr().err
    # Refused before the committee scores a single frame.
    with pytest.raises(SystemExit):
        main([str(run_dir), "--out", out, "--committee", "absent.pt", "--select", "0"])
    assert "--select 0" in capsys.readouterr().err


def test_selection_keeps_the_frames_of_largest_disagreement(run_dir, tmp_path):
    frames = harvest_frames([run_dir], spacing_ps=0.002)
    paths = []
    for seed in range(2):
        paths.append(tmp_path / f"m{seed}.pt")
        save_model(small_model(torch.float64, seed=seed), paths[-1])
    spread = committee_disagreement(frames, paths, progress=False)
    assert spread.shape == (len(frames["positions"]),) and np.all(spread > 0)
    chosen = select_frames(frames, spread, 3)
    assert sorted(chosen["disagreement"]) == sorted(np.sort(spread)[-3:])
    assert chosen["positions"].shape[0] == 3
    np.testing.assert_array_equal(chosen["numbers"], frames["numbers"])
    with pytest.raises(ValueError, match="one value per frame"):
        select_frames(frames, spread[:-1], 3)
    with pytest.raises(ValueError, match="NaN"):
        select_frames(frames, np.full_like(spread, np.nan), 3)
    # The command line does the same.
    out = tmp_path / "selected.npz"
    assert main([str(run_dir), "--out", str(out), "--spacing-ps", "0.002", "--committee",
                 *map(str, paths), "--select", "3"]) == 0
    with np.load(out) as saved:
        np.testing.assert_allclose(np.sort(saved["disagreement"]), np.sort(spread)[-3:],
                                   rtol=1e-6)
