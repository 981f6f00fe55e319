"""The run loop: batching, resume, guards, the run directory and its units, bad input."""

from __future__ import annotations

import dataclasses
import json
import re
import textwrap
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch
from mdtraj.formats import DCDTrajectoryFile

from freecg_md import FreeCGCalculator
from freecg_md.analysis.remd_stats import frames_at_temperature
from freecg_md.md import (
    CheckpointError,
    FreeCGPotential,
    ReplicaState,
    RunConfig,
    SimulationError,
    load_checkpoint,
    load_replica_trajectory,
    load_temperature_trajectory,
    read_frame_index,
    replica_seed,
    run_replicas,
    trajectory_path,
)
from tests.conftest import random_molecule, small_model
from tests.md.toys import BondedChain, Faulty, Harmonic

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
    # Resuming a finished run continues nothing and records nothing.
    written = (tmp_path / "straight" / "config.json").read_bytes()
    stamp = (tmp_path / "straight" / "config.json").stat().st_mtime_ns
    potential, state, config = molecule_run(tmp_path / "straight", 24)
    run_replicas(potential, state, config, resume=True, progress=False)
    assert (tmp_path / "straight" / "config.json").read_bytes() == written
    assert (tmp_path / "straight" / "config.json").stat().st_mtime_ns == stamp  # not rewritten


