"""The run loop: batching, resume, guards, the run directory and its units, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch
from mdtraj.formats import DCDTrajectoryFile

from freecg_md.analysis.remd_stats import frames_at_temperature
from freecg_md.md import (
    CheckpointError,
    FreeCGPotential,
    ReplicaState,
    RunConfig,
    SimulationError,
    load_checkpoint,
    read_frame_index,
    replica_seed,
    run_replicas,
    trajectory_path,
)
from tests.conftest import random_molecule, small_model
from tests.md.toys import Faulty, Harmonic

TEMPERATURES = [300.0, 340.0, 390.0]


def molecule_run(tmp: Path, n_steps: int, **overrides) -> tuple[FreeCGPotential, ReplicaState,
                                                                 RunConfig]:
    """3 replicas of an 8-atom molecule under a small float64 FreeCG, with exchanges."""
    atoms = random_molecule(8, seed=1)
    potential = FreeCGPotential(small_model(torch.float64), atoms.numbers, dtype="float64")
    settings = dict(temperatures=TEMPERATURES, n_steps=n_steps, output_dir=str(tmp),
                    timestep_fs=0.5, friction_per_ps=5.0, exchange_interval=4,
                    report_interval=2, checkpoint_interval=6, seed=3, dtype="float64",
                    flush_every=1)
    settings.update(overrides)
    return potential, ReplicaState.from_atoms(atoms, 3), RunConfig(**settings)


def springs_run(tmp: Path, temperatures: list[float], **overrides):
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=2.0, size=(5, 3))
    positions = torch.tensor(np.broadcast_to(centers, (len(temperatures), 5, 3)).copy())
    state = ReplicaState(positions, torch.zeros_like(positions), torch.full((5,), 12.0),
                         torch.full((5,), 6, dtype=torch.long), torch.zeros(3, 3), False)
    settings = dict(temperatures=temperatures, n_steps=30, output_dir=str(tmp),
                    timestep_fs=1.0, friction_per_ps=10.0, report_interval=10,
                    checkpoint_interval=10, seed=4, remove_com_motion=False)
    settings.update(overrides)
    return Harmonic(centers, k=1.5), state, RunConfig(**settings)


def frames(directory: Path, replica: int) -> np.ndarray:
    with DCDTrajectoryFile(str(trajectory_path(directory, replica))) as handle:
        return handle.read()[0]


def test_batch_equals_single_replica_runs_with_the_same_seeds(tmp_path):
    temperatures = [250.0, 300.0, 500.0]
    potential, state, config = springs_run(tmp_path / "batch", temperatures)
    batch = run_replicas(potential, state, config, progress=False)
    for r, temperature in enumerate(temperatures):
        potential, single_state, single = springs_run(
            tmp_path / f"single{r}", [temperature], replica_seeds=[replica_seed(4, r)])
        alone = run_replicas(potential, single_state.select(slice(0, 1)), single,
                             progress=False)
        assert torch.equal(alone.state.positions[0], batch.state.positions[r])
        assert torch.equal(alone.state.velocities[0], batch.state.velocities[r])
        assert np.array_equal(frames(tmp_path / f"single{r}", 0), frames(tmp_path / "batch", r))


def test_batched_freecg_run_equals_single_replica_runs(tmp_path):
    potential, state, config = molecule_run(tmp_path / "batch", 12, exchange_interval=0)
    batch = run_replicas(potential, state, config, progress=False)
    for r, temperature in enumerate(TEMPERATURES):
        potential, single_state, single = molecule_run(
            tmp_path / f"single{r}", 12, exchange_interval=0, temperatures=[temperature],
            replica_seeds=[replica_seed(3, r)])
        alone = run_replicas(potential, single_state.select(slice(r, r + 1)), single,
                             progress=False)
        # The model's float64 sums differ in the last bit between batch sizes.
        torch.testing.assert_close(alone.state.positions[0], batch.state.positions[r],
                                   rtol=0, atol=1e-10)


def run_files(directory: Path) -> dict[str, bytes]:
    return {name: (directory / name).read_bytes()
            for name in ("log.csv", "frames.csv", "exchange.csv", "remd_stats.json")}


def test_resume_equals_uninterrupted(tmp_path):
    potential, state, config = molecule_run(tmp_path / "straight", 24)
    straight = run_replicas(potential, state, config, progress=False)

    # Crash at step 15 (checkpoint at 12, frames up to 14 already written), then resume.
    potential, state, config = molecule_run(tmp_path / "crashed", 24)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_replicas(Faulty(potential, after=16, mode="raise"), state, config, progress=False)
    assert len(frames(tmp_path / "crashed", 0)) == 7  # steps 2..14: two beyond the checkpoint
    assert load_checkpoint(tmp_path / "crashed" / "checkpoint.pt").step == 12
    potential, state, config = molecule_run(tmp_path / "crashed", 24)
    resumed = run_replicas(potential, state, config, resume=True, progress=False)

    # A run stopped at its end (n_steps=12) and extended to 24.
    potential, state, config = molecule_run(tmp_path / "extended", 12)
    run_replicas(potential, state, config, progress=False)
    potential, state, config = molecule_run(tmp_path / "extended", 24)
    extended = run_replicas(potential, state, config, resume=True, progress=False)

    for other, name in ((resumed, "crashed"), (extended, "extended")):
        assert torch.equal(other.state.positions, straight.state.positions)
        assert torch.equal(other.state.velocities, straight.state.velocities)
        assert other.exchange.summary() == straight.exchange.summary()
        assert run_files(tmp_path / name) == run_files(tmp_path / "straight")
        for r in range(3):
            assert np.array_equal(frames(tmp_path / name, r), frames(tmp_path / "straight", r))
    config_json = json.loads((tmp_path / "crashed" / "config.json").read_text())
    assert config_json["resumed_at_steps"] == [12]


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("nan", "replica 1 at step 9: potential energy is nan eV"),
        ("force", "replica 1 at step 9: a force component of 5000 eV/Å exceeds max_force"),
        ("jump", "replica 1 at step 9: potential energy jumped"),
    ],
)
def test_guard_stops_with_replica_and_step_and_keeps_earlier_output(tmp_path, mode, match):
    potential, state, config = springs_run(tmp_path, [300.0, 320.0], report_interval=2,
                                           checkpoint_interval=4, flush_every=3)
    faulty = Faulty(potential, after=9, replica=1, mode=mode)  # call 10 is step 9
    with pytest.raises(SimulationError, match=match):
        run_replicas(faulty, state, config, progress=False)
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    assert checkpoint.step == 8 and checkpoint.frames_written == [4, 4]
    for r in range(2):  # every frame reported before the bad step, readable by mdtraj
        trajectory = mdtraj.load(str(trajectory_path(tmp_path, r)),
                                 top=str(tmp_path / "topology.pdb"))
        assert trajectory.n_frames == 4
    assert read_frame_index(tmp_path).steps.tolist() == [2, 4, 6, 8]


def test_nan_positions_are_reported_with_step_and_replica(tmp_path):
    atoms = random_molecule(6, seed=2)
    potential = FreeCGPotential(small_model(torch.float64), atoms.numbers, dtype="float64")
    state = ReplicaState.from_atoms(atoms, 2)
    state.positions[1, 2, 0] = float("nan")
    config = RunConfig(temperatures=[300, 300], n_steps=4, output_dir=str(tmp_path),
                       dtype="float64")
    with pytest.raises(SimulationError, match=r"step 0: replica 1 has NaN or infinite"):
        run_replicas(potential, state, config, progress=False)


def test_run_directory_units_and_demultiplexing(tmp_path):
    potential, state, config = springs_run(tmp_path, [300.0, 360.0], n_steps=20,
                                           report_interval=5, exchange_interval=5)
    cell = np.diag([20.0, 21.0, 22.0])
    state.cell, state.pbc = torch.tensor(cell), torch.tensor([True, True, True])
    result = run_replicas(potential, state, config, progress=False)
    pdb = mdtraj.load(str(tmp_path / "topology.pdb"))
    np.testing.assert_allclose(pdb.xyz[0] * 10, state.positions[0].numpy(), atol=1e-3)
    for r in range(2):
        trajectory = mdtraj.load(str(trajectory_path(tmp_path, r)),
                                 top=str(tmp_path / "topology.pdb"))
        # DCD holds Å; mdtraj hands out nm.
        np.testing.assert_allclose(trajectory.xyz[-1] * 10, result.state.positions[r].numpy(),
                                   rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(trajectory.unitcell_lengths[-1] * 10, [20, 21, 22],
                                   rtol=1e-6)
    index = read_frame_index(tmp_path)
    log = np.loadtxt(tmp_path / "log.csv", delimiter=",", skiprows=1)
    tindex = log[:, [5, 9]].astype(int)  # tindex_r0, tindex_r1
    assert np.array_equal(index.temperature_of_replica, tindex)
    for k in range(2):
        assert np.array_equal(frames_at_temperature(tindex, k), index.replica_of_temperature[:, k])
    saved = json.loads((tmp_path / "config.json").read_text())
    assert RunConfig.from_dict(saved["run"]) == config
    assert {"torch", "mdtraj", "ase", "numpy", "freecg_md"} <= set(saved["versions"])


def test_bad_configs_and_inputs(tmp_path):
    base = dict(temperatures=[300.0, 400.0], n_steps=10, output_dir=str(tmp_path))
    cases = [
        (dict(temperatures=[400.0, 300.0], exchange_interval=2), "strictly increasing"),
        (dict(friction_per_ps=-1.0), "friction_per_ps=-1.0: expected a friction >= 0"),
        (dict(timestep_fs=0.0), "timestep_fs=0.0"),
        (dict(report_interval=0), "report_interval=0"),
        (dict(replica_seeds=[1]), r"replica_seeds=\[1\]: expected one seed per replica \(2\)"),
        (dict(dtype="half"), "dtype='half'"),
        (dict(temperatures=[300.0, 0.0]), "expected one value > 0 K"),
    ]
    for overrides, match in cases:
        with pytest.raises(ValueError, match=match):
            RunConfig(**{**base, **overrides})
    with pytest.raises(ValueError, match="unknown RunConfig keys"):
        RunConfig.from_dict({**base, "frobnicate": 1})

    potential, state, config = springs_run(tmp_path / "a", [300.0, 310.0, 320.0])
    with pytest.raises(ValueError, match="state has 3 replicas but config.temperatures has 2"):
        run_replicas(potential, state, RunConfig(**base), progress=False)
    atoms = random_molecule(4)
    freecg = FreeCGPotential(small_model(), atoms.numbers, dtype="float32")
    with pytest.raises(ValueError, match="config.dtype='float64' but the potential runs in"):
        run_replicas(freecg, ReplicaState.from_atoms(atoms, 2),
                     RunConfig(**base, dtype="float64"), progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_replicas(potential, state, config, resume=True, progress=False)
    run_replicas(potential, state, config, progress=False)
    with pytest.raises(FileExistsError, match="pass resume=True"):
        run_replicas(potential, state, config, progress=False)
    changed = RunConfig(**{**config.to_dict(), "friction_per_ps": 2.0})
    with pytest.raises(CheckpointError, match="friction_per_ps: saved 10.0, now 2.0"):
        run_replicas(potential, state, changed, resume=True, progress=False)