def test_a_resume_keeps_the_recorded_start(tmp_path):
    potential, state, config = molecule_run(tmp_path, 12)
    run_replicas(potential, state, config, progress=False, metadata={"initial": "native"})
    potential, state, config = molecule_run(tmp_path, 18)
    with pytest.warns(UserWarning, match="started from 'native'"):
        run_replicas(potential, state, config, resume=True, progress=False,
                     metadata={"initial": "shipped"})
    recorded = json.loads((tmp_path / "config.json").read_text())
    assert recorded["initial"] == "native" and recorded["resumed_at_steps"] == [12]
    # Stopped in the equilibration stage, resumed from a start that brings its velocities
    # (no draw): both stages keep the recorded start, and the velocities come from the
    # checkpoint.
    directory = tmp_path / "staged"
    potential, state, config = molecule_run(directory, 8, equilibration_steps=6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_replicas(Faulty(potential, after=4, mode="raise"), state, config, progress=False,
                     metadata={"initial": "native"})
    potential, state, config = molecule_run(directory, 8, equilibration_steps=6,
                                            draw_velocities=False)
    with pytest.warns(UserWarning, match="started from 'native'") as caught:
        run_replicas(potential, state, config, resume=True, progress=False,
                     metadata={"initial": "shipped"})
    assert caught[0].filename == __file__  # pointed at the caller of run_replicas
    for stage in (directory / "equilibration", directory):
        assert json.loads((stage / "config.json").read_text())["initial"] == "native"


def test_a_resumed_chignolin_run_with_worker_processes_repeats_the_uninterrupted_one(
        tmp_path):
    """With two threads a chignolin pass in this process is cut into two runs of edges, in
    a worker of one thread it is one: the first call of a resumed run, made here, takes a
    worker's share of the threads so that it repeats the worker's float32 sums."""
    from freecg_md.data import load_chignolin

    chignolin = load_chignolin()
    model = Path(__file__).resolve().parents[2] / "models" / "chignolin.pt"

    def run(directory: Path, n_steps: int, resume: bool = False):
        config = RunConfig(temperatures=[300.0, 330.0], n_steps=n_steps,
                           output_dir=str(directory), exchange_interval=2, report_interval=1,
                           checkpoint_interval=3, seed=5)
        with FreeCGPotential(model, chignolin.atoms.numbers, workers=2) as potential:
            return run_replicas(potential, ReplicaState.from_atoms(chignolin.atoms, 2), config,
                                resume=resume, progress=False)

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        straight = run(tmp_path / "straight", 6)
        run(tmp_path / "resumed", 3)
        resumed = run(tmp_path / "resumed", 6, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(resumed.state.positions, straight.state.positions)
    assert torch.equal(resumed.state.velocities, straight.state.velocities)


@pytest.mark.parametrize(
    ("mode", "match"),
    [
        ("nan", "replica 1 at step 9: potential energy is nan eV"),
        ("force", "replica 1 at step 9: a force component of 5000 eV/Å exceeds max_force"),
        ("jump", "replica 1 at step 9: potential energy jumped"),
        ("worker", "step 9: worker 1 exited with code -9"),
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


def test_a_command_reports_a_stopped_or_refused_run_with_its_exit_code(tmp_path, capsys):
    """The MD commands' runner: 1 and one line when the guards stop a run (its output up to
    then kept), 2 when the run is refused (here an existing run without resume)."""
    from freecg_md.md.options import run_reporting_errors

    potential, state, config = springs_run(tmp_path, [300.0, 320.0], report_interval=2,
                                           checkpoint_interval=4)
    faulty = Faulty(potential, after=9, replica=1, mode="nan")
    assert run_reporting_errors(faulty, state, config, None, None, False, {},
                                progress=False) == 1
    err = capsys.readouterr().err
    assert "error: the run stopped: replica 1 at step 9" in err and str(tmp_path) in err
    assert load_checkpoint(tmp_path / "checkpoint.pt").step == 8
    assert run_reporting_errors(potential, state, config, None, None, False, {},
                                progress=False) == 2
    assert "error:" in capsys.readouterr().err


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
    # Times in ps come with the trajectories read through the package, and the run
    # directory says how to get them with mdtraj alone (a DCD numbers its frames).
    replica = load_replica_trajectory(tmp_path, 1)
    np.testing.assert_allclose(replica.time, [0.005, 0.010, 0.015, 0.020])
    np.testing.assert_allclose(load_temperature_trajectory(tmp_path, 0).time, replica.time)
    for bad in (-1, 2):
        with pytest.raises(ValueError, match=f"temperature_index={bad}: expected 0 to 1"):
            load_temperature_trajectory(tmp_path, bad)
        with pytest.raises(ValueError, match=f"replica={bad}: expected 0 to 1"):
            load_replica_trajectory(tmp_path, bad)
    readme = (tmp_path / "README.txt").read_text()
    assert "time_fs" in readme and "frames.csv" in readme
    namespace = {}
    recipe = textwrap.dedent(readme.split("or, with mdtraj alone:")[1].split("Files:")[0])
    exec(recipe.strip().replace("replica_000.dcd", str(trajectory_path(tmp_path, 1)))  # noqa: S102
         .replace('"topology.pdb"', repr(str(tmp_path / "topology.pdb")))
         .replace('"frames.csv"', repr(str(tmp_path / "frames.csv"))), namespace)
    np.testing.assert_allclose(namespace["trajectory"].time, replica.time)
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
        (dict(report_interval=2.5), "report_interval=2.5: expected an integer"),
        (dict(n_steps=1e5), "n_steps=100000.0: expected an integer"),
        (dict(exchange_interval=True), "exchange_interval=True: expected an integer"),
        (dict(n_steps="100"), "n_steps='100': expected an integer"),
        (dict(replica_seeds=[1, 2.5]), r"replica_seeds=\[1, 2.5\]: expected integers"),
        (dict(replica_seeds=[1, 2], equilibration_steps=5), "equilibration_steps=5 with "
                                                            "replica_seeds: expected 0"),
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
    swapped = ReplicaState.from_atoms(atoms, 2)
    swapped.numbers = swapped.numbers.flip(0)  # C O N H -> H N O C
    with pytest.raises(ValueError, match="built for other atoms than the state's: atom 0 is "
                                         "Z=6 in the potential and Z=1 in the state"):
        run_replicas(freecg, swapped, RunConfig(**base, dtype="float32"), progress=False)
    with pytest.raises(ValueError, match="built for 4 atoms but the state has 5"):
        run_replicas(freecg, ReplicaState.from_atoms(random_molecule(5), 2),
                     RunConfig(**base, dtype="float32"), progress=False)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        run_replicas(potential, state, config, resume=True, progress=False)
    run_replicas(potential, state, config, progress=False)
    with pytest.raises(FileExistsError, match="pass resume=True"):
        run_replicas(potential, state, config, progress=False)
    changed = RunConfig(**{**config.to_dict(), "friction_per_ps": 2.0})
    with pytest.raises(CheckpointError, match="friction_per_ps: saved 10.0, now 2.0"):
        run_replicas(potential, state, changed, resume=True, progress=False)
    # Other masses (e.g. another --hydrogen-mass) would continue another system's dynamics.
    masses = state.masses.clone()
    masses[3] = 14.0
    with pytest.raises(CheckpointError, match=r"atomic masses differ from the run's \(atom 3: "
                                              r"saved 12 amu, now 14 amu\)"):
        run_replicas(potential, state.with_masses(masses), config, resume=True, progress=False)
    run_replicas(potential, state, config, resume=True, progress=False)  # the same: fine
    # Where it writes and how often, a guard's limit, another GPU: the same trajectory.
    checkpoint = load_checkpoint(Path(config.output_dir) / "checkpoint.pt")
    saved = {**checkpoint.config, "device": "cuda:0"}
    checkpoint.config = saved
    checkpoint.check_matches({**saved, "device": "cuda:1", "output_dir": "moved",
                              "checkpoint_interval": 7, "flush_every": 3,
                              "max_force_disagreement": 0.5}, state.numbers)
    with pytest.raises(CheckpointError, match="device: saved 'cuda:0', now 'cpu'"):
        checkpoint.check_matches({**saved, "device": "cpu"}, state.numbers)


def chain_run(tmp: Path, **overrides):
    """2 replicas of a 6-atom hydrogen chain on stiff springs (see toys.BondedChain)."""
    positions = torch.zeros((2, 6, 3), dtype=torch.float64)
    positions[:, :, 0] = 0.7 * torch.arange(6, dtype=torch.float64)  # H-H bonds by radii
    state = ReplicaState(positions, torch.zeros_like(positions), torch.full((6,), 1.008),
                         torch.ones(6, dtype=torch.long), torch.zeros(3, 3), False)
    settings = dict(temperatures=[300.0, 300.0], n_steps=400, output_dir=str(tmp),
                    timestep_fs=1.0, friction_per_ps=1.0, report_interval=10,
                    checkpoint_interval=50, seed=5)
    settings.update(overrides)
    return BondedChain(k=30.0, r0=0.7), state, RunConfig(**settings)


def test_equilibration_stage_runs_first_into_its_own_directory(tmp_path):
    potential, state, config = molecule_run(tmp_path / "run", 8, equilibration_steps=6,
                                            equilibration_friction_per_ps=20.0)
    result = run_replicas(potential, state, config, progress=False)
    stage = tmp_path / "run" / "equilibration"
    assert result.equilibration is not None and result.equilibration.state.step == 6
    assert read_frame_index(stage).steps.tolist() == [2, 4, 6]
    assert read_frame_index(tmp_path / "run").steps.tolist() == [2, 4, 6, 8]
    saved = json.loads((stage / "config.json").read_text())["run"]
    assert saved["exchange_interval"] == 0 and saved["friction_per_ps"] == 20.0
    assert saved["n_steps"] == 6
    production = json.loads((tmp_path / "run" / "config.json").read_text())["run"]
    assert production["equilibration_steps"] == 6
    assert production["equilibration_friction_per_ps"] == 20.0
    # The stage's noise is its own stream: not the production's seeds.
    assert saved["replica_seeds"] != config.seeds()

    # Production continues from the equilibrated state: a plain run from that state with
    # its velocities, started at step 0, is the same trajectory.
    potential, _, plain = molecule_run(tmp_path / "plain", 8, draw_velocities=False)
    start = result.equilibration.state
    start.step = 0
    alone = run_replicas(potential, start, plain, progress=False)
    assert torch.equal(alone.state.positions, result.state.positions)

    # Interrupted in either stage, a resumed run equals the uninterrupted one.
    for crash_after in (4, 10):
        directory = tmp_path / f"crash{crash_after}"
        potential, state, config = molecule_run(directory, 8, equilibration_steps=6,
                                                equilibration_friction_per_ps=20.0)
        with pytest.raises(RuntimeError, match="simulated crash"):
            run_replicas(Faulty(potential, after=crash_after, mode="raise"), state, config,
                         progress=False)
        potential, state, config = molecule_run(directory, 8, equilibration_steps=6,
                                                equilibration_friction_per_ps=20.0)
        resumed = run_replicas(potential, state, config, resume=True, progress=False)
        assert torch.equal(resumed.state.positions, result.state.positions)
        assert run_files(directory) == run_files(tmp_path / "run")


def test_a_time_step_too_long_for_hydrogens_is_refused(tmp_path):
    potential, state, config = chain_run(tmp_path / "a", timestep_fs=4.0)
    with pytest.raises(ValueError, match=r"timestep_fs=4: too long for the lightest atom "
                                         r"\(1.008 amu\); at most 2.00 fs"):
        run_replicas(potential, state, config, progress=False)
    heavy = dataclasses.replace(state, masses=torch.full((6,), 4.032))  # 4 fs allowed
    run_replicas(potential, heavy, dataclasses.replace(config, n_steps=5), progress=False)


@pytest.mark.parametrize(
    ("only", "timestep", "match"),
    [
        ("max_displacement", 4.0, r"replica \d at step \d+: atom \d moved .* in one step"),
        ("max_bond_stretch", 4.0, r"replica \d at step \d+: the bond between atoms \d and \d "
                                  r"was pulled apart"),
        ("min_bond_compression", 4.0, r"replica \d at step \d+: the bond between atoms \d and "
                                      r"\d was pushed together"),
        # Just past the chain's stability limit (about 1.9 fs) the heating is slow enough
        # for the temperature's window to fill before the energy explodes.
        ("max_temperature_ratio", 2.0, r"replica \d at step \d+: kinetic temperature "
                                       r"[\d.]+x its bath on average over the last 20 "
                                       r"steps \(now a bath at 300 K"),
    ],
)
def test_guards_stop_a_run_that_flies_apart(tmp_path, only, timestep, match):
    """Past its stability limit the chain's stiff bonds gain energy every step while the
    energy stays finite. Each guard alone stops it, naming the replica, step and why; the
    frames and the checkpoint before it stay intact."""
    guards = dict(max_displacement=None, max_bond_stretch=None, min_bond_compression=None,
                  max_temperature_ratio=None)
    guards[only] = {"max_displacement": 0.5, "max_bond_stretch": 1.5,
                    "min_bond_compression": 0.6, "max_temperature_ratio": 1.5}[only]
    potential, state, config = chain_run(tmp_path, timestep_fs=timestep,
                                         allow_long_timestep=True,
                                         temperature_window=20, max_force=1e9,
                                         max_energy_jump_per_atom=1e9, **guards)
    with pytest.raises(SimulationError, match=match) as stopped:
        run_replicas(potential, state, config, progress=False)
    failed_at = int(re.search(r"at step (\d+)", str(stopped.value)).group(1))
    checkpoint = load_checkpoint(tmp_path / "checkpoint.pt")
    steps = read_frame_index(tmp_path).steps
    assert checkpoint.step < failed_at and checkpoint.frames_written[0] <= len(steps)
    assert np.all(steps < failed_at)  # nothing from the bad step on was written


def test_guards_stay_quiet_on_a_stable_run(tmp_path):
    potential, state, config = chain_run(tmp_path, timestep_fs=0.5, n_steps=2000,
                                         temperature_window=20)
    result = run_replicas(potential, state, config, progress=False)
    assert result.state.step == 2000


def test_shipped_start_states_are_thermalised_and_used_when_the_ladder_matches():
    from freecg_md.analysis.structure import chignolin_cvs
    from freecg_md.data import initial_replicas, load_chignolin, load_chignolin_starts
    from freecg_md.io import model_fingerprint
    from freecg_md.md import instantaneous_temperature, temperature_ladder

    starts = load_chignolin_starts()
    chignolin = load_chignolin()
    ladder = temperature_ladder(300, 450, 8)
    np.testing.assert_allclose(starts.temperatures, ladder)
    model = Path(__file__).resolve().parents[2] / "models" / "chignolin.pt"
    assert starts.model_fingerprint == model_fingerprint(model)  # made by the shipped weights
    # Started half folded, half unfolded by the two distances, alternating along the
    # ladder; after equilibration at their rungs both basins are still there (the hot
    # rungs move, so some states now lie between them).
    native = chignolin_cvs(chignolin.native_positions[None], chignolin.topology)[0]
    assert starts.started_unfolded.tolist() == [False, True] * 4
    distance = np.linalg.norm(starts.cvs - native, axis=1)
    np.testing.assert_allclose(chignolin_cvs(starts.positions, chignolin.topology), starts.cvs,
                               atol=1e-3)
    assert (distance <= 1.5).sum() >= 2 and (distance > 3.0).sum() >= 3
    state, draw, _ = initial_replicas("shipped", chignolin.atoms, ladder)
    assert not draw and torch.equal(state.velocities, torch.tensor(starts.velocities))
    temperature = instantaneous_temperature(state.velocities, state.masses, True).numpy()
    # One snapshot of 495 degrees of freedom: within 5 standard deviations (6.4 % each).
    assert np.all(np.abs(temperature / ladder - 1) < 5 * np.sqrt(2 / 495))
    state, draw, text = initial_replicas("shipped", chignolin.atoms, [300.0] * 3)
    assert draw and "velocities drawn afresh" in text
    assert torch.equal(state.positions[2], torch.tensor(starts.positions[2]))


def test_the_guards_stop_ase_dynamics_too():
    from ase import Atoms, units
    from ase.calculators.calculator import Calculator, all_changes
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from freecg_md.md import DynamicsGuard

    class Chain(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            positions = torch.tensor(self.atoms.positions)[None]
            energy, forces = BondedChain(k=30.0, r0=0.7).evaluate(positions)
            self.results = {"energy": float(energy[0]), "forces": forces[0].numpy()}

    def run(timestep_fs: float) -> None:
        atoms = Atoms("H6", positions=[[0.7 * i, 0.0, 0.0] for i in range(6)])
        atoms.calc = Chain()
        MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
        dynamics = VelocityVerlet(atoms, timestep=timestep_fs * units.fs)
        dynamics.attach(DynamicsGuard(atoms, temperature_K=300), interval=1)
        dynamics.run(300)

    run(0.5)
    with pytest.raises(SimulationError, match="call \\d+ of the guard: "):
        run(4.0)
    with pytest.raises(ValueError, match="temperature_K=0"):
        DynamicsGuard(Atoms("H2", positions=[[0, 0, 0], [0.7, 0, 0]]), temperature_K=0)


@pytest.mark.parametrize("timestep", [4.0, 20.0])
def test_chignolin_at_a_long_step_stops_instead_of_finishing(tmp_path, timestep):
    """The case that used to end 'finished' with the molecule 9.5 nm wide: the shipped model
    at 4 or 20 fs with natural hydrogens. Refused at configuration; allowed, the guards
    stop it within steps and the frames before stay readable."""
    import warnings

    from freecg_md.data import load_chignolin

    chignolin = load_chignolin()
    model = Path(__file__).resolve().parents[2] / "models" / "chignolin.pt"
    potential = FreeCGPotential(model, chignolin.atoms.numbers)
    state = ReplicaState.from_atoms(chignolin.atoms, 1)
    config = RunConfig(temperatures=[300.0], timestep_fs=timestep, n_steps=150,
                       output_dir=str(tmp_path), report_interval=1, checkpoint_interval=50)
    with pytest.raises(ValueError, match="too long for the lightest atom"):
        run_replicas(potential, state, config, progress=False)
    allowed = dataclasses.replace(config, allow_long_timestep=True)
    with warnings.catch_warnings(), pytest.raises(SimulationError, match="replica 0 at step"):
        warnings.simplefilter("ignore")  # the domain warnings of the close contacts
        run_replicas(potential, state, allowed, progress=False)
    assert len(read_frame_index(tmp_path).steps) < 10


def test_a_committee_run_logs_its_disagreement_and_stops_above_the_limit(tmp_path):
    from freecg_md.analysis.rundir import read_run

    atoms = random_molecule(8, seed=1)
    members = [small_model(torch.float64, seed=s) for s in range(3)]
    potential = FreeCGPotential(members, atoms.numbers, dtype="float64")
    config = RunConfig(temperatures=TEMPERATURES, n_steps=6, output_dir=str(tmp_path / "a"),
                       timestep_fs=0.5, report_interval=2, checkpoint_interval=2, seed=3,
                       dtype="float64", flush_every=1)
    run_replicas(potential, ReplicaState.from_atoms(atoms, 3), config, progress=False)
    run = read_run(tmp_path / "a")
    assert run.force_disagreement.shape == (3, 3)
    # The logged value is the committee's at that frame's positions.
    single = FreeCGCalculator(members, dtype="float64")
    frame = atoms.copy()
    frame.positions = run.positions[1, -1].astype(np.float64)
    frame.calc = single
    frame.get_forces()
    assert run.force_disagreement[-1, 1] == pytest.approx(
        frame.calc.results["max_force_std"], rel=1e-4)
    # A limit below what the members disagree by stops the run at its first step, the
    # start's files intact.
    limit = float(run.force_disagreement.min()) / 2
    stopped = dataclasses.replace(config, output_dir=str(tmp_path / "b"),
                                  max_force_disagreement=limit)
    with pytest.raises(SimulationError, match="force disagreement .* exceeds "
                                              "max_force_disagreement"):
        run_replicas(FreeCGPotential(members, atoms.numbers, dtype="float64"),
                     ReplicaState.from_atoms(atoms, 3), stopped, progress=False)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    # A single model logs no disagreement column.
    potential, state, plain = molecule_run(tmp_path / "c", 2)
    run_replicas(potential, state, plain, progress=False)
    assert np.isnan(read_run(tmp_path / "c").force_disagreement).all()


def test_the_bond_guard_watches_the_bonds_of_the_reference_structure(tmp_path):
    # A start with an oxygen pressed onto a carbon: taken as the reference, that contact is a
    # "bond", which the first step pulls apart; with the proper structure as reference, the
    # run goes on.
    from ase import Atoms

    good = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    pressed = good.copy()
    pressed[2, 0] = 2.8  # 1.3 Å from the second carbon
    state = ReplicaState.from_atoms(Atoms(numbers=[6, 6, 8, 1], positions=pressed), 1)

    class Jumps:
        """Zero forces; on its second call it puts the replica back in the good structure."""

        calls = 0

        def evaluate(self, positions):
            Jumps.calls += 1
            if Jumps.calls == 2:
                positions.copy_(torch.as_tensor(good)[None])
            return torch.zeros(len(positions), dtype=torch.float64), torch.zeros_like(positions)

    config = RunConfig(temperatures=[300.0], n_steps=3, output_dir=str(tmp_path / "a"),
                       report_interval=1, checkpoint_interval=3, seed=1, max_displacement=None,
                       max_temperature_ratio=None, remove_com_motion=False)
    with pytest.raises(SimulationError, match="pulled apart"):
        run_replicas(Jumps(), state, config, progress=False)
    Jumps.calls = 0
    run_replicas(Jumps(), state, dataclasses.replace(config, output_dir=str(tmp_path / "b")),
                 progress=False, bond_reference=good)
    with pytest.raises(ValueError, match="bond_reference has shape"):
        run_replicas(Jumps(), state, dataclasses.replace(config, output_dir=str(tmp_path / "c")),
                     progress=False, bond_reference=good[:3])


def test_the_temperature_guard_judges_each_step_against_the_bath_it_ran_at():
    """A replica that exchanged from a 1000 K bath to a 300 K one is not heating up: its
    kinetic temperature was its bath's at every step. A replica at 2x its bath is."""
    from freecg_md.md.guards import GuardLimits, Guards

    reference = np.array([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0]])
    limits = GuardLimits(max_temperature_ratio=1.5, temperature_window=4,
                         max_bond_stretch=None, min_bond_compression=None,
                         max_displacement=None)
    guards = Guards(limits, reference, np.array([6, 6]), np.zeros((3, 3)),
                    np.zeros(3, bool), dof=10_000, n_replicas=2)
    positions = torch.as_tensor(reference)[None].repeat(2, 1, 1)
    baths = [(1000.0, 300.0)] * 3 + [(300.0, 1000.0)]
    for step, bath in enumerate(baths):
        targets = torch.tensor(bath, dtype=torch.float64)
        message = guards.check(positions, positions, targets.clone(), targets,
                               lambda r, step=step: f"replica {r} at step {step}")
        assert message is None
    targets = torch.tensor([300.0, 1000.0], dtype=torch.float64)
    for step in range(4, 8):
        message = guards.check(positions, positions, targets * torch.tensor([2.0, 1.0]),
                               targets, lambda r, step=step: f"replica {r} at step {step}")
    assert message is not None and message.startswith("replica 0 at step 7: kinetic "
                                                      "temperature 2.00x its bath")
