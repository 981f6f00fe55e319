"""The analysis and simulation scripts, end to end on tiny runs of chignolin."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from freecg_md import FreeCG, FreeCGConfig, save_model
from freecg_md.analysis.rundir import read_run
from freecg_md.data.molecules import load_chignolin
from freecg_md.io import load_model, model_fingerprint
from freecg_md.md import ReplicaState, RunConfig, run_replicas
from tests.conftest import run_script
from tests.md.toys import Harmonic

REPO = Path(__file__).resolve().parents[2]


def assert_png(path: Path) -> None:
    assert path.is_file(), f"{path} was not written"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.fixture(scope="module")
def remd_run(tmp_path_factory) -> Path:
    """4 replicas of chignolin on springs to the native structure, with exchanges."""
    chignolin = load_chignolin()
    directory = tmp_path_factory.mktemp("remd")
    config = RunConfig(temperatures=[300.0, 340.0, 390.0, 450.0], n_steps=80,
                       output_dir=str(directory), exchange_interval=4, report_interval=2,
                       timestep_fs=0.5, seed=3,
                       # Atoms on independent springs: no chemical bonds to guard.
                       max_bond_stretch=None, min_bond_compression=None)
    run_replicas(Harmonic(chignolin.native_positions, k=2.0),
                 ReplicaState.from_atoms(chignolin.atoms, 4), config,
                 topology=chignolin.topology, progress=False)
    return directory


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = FreeCG(FreeCGConfig(hidden=16, num_layers=1, num_heads=2, num_groups=2,
                                num_basis=8, cutoff=4.0))
    return save_model(model, tmp_path_factory.mktemp("model") / "tiny.pt")


def test_read_run_matches_the_logs(remd_run):
    run = read_run(remd_run)
    assert run.positions.shape == (4, 40, 166, 3)
    assert run.steps.tolist() == list(range(2, 81, 2))
    np.testing.assert_allclose(run.time_ps, run.steps * 0.5e-3)
    # Every frame has each temperature exactly once, and the energies are those of log.csv.
    assert (np.sort(run.temperature_index, axis=1) == np.arange(4)).all()
    with open(remd_run / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert float(rows[-1]["epot_r2_eV"]) == run.energies[-1, 2]
    # The largest force on an atom is logged per replica: on springs k |x - x0|.
    chignolin = load_chignolin()
    expected = 2.0 * np.linalg.norm(run.positions[2, -1] - chignolin.native_positions,
                                    axis=1).max()
    assert run.largest_force[-1, 2] == pytest.approx(expected, rel=1e-4)
    # Positions are in Å: springs keep every atom within an Å or so of the native structure.
    native = load_chignolin().native_positions
    assert np.abs(run.positions - native).max() < 2.0


def test_landscape_remd_and_rmsd_scripts_write_pictures(remd_run, tmp_path):
    out = tmp_path / "plots"
    assert run_script(REPO / "analysis" / "plot_landscape.py", remd_run, "--out", out,
                      "--bins", "12") == 0
    assert_png(out / "landscape.png")
    assert_png(out / "melting.png")
    with open(out / "basins.csv") as handle:
        basins = list(csv.DictReader(handle))
    assert {(b["method"], b["basin"]) for b in basins} == {
        ("histogram", "folded"), ("histogram", "unfolded"),
        ("MBAR over all temperatures", "folded"), ("MBAR over all temperatures", "unfolded")}
    # On springs to the native structure the run never unfolds and makes no round trip:
    # not converged, so no depth is written; the folded basin is where the run went, near
    # the native point, and no unfolded basin is invented.
    verdict = json.loads((out / "convergence.json").read_text())
    assert not verdict["converged"] and verdict["n_unfolded"] == 0
    assert any("round trips" in reason for reason in verdict["reasons"])
    folded = next(b for b in basins if b["method"] == "histogram" and b["basin"] == "folded")
    assert folded["free_energy_kcal_mol"] == "" and abs(float(folded["x_A"]) - 2.9) < 1.0
    assert next(b for b in basins if b["basin"] == "unfolded")["x_A"] == "nan"
    assert not (out / "landscape_histogram.csv").exists()

    assert run_script(REPO / "analysis" / "plot_remd.py", remd_run, "--out", out) == 0
    assert_png(out / "remd.png")
    summary = json.loads((out / "remd_summary.json").read_text())
    stats = json.loads((remd_run / "remd_stats.json").read_text())
    assert summary["attempts"] == stats["n_attempts"] == 20
    np.testing.assert_allclose(summary["acceptance"], stats["acceptance_neighbours"])

    assert run_script(REPO / "analysis" / "plot_rmsd.py", remd_run, "--out", out) == 0
    assert_png(out / "rmsd.png")
    table = np.loadtxt(out / "rmsd.csv", delimiter=",", skiprows=1)
    assert table.shape == (40, 3 + 4)
    np.testing.assert_allclose(table[:, 1], table[:, 3:].mean(axis=1), atol=2e-4)


def test_conformation_errors_script(remd_run, tiny_model, tmp_path):
    out = tmp_path / "errors"
    code = run_script(REPO / "analysis" / "conformation_errors.py", remd_run, "--out", out,
                      "--model", f"tiny={tiny_model}", "--model", f"again={tiny_model}",
                      "--reference", "emt", "--discard", "0", "--spacing", "0.004")
    assert code == 0
    assert_png(out / "conformation_errors.png")
    with open(out / "conformation_errors.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6 and len({row["frame"] for row in rows}) == 6
    assert [row["conformation"].split()[0] for row in rows] == ["folded"] * 3 + ["far"] * 3
    times = np.sort(read_run(remd_run).time_ps[[int(row["frame"]) for row in rows]])
    assert np.all(np.diff(times) >= 0.004 - 1e-9)  # picks apart in simulated time
    # The same model twice gives the same errors.
    for row in rows:
        assert row["tiny_force_mae_kcal_mol_A"] == row["again_force_mae_kcal_mol_A"]


def test_flagship_and_langevin_scripts_run_and_resume(tiny_model, tmp_path):
    remd = tmp_path / "remd"
    args = ["--model", tiny_model, "--replicas", "3", "--steps", "6", "--report-interval", "2",
            "--exchange-interval", "2", "--checkpoint-interval", "2", "--output", remd,
            "--equilibration-steps", "4", "--threads", "1", "--initial", "native",
            "--no-bond-guard"]  # an untrained model does not hold the molecule together
    assert run_script(REPO / "simulations" / "remd_chignolin.py", *args) == 0
    for name in ("topology.pdb", "replica_000.dcd", "frames.csv", "exchange.csv",
                 "checkpoint.pt", "plots/landscape.png", "plots/remd.png", "convergence.json",
                 "equilibration/log.csv", "equilibration/replica_000.dcd"):
        assert (remd / name).is_file(), name
    assert read_run(remd / "equilibration").steps.tolist() == [2, 4]
    saved = json.loads((remd / "config.json").read_text())
    assert saved["run"]["equilibration_steps"] == 4
    assert saved["run"]["equilibration_friction_per_ps"] == 5.0
    # The result is tied to the model that made it, in both stages.
    for stage in (remd, remd / "equilibration"):
        recorded = json.loads((stage / "config.json").read_text())
        assert recorded["model_fingerprint"] == model_fingerprint(tiny_model)
        assert recorded["initial"] == "the native structure"
    # A second start without --resume refuses to overwrite; with it, the run is extended.
    assert run_script(REPO / "simulations" / "remd_chignolin.py", *args) == 2
    extended = [*args, "--resume"]
    extended[extended.index("6")] = "10"
    assert run_script(REPO / "simulations" / "remd_chignolin.py", *extended) == 0
    assert read_run(remd).steps.tolist() == [2, 4, 6, 8, 10]

    langevin = tmp_path / "langevin"
    assert run_script(REPO / "simulations" / "langevin_chignolin.py", "--model", tiny_model,
                      "--trajectories", "2", "--steps", "4", "--report-interval", "2",
                      "--output", langevin, "--threads", "1", "--initial", "native",
                      "--no-bond-guard") == 0
    assert_png(langevin / "plots" / "rmsd.png")
    assert run_script(REPO / "simulations" / "remd_chignolin.py", "--model",
                      tmp_path / "missing.pt", "--output", tmp_path / "x") == 2


def test_flagship_starts_replicas_from_given_conformations(tiny_model, tmp_path):
    import ase.io
    import mdtraj

    native = load_chignolin().atoms
    shifted = native.copy()
    shifted.translate([10.0, 0.0, 0.0])
    starts = tmp_path / "starts.extxyz"
    ase.io.write(starts, [native, shifted])
    remd = tmp_path / "remd"
    # No equilibration stage: this test is about where the replicas start.
    args = ["--model", tiny_model, "--replicas", "3", "--steps", "2", "--report-interval", "2",
            "--exchange-interval", "2", "--no-plots", "--threads", "1",
            "--equilibration-steps", "0", "--no-bond-guard"]
    assert run_script(REPO / "simulations" / "remd_chignolin.py", *args, "--output", remd,
                      "--initial", starts) == 0
    for replica, offset in ((0, 0.0), (1, 10.0), (2, 0.0)):
        frame = mdtraj.load(remd / f"replica_{replica:03d}.dcd", top=remd / "topology.pdb")
        shift = frame.xyz[0] * 10.0 - native.positions  # nm -> Å
        assert abs(shift[:, 0].mean() - offset) < 0.1, replica
    water = tmp_path / "water.xyz"
    ase.io.write(water, ase.Atoms("H2O", positions=[[0, 0, 0], [1, 0, 0], [0, 1, 0]]))
    assert run_script(REPO / "simulations" / "remd_chignolin.py", *args, "--output",
                      tmp_path / "bad", "--initial", water) == 2


def test_pick_starts_writes_folded_then_unfolded_frames(tmp_path):
    import ase.io

    native = load_chignolin().atoms.positions
    center = native.mean(axis=0)
    rng = np.random.default_rng(0)
    positions = np.stack([center + 2.0 * (native - center), native,
                          native + rng.normal(scale=0.01, size=native.shape),
                          center + 2.2 * (native - center)])
    frames = tmp_path / "frames.npz"
    np.savez(frames, positions=positions)
    out = tmp_path / "starts.extxyz"
    script = REPO / "simulations" / "pick_starts.py"
    assert run_script(script, frames, "--folded", "2", "--unfolded", "2", "--out", out) == 0
    written = np.stack([atoms.positions for atoms in ase.io.read(out, ":")])
    # Folded starts first (frames 1 and 2 in order), then the stretched ones (0 and 3).
    assert np.allclose(written, positions[[1, 2, 0, 3]], atol=1e-6)
    assert run_script(script, frames, "--folded", "3", "--out", out) == 2


def test_stability_trajectory_seeds_are_distinct_across_temperatures():
    from freecg_md.commands.stability import trajectory_seed

    temperatures = [300.0, 450.0, 450.5, 1450.0, 2450.0]
    seeds = [trajectory_seed(0, t, i) for t in temperatures for i in range(8)]
    assert len(set(seeds)) == len(seeds)
    assert trajectory_seed(0, 450.0, 1) == trajectory_seed(0, 450.0, 1)  # reproducible
    assert trajectory_seed(1, 450.0, 0) not in seeds
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_a_stability_trajectory_resumes_with_the_seed_it_began_with(tiny_model, tmp_path,
                                                                     monkeypatch):
    from freecg_md.commands import stability

    argv = ["--model", str(tiny_model), "--temperatures", "300", "--trajectories", "1",
            "--report-interval", "2", "--checkpoint-interval", "2", "--initial", "native",
            "--output", str(tmp_path)]
    # Begun under another seed rule (as before the seeds were hashed) ...
    monkeypatch.setattr(stability, "trajectory_seed", lambda seed, t, i: 1300)
    first = stability.run_one(stability.parse_args([*argv, "--steps", "4"]), 300.0, 0)
    assert first.endswith("4 steps done")
    monkeypatch.undo()
    # ... it continues with that seed, not the one the rule gives now (a changed seed would
    # be refused by the checkpoint). The untrained model may break the molecule: the engine
    # then stops the trajectory, as the command counts it.
    line = stability.run_one(stability.parse_args([*argv, "--steps", "6", "--resume"]),
                             300.0, 0)
    assert line.endswith("6 steps done") or "stopped by the engine" in line, line
    recorded = json.loads((tmp_path / "T300" / "traj_0" / "config.json").read_text())
    assert recorded["run"]["seed"] == 1300 and recorded["resumed_at_steps"] == [4]


def test_stability_script_counts_failures_per_trajectory(tiny_model, tmp_path, capsys):
    out = tmp_path / "stability"
    args = ["--model", tiny_model, "--temperatures", "450", "2000", "--trajectories", "2",
            "--steps", "40", "--report-interval", "5", "--checkpoint-interval", "10",
            "--jobs", "1", "--initial", "native", "--output", out]
    assert run_script(REPO / "simulations" / "stability_chignolin.py", *args) == 0
    with open(out / "stability.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["temperature_K"], r["trajectory"]) for r in rows] == [
        ("450", "0"), ("450", "1"), ("2000", "0"), ("2000", "1")]
    # An untrained model does not hold chignolin together: at 2000 K its hydrogens fly off
    # within steps, and the engine's guards stop those trajectories, each on its own.
    hot = [r for r in rows if r["temperature_K"] == "2000"]
    assert all(r["failed"] == "1" and "engine guard" in r["reason"] for r in hot)
    for row in rows:
        failure = out / f"T{row['temperature_K']}" / f"traj_{row['trajectory']}" / "failure.json"
        assert failure.is_file() == (row["failed"] == "1" and "engine" in row["reason"])
        if failure.is_file():  # the step the engine stopped at, read from its error
            recorded = json.loads(failure.read_text())
            assert 1 <= recorded["step"] <= 40
            assert f"step {recorded['step']}" in recorded["reason"]
    summary = json.loads((out / "stability_summary.json").read_text())
    counts = summary["temperatures"]
    assert counts["2000"]["failed"] == 2 and counts["450"]["trajectories"] == 2
    assert summary["model_fingerprints"] == [model_fingerprint(tiny_model)]
    # The native structure's closest non-bonded pair is well clear of a new bond (1.2x).
    assert all(float(r["min_nonbonded_ratio"]) > 1.2 for r in rows if r["failed"] == "0")
    assert_png(out / "stability.png")
    assert summary["model"] == Path(tiny_model).name
    # The figure is redrawn from the tables alone (what the study ships).
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    for name in ("stability.csv", "stability_frames.csv.gz", "stability_summary.json"):
        (shipped / name).write_bytes((out / name).read_bytes())
    script = REPO / "analysis" / "plot_stability.py"
    assert run_script(script, shipped, tmp_path / "redrawn.png") == 0
    assert_png(tmp_path / "redrawn.png")
    (shipped / "stability.csv").unlink()
    assert run_script(script, shipped, tmp_path / "redrawn.png") == 2
    # Run again without --resume: refused at once, naming the flag.
    capsys.readouterr()
    assert run_script(REPO / "simulations" / "stability_chignolin.py", *args) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert run_script(REPO / "simulations" / "stability_chignolin.py", *args, "--seed", "-1") == 2
    assert "--seed -1" in capsys.readouterr().err
    # A second call resumes: finished and failed trajectories are kept as they are.
    before = (out / "stability.csv").read_text()
    assert run_script(REPO / "simulations" / "stability_chignolin.py", *args, "--resume") == 0
    assert (out / "stability.csv").read_text() == before


def test_a_reduced_run_redraws_the_same_numbers(remd_run, tiny_model, tmp_path):
    from freecg_md.analysis.reduced import load_reduced

    reduced_file = tmp_path / "shipped" / "remd.npz"
    assert run_script(REPO / "analysis" / "reduce_run.py", remd_run, reduced_file,
                      "--model", tiny_model) == 0
    assert reduced_file.stat().st_size < 200_000
    reduced = load_reduced(reduced_file)
    assert reduced.cvs.shape == (4, 40, 2) and reduced.ca_rmsd.shape == (4, 40)
    assert reduced.model_fingerprint == model_fingerprint(tiny_model)
    # A run that recorded its model keeps that fingerprint; another model file is refused.
    import json
    import shutil

    recorded = shutil.copytree(remd_run, tmp_path / "recorded")
    config = json.loads((recorded / "config.json").read_text())
    config["model_fingerprint"] = model_fingerprint(tiny_model)
    (recorded / "config.json").write_text(json.dumps(config))
    assert run_script(REPO / "analysis" / "reduce_run.py", recorded, tmp_path / "own.npz") == 0
    assert load_reduced(tmp_path / "own.npz").model_fingerprint == model_fingerprint(tiny_model)
    assert load_reduced(tmp_path / "own.npz").name == "recorded"  # the directory's name
    assert run_script(REPO / "analysis" / "reduce_run.py", recorded, tmp_path / "named.npz",
                      "--name", "figure 5a") == 0
    assert load_reduced(tmp_path / "named.npz").label.startswith("figure 5a (4 replicas")
    assert run_script(REPO / "analysis" / "reduce_run.py", recorded, tmp_path / "x.npz",
                      "--model", REPO / "models" / "chignolin.pt") == 2
    assert not (tmp_path / "x.npz").exists()
    for script in ("plot_landscape.py", "plot_remd.py", "plot_rmsd.py"):
        assert run_script(REPO / "analysis" / script, remd_run, "--out",
                          tmp_path / "from_run") == 0
        assert run_script(REPO / "analysis" / script, reduced_file, "--out",
                          tmp_path / "from_npz") == 0
    for name in ("basins.csv", "melting.csv", "melting.json", "acceptance.csv",
                 "remd_summary.json", "rmsd.csv", "convergence.json"):
        assert (tmp_path / "from_run" / name).read_text() == (
            tmp_path / "from_npz" / name).read_text(), name


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "log.csv").write_text(
            (d / "log.csv").read_text().replace("epot_r1_eV", "energy_r1")),
         "log.csv has no column 'epot_r1_eV'"),
        (lambda d: (d / "frames.csv").write_text(
            (d / "frames.csv").read_text().replace("\n4,", "\nfour,", 1)),
         "frames.csv, line 6, column 'frame': 'four' is not a number"),
        (lambda d: (d / "log.csv").unlink(), "log.csv is missing"),
        (lambda d: (d / "config.json").write_text("{}"), "is not a run's config"),
    ],
)
def test_analysis_scripts_name_a_damaged_file_and_column_without_a_traceback(
        remd_run, tmp_path, capsys, damage, message):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(remd_run, broken)
    damage(broken)
    for script in ("plot_landscape.py", "plot_remd.py", "plot_rmsd.py"):
        assert run_script(REPO / "analysis" / script, broken, "--out", tmp_path / "p") == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (script, err)


def test_basin_errors_picks_labels_once_and_redraws(remd_run, tiny_model, tmp_path, capsys):
    labelled = tmp_path / "conformations.extxyz"
    args = ["--labelled", labelled, "--out", tmp_path / "figures", "--model",
            f"tiny={tiny_model}", "--reference", "emt", "--per-basin", "3", "--spacing",
            "0.005"]
    assert run_script(REPO / "analysis" / "basin_errors.py", remd_run, *args) == 0
    import ase.io

    frames = ase.io.read(labelled, ":")
    # On springs to the native structure every frame is folded; picks lie 5 fs apart.
    assert [a.info["basin"] for a in frames] == ["folded"] * 3
    times = sorted(a.info["time_ps"] for a in frames)
    assert np.all(np.diff(times) >= 0.005 - 1e-9)
    with open(tmp_path / "figures" / "basin_errors_summary.csv") as handle:
        summary = list(csv.DictReader(handle))
    assert [(row["model"], row["basin"], row["n"]) for row in summary] == [
        ("tiny", "folded", "3")]
    # The result is tied to the model file that made it.
    assert summary[0]["model_fingerprint"] == model_fingerprint(tiny_model)
    assert_png(tmp_path / "figures" / "basin_errors.png")
    first = (tmp_path / "figures" / "basin_errors.csv").read_text()
    # From the labelled file alone (no run, no labelling) the numbers are the same.
    capsys.readouterr()
    assert run_script(REPO / "analysis" / "basin_errors.py", *args) == 0
    assert "labelled" not in capsys.readouterr().out
    assert (tmp_path / "figures" / "basin_errors.csv").read_text() == first


def test_conformation_picks_spread_over_trajectories_and_basins():
    from freecg_md.analysis.conformations import basin_statistics, pick_conformations

    native = np.array([3.0, 6.5])
    time = np.arange(0, 10, 0.1)
    folded = np.tile(native, (100, 1))
    unfolded = np.tile([9.0, 2.0], (100, 1))
    mixed = np.where((np.arange(100) < 50)[:, None], folded, unfolded)
    picks = pick_conformations([folded, unfolded, mixed], [time] * 3, native, per_basin=6,
                               spacing_ps=1.0)
    by_basin = {b: [p for p in picks if p.basin == b] for b in ("folded", "unfolded")}
    assert len(by_basin["folded"]) == 6 and len(by_basin["unfolded"]) == 6
    assert {p.trajectory for p in by_basin["folded"]} == {0, 2}  # from both runs in turn
    for basin in by_basin.values():
        for t in {p.trajectory for p in basin}:
            mine = sorted(p.time_ps for p in basin if p.trajectory == t)
            assert np.all(np.diff(mine) >= 1.0 - 1e-9)
    # One long trajectory: spread picks cover all of it after the start, not its beginning.
    long_time = np.arange(0, 1000, 1.0)
    long_folded = np.tile(native, (1000, 1))
    spread = pick_conformations([long_folded], [long_time], native, per_basin=5,
                                spacing_ps=5.0, start_ps=100.0, spread=True)
    assert [p.time_ps for p in spread] == [100.0, 325.0, 550.0, 770.0, 995.0]
    earliest = pick_conformations([long_folded], [long_time], native, per_basin=5,
                                  spacing_ps=5.0, start_ps=100.0)
    assert [p.time_ps for p in earliest] == [100.0, 105.0, 110.0, 115.0, 120.0]
    stats = basin_statistics("m", ["folded", "folded", "unfolded", "unfolded"],
                             np.array([-1.0, -3.0, 2.0, 2.0]), np.array([1.0, 1.0, 0.5, 1.5]))
    assert (stats[0].bias, stats[0].energy_mae) == (-2.0, 2.0)
    assert stats[0].bias_error == pytest.approx(1.0)  # std 1.414 / sqrt(2)
    assert (stats[1].bias, stats[1].bias_error, stats[1].force_mae) == (2.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="one of each per conformation"):
        basin_statistics("m", ["folded"], np.array([1.0, 2.0]), np.array([1.0, 2.0]))


def test_prepare_starts_writes_thermalised_start_states(tiny_model, tmp_path):
    from freecg_md.data import load_start_states

    out = tmp_path / "starts.npz"
    args = ["--model", tiny_model, "--replicas", "4", "--steps", "6", "--report-interval",
            "2", "--checkpoint-interval", "2", "--output", tmp_path / "run", "--out", out,
            "--no-bond-guard"]
    assert run_script(REPO / "simulations" / "prepare_starts.py", *args) == 0
    starts = load_start_states(out)
    from freecg_md.md import temperature_ladder

    np.testing.assert_allclose(starts.temperatures, temperature_ladder(300, 450, 4))
    assert starts.started_unfolded.tolist() == [False, True, False, True]
    assert starts.model_fingerprint == model_fingerprint(tiny_model)
    assert starts.info["equilibration"]["steps"] == 6
    for key in ("mean_temperature_last_half", "energy_drift_last_half_eV_per_ps",
                "energy_stationary_from_ps"):
        assert len(starts.info[key]) == 4
    # The states are the run's last positions and velocities.
    from freecg_md.md import load_checkpoint

    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    np.testing.assert_array_equal(starts.positions, checkpoint.positions.numpy())
    np.testing.assert_array_equal(starts.velocities, checkpoint.velocities.numpy())


def test_a_long_step_needs_heavier_hydrogens_and_is_refused_without(tiny_model, tmp_path,
                                                                     capsys):
    args = ["--model", tiny_model, "--replicas", "2", "--steps", "4", "--report-interval", "2",
            "--exchange-interval", "2", "--no-plots", "--threads", "1", "--initial", "native",
            "--equilibration-steps", "0", "--no-bond-guard", "--timestep", "3"]
    script = REPO / "simulations" / "remd_chignolin.py"
    assert run_script(script, *args, "--hydrogen-mass", "1.008", "--output",
                      tmp_path / "natural") == 2
    err = capsys.readouterr().err
    assert "timestep_fs=3: too long for the lightest atom" in err and "Traceback" not in err
    assert run_script(script, *args, "--hydrogen-mass", "3.024", "--output",
                      tmp_path / "hmr") == 0
    saved = json.loads((tmp_path / "hmr" / "config.json").read_text())
    assert saved["hydrogen_mass"] == 3.024 and saved["run"]["timestep_fs"] == 3.0


def test_the_flagship_defaults_to_2_fs_with_heavier_hydrogens(tiny_model, tmp_path, capsys):
    # The default the studies/chignolin_remd_hmr/ run checked against 1 fs: the hydrogens
    # carry 3.024 amu taken from their heavy atoms, so the molecule's mass is unchanged.
    args = ["--model", tiny_model, "--replicas", "2", "--steps", "2", "--report-interval", "2",
            "--exchange-interval", "2", "--no-plots", "--threads", "1", "--initial", "native",
            "--equilibration-steps", "0", "--no-bond-guard"]
    script = REPO / "simulations" / "remd_chignolin.py"
    assert run_script(script, *args, "--output", tmp_path / "default") == 0
    assert run_script(script, *args, "--timestep", "1", "--hydrogen-mass", "1.008",
                      "--output", tmp_path / "natural") == 0
    default = json.loads((tmp_path / "default" / "config.json").read_text())
    assert default["hydrogen_mass"] == 3.024 and default["run"]["timestep_fs"] == 2.0
    from freecg_md.md import load_checkpoint

    heavy = load_checkpoint(tmp_path / "default" / "checkpoint.pt").masses
    natural = load_checkpoint(tmp_path / "natural" / "checkpoint.pt").masses
    numbers = load_chignolin().atoms.numbers
    assert torch.allclose(heavy[numbers == 1], torch.tensor(3.024, dtype=heavy.dtype))
    assert torch.allclose(natural[numbers == 1], torch.tensor(1.008, dtype=natural.dtype))
    assert float(heavy.sum()) == pytest.approx(float(natural.sum()), rel=1e-12)
    # Resuming the natural-mass run with the default hydrogen mass is refused, not continued.
    capsys.readouterr()
    assert run_script(script, *args, "--timestep", "1", "--steps", "4", "--resume",
                      "--output", tmp_path / "natural") == 2
    err = capsys.readouterr().err
    assert "hydrogens: saved 1.008 amu, now 3.024 amu" in err and "Traceback" not in err
    # So is resuming it with another model: the run would be recorded as the new model's.
    other = save_model(FreeCG(FreeCGConfig(hidden=16, num_layers=1, num_heads=2,
                                           num_groups=2)), tmp_path / "other.pt")
    natural_args = [a if a != tiny_model else str(other) for a in args]
    assert run_script(script, *natural_args, "--timestep", "1", "--hydrogen-mass", "1.008",
                      "--steps", "4", "--resume", "--output", tmp_path / "natural") == 2
    err = capsys.readouterr().err
    assert "was made with model fingerprint" in err and "Traceback" not in err
    assert json.loads((tmp_path / "natural" / "config.json").read_text())[
        "model_fingerprint"] == model_fingerprint(tiny_model)
    # A checkpoint from before checkpoints held masses (and a run from before the flag was
    # recorded as 1.008): the hydrogen mass in config.json decides.
    checkpoint = tmp_path / "natural" / "checkpoint.pt"
    payload = torch.load(checkpoint, weights_only=True)
    del payload["masses"]
    torch.save(payload, checkpoint)
    config = json.loads((tmp_path / "natural" / "config.json").read_text())
    (tmp_path / "natural" / "config.json").write_text(json.dumps({**config,
                                                                  "hydrogen_mass": None}))
    assert run_script(script, *args, "--timestep", "1", "--steps", "4", "--resume",
                      "--output", tmp_path / "natural") == 2
    err = capsys.readouterr().err
    assert "made with hydrogen_mass=None, not 3.024" in err and "Traceback" not in err
    assert run_script(script, *args, "--timestep", "1", "--hydrogen-mass", "1.008",
                      "--steps", "4", "--resume", "--output", tmp_path / "natural") == 0


def test_the_md_scripts_run_a_committee_and_record_its_members(tiny_model, tmp_path):
    torch.manual_seed(1)
    other = save_model(FreeCG(FreeCGConfig(hidden=16, num_layers=1, num_heads=2,
                                           num_groups=2, num_basis=8, cutoff=4.0)),
                       tmp_path / "other.pt")
    output = tmp_path / "committee"
    assert run_script(REPO / "simulations" / "langevin_chignolin.py", "--model", tiny_model,
                      other, "--trajectories", "2", "--steps", "4", "--report-interval", "2",
                      "--output", output, "--threads", "1", "--initial", "native",
                      "--no-bond-guard", "--no-plots") == 0
    recorded = json.loads((output / "config.json").read_text())
    assert recorded["model"] == [str(tiny_model), str(other)]
    assert recorded["model_fingerprint"] == [model_fingerprint(tiny_model),
                                             model_fingerprint(other)]
    assert np.all(read_run(output).force_disagreement > 0)
    # A disagreement limit needs a committee.
    assert run_script(REPO / "simulations" / "langevin_chignolin.py", "--model", tiny_model,
                      "--max-force-disagreement", "0.5", "--output", tmp_path / "x") == 2


def test_plot_overlay_draws_runs_over_a_reference_landscape(remd_run, tmp_path, capsys):
    """freecg-md plot overlay: the runs' frames at the reference's lowest temperature over
    its landscape, same axes and bins, with the reference's verdict and, per run, the share
    of its frames in bins the reference visited."""
    from freecg_md.analysis.reduced import load_run, reduce_run
    from freecg_md.analysis.reports import overlay_report
    from freecg_md.cli import main

    out = tmp_path / "overlay"
    assert main(["plot", "overlay", str(remd_run), str(remd_run), "--out", str(out)]) == 0
    assert_png(out / "overlay.png")
    report = json.loads((out / "overlay.json").read_text())
    assert report["temperature_K"] == 300.0 and not report["reference_converged"]
    (numbers,) = report["runs"].values()
    assert numbers["frames"] == 40 and 0 < numbers["fraction_in_reference_bins"] <= 1
    assert "bins the reference visited" in capsys.readouterr().out
    run = load_run(remd_run)
    with pytest.raises(ValueError, match="runs is empty"):
        overlay_report(run, [], out)
    # A run with no replica at the reference's temperature is refused by name.
    hot = reduce_run(read_run(remd_run))
    hot.temperatures[:] = [500.0, 510.0, 520.0, 530.0]
    with pytest.raises(ValueError, match="no replica at 300.0 K"):
        overlay_report(run, [hot], out)


def test_timestep_check_compares_two_runs_rung_by_rung(remd_run, tiny_model, tmp_path):
    from freecg_md.analysis.reduced import load_reduced, save_reduced

    reduced = tmp_path / "remd.npz"
    assert run_script(REPO / "analysis" / "reduce_run.py", remd_run, reduced,
                      "--model", tiny_model) == 0
    # The reference: the same run with its replicas numbered in reverse, so that its
    # demultiplexing has to find each rung in other columns to give the same series.
    run_reduced = load_reduced(reduced)
    reversed_replicas = dataclasses.replace(
        run_reduced, temperature_index=run_reduced.temperature_index[:, ::-1],
        energies=run_reduced.energies[:, ::-1],
        kinetic_temperature=run_reduced.kinetic_temperature[:, ::-1],
        largest_force=run_reduced.largest_force[:, ::-1], cvs=run_reduced.cvs[::-1],
        ca_rmsd=run_reduced.ca_rmsd[::-1])
    save_reduced(reversed_replicas, tmp_path / "reversed.npz")
    out = tmp_path / "check.json"
    assert run_script(REPO / "analysis" / "timestep_check.py", tmp_path / "reversed.npz",
                      reduced, "--out", out, "--discard-ps", "0.01", "--block-ps", "0.005") == 0
    result = json.loads(out.read_text())
    run = read_run(remd_run)
    keep = run.time_ps > 0.01
    for k, row in enumerate(result["rungs"]):
        # The kinetic temperature of whichever replica held rung k at each frame.
        holder = np.argmax(run.temperature_index == k, axis=1)
        kinetic = run.kinetic_temperature[np.arange(run.n_frames), holder][keep]
        assert row["test_kinetic_ratio"][0] == pytest.approx(kinetic.mean() / run.temperatures[k])
        assert row["test_kinetic_ratio"][1] > 0
        assert row["reference_kinetic_ratio"] == row["test_kinetic_ratio"]
        assert row["potential_difference_kJ_mol"][0] == 0.0
    assert result["test"]["timestep_fs"] == 0.5
    # Runs of different ladders are not compared.
    save_reduced(dataclasses.replace(run_reduced, temperatures=run_reduced.temperatures + 10.0),
                 tmp_path / "other.npz")
    with pytest.raises(ValueError, match="different ladders"):
        run_script(REPO / "analysis" / "timestep_check.py", reduced, tmp_path / "other.npz",
                   "--out", out)


def test_energy_error_trend_and_convergence_errors_by_origin(tiny_model, tmp_path,
                                                            capsys, monkeypatch):
    """Both scripts on a split of chignolin frames stretched about their centre (a spread of
    radii of gyration), labelled by EMT: the sets are cut by origin, the biases agree with
    the training code's metrics, and the trend's R_g is the frames'."""
    import ase.io
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from freecg_md.analysis.scoring import energy_errors
    from freecg_md.analysis.structure import radius_of_gyration
    from freecg_md.train import TrainConfig
    from freecg_md.train.dataset_cache import load_training_structures
    from freecg_md.train.loop import evaluate_errors

    atoms = load_chignolin().atoms
    rng = np.random.default_rng(0)
    parts = []
    for part, n in (("classical", 12), ("own_md", 8)):
        frames = []
        for k in range(n):
            frame = atoms.copy()
            centre = frame.positions.mean(0)
            frame.positions = centre + (1.0 + 0.03 * k) * (frame.positions - centre)
            frame.positions += rng.normal(0.0, 0.02, frame.positions.shape)
            frame.calc = EMT()
            energy, forces = frame.get_potential_energy(), frame.get_forces()
            frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
            frames.append(frame)
        ase.io.write(tmp_path / f"{part}.extxyz", frames)
        parts.append(f"{part}.extxyz")
    run = tmp_path / "run"
    run.mkdir()
    (run / "split.json").write_text(json.dumps(
        {"train": [0, 1, 2, 3, 12, 13], "val": [4, 5, 14],
         "test": [6, 7, 8, 9, 10, 11, 15, 16, 17, 18, 19]}))
    (tmp_path / "config.json").write_text(json.dumps(
        {"data": parts, "output_dir": "run", "model": {"cutoff": 4.0}}))
    model = f"tiny={tiny_model}"
    out = tmp_path / "trend.json"
    assert run_script(REPO / "analysis" / "energy_error_trend.py", tmp_path / "config.json",
                      "--model", model, "--own-md-from", "1", "--out", out,
                      "--figure", tmp_path / "trend.png") == 0
    assert_png(tmp_path / "trend.png")
    report = json.loads(out.read_text())
    assert report["sets"] == {"held-out, classical MD data": 6, "held-out, own-MD frames": 5}
    assert report["models"]["tiny"]["fingerprint"] == model_fingerprint(tiny_model)
    # A --set may be a folder of extxyz files, read as training reads a data entry.
    folder = tmp_path / "again"
    folder.mkdir()
    for k, frames in enumerate((slice(0, 3), slice(3, None))):
        ase.io.write(folder / f"chunk_{k}.extxyz",
                     ase.io.read(tmp_path / "own_md.extxyz", index=frames))
    assert run_script(REPO / "analysis" / "convergence_errors.py", tmp_path / "config.json",
                      "--model", model, "--own-md-from", "1", "--training-own-md",
                      "--set", f"again={folder}", "--out", tmp_path / "e.json") == 0
    errors = json.loads((tmp_path / "e.json").read_text())["models"]["tiny"]["errors"]
    assert errors["training, own-MD frames"]["n"] == 2  # structures 12 and 13
    assert errors["again"]["n"] == 8
    config = TrainConfig.from_json(tmp_path / "config.json")
    structures, _ = load_training_structures(config)
    loaded = load_model(tiny_model).float().requires_grad_(False)
    for name, indices in (("held-out, classical MD data", range(6, 12)),
                          ("held-out, own-MD frames", range(15, 20))):
        chosen = [structures[i] for i in indices]
        direct = evaluate_errors(loaded, chosen, config, torch.device("cpu"),
                                 torch.float32).summary()
        trend = report["models"]["tiny"]["sets"][name]
        np.testing.assert_allclose(trend["bias_meV_per_atom"],
                                   direct["energy_bias_per_atom_eV"] * 1e3, rtol=1e-4)
        np.testing.assert_allclose(errors[name]["energy_bias_meV_per_atom"],
                                   trend["bias_meV_per_atom"], rtol=1e-4)
        np.testing.assert_allclose(errors[name]["force_mae_eV_per_A"],
                                   direct["force_mae_eV_per_A"], rtol=1e-5)
        masses = atoms.get_masses()
        rg = [float(radius_of_gyration(s.positions.double().numpy(), masses)) for s in chosen]
        np.testing.assert_allclose(trend["rg_range_A"], [min(rg), max(rg)], rtol=1e-6)
        assert trend["n"] == len(chosen) and sum(b["n"] for b in trend["by_rg"]) <= len(chosen)
        np.testing.assert_allclose(trend["mean_reference_force_eV_per_A"],
                                   np.mean([s.forces.abs().mean() for s in chosen]), rtol=1e-5)
    # The bias by data entry and split: the own-MD test frames' mean is the trend's bias
    # there; every own-MD frame (all splits) and the classical test frames are grouped.
    # The bias by data entry and split, with the own-MD frames in two entries: each
    # entry's means are those of its own structures.
    own_frames = ase.io.read(tmp_path / "own_md.extxyz", index=":")
    ase.io.write(tmp_path / "own_a.extxyz", own_frames[:4])
    ase.io.write(tmp_path / "own_b.extxyz", own_frames[4:])
    (tmp_path / "config2.json").write_text(json.dumps(
        {"data": ["classical.extxyz", "own_a.extxyz", "own_b.extxyz"], "output_dir": "run",
         "model": {"cutoff": 4.0}}))
    assert run_script(REPO / "analysis" / "energy_bias_sources.py", tmp_path / "config2.json",
                      "--model", model, "--own-md-from", "1",
                      "--set", f"again={tmp_path / 'own_md.extxyz'}",
                      "--out", tmp_path / "b.json") == 0
    sources = json.loads((tmp_path / "b.json").read_text())
    classical, own_a, own_b = sources["by_data_entry"]
    assert not classical["own_md"] and own_a["own_md"] and own_b["own_md"]
    assert set(classical) & {"train", "val"} == set() and classical["test"]["n"] == 6
    assert [own_a[split]["n"] for split in ("train", "val", "test")] == [2, 1, 1]
    assert own_b["test"]["n"] == 4 and "train" not in own_b
    assert [row["frames"] for row in (classical, own_a, own_b)] == [12, 4, 4]
    for row, indices, split in ((own_a, [12, 13], "train"), (own_b, [16, 17, 18, 19], "test"),
                                (classical, range(6, 12), "test")):
        direct = energy_errors(loaded, [structures[i] for i in indices])
        np.testing.assert_allclose(row[split]["mean"], direct.mean(), rtol=1e-4)
    # The same 8 own-MD frames read again as a --set: the same bias and ranges.
    again, every = sources["sets"]["again"], sources["sets"]["own MD, all splits"]
    assert again["n"] == every["n"] == 8
    np.testing.assert_allclose(again["bias"]["mean"], every["bias"]["mean"], rtol=1e-4)
    np.testing.assert_allclose(again["ranges"]["rg"], every["ranges"]["rg"], rtol=1e-6)
    assert run_script(REPO / "analysis" / "energy_bias_sources.py", tmp_path / "config2.json",
                      "--model", model, "--set", f"own MD, all splits={tmp_path / 'a.extxyz'}",
                      "--own-md-from", "1", "--out", tmp_path / "c.json") == 1
    assert "that name is taken" in capsys.readouterr().err
    # A run continuing another on more data (init_from; here its first 16 structures): the
    # own-MD frames it added are sets of their own, the earlier ones keep theirs.
    from types import SimpleNamespace

    from freecg_md.analysis import scoring

    monkeypatch.setattr(scoring, "starting_point",
                        lambda config: SimpleNamespace(n_structures=16))
    sets = scoring.held_out_sets(config, 1, None, 4.0, training_own_md=True)
    assert {name: len(part) for name, part in sets.items()} == {
        "held-out, classical MD data": 6, "held-out, own-MD frames": 1,
        "held-out, added own-MD frames": 4, "training, own-MD frames": 2}
    assert torch.equal(sets["held-out, added own-MD frames"][0].positions,
                       structures[16].positions)


def test_closest_unbonded_contact_sees_a_hydrogen_pressed_on_an_oxygen():
    from freecg_md.analysis.scoring import closest_unbonded_contact

    chignolin = load_chignolin()
    native = chignolin.native_positions
    numbers = chignolin.atoms.numbers
    pressed = native.copy()
    hydrogen = int(np.flatnonzero(numbers == 1)[0])
    oxygens = np.flatnonzero(numbers == 8)
    far = oxygens[np.argmax(np.linalg.norm(native[oxygens] - native[hydrogen], axis=1))]
    # The hydrogen 1.0 Å from an oxygen across the molecule: 1.0 / (0.31 + 0.66) Å.
    pressed[hydrogen] = native[far] + np.array([1.0, 0.0, 0.0])
    contact = closest_unbonded_contact(np.stack([native, pressed]), numbers, native)
    assert contact[0] > 1.2
    assert contact[1] <= 1.0 / 0.97 + 1e-9  # that pair, or a closer one next to it


def test_committee_points_are_the_committees_spread_and_error(tiny_model, tmp_path):
    """scoring.committee_points: per conformation the committee's largest
    per-atom force standard deviation and its mean force's largest per-atom error, as the
    committee computes them on that conformation alone."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    from freecg_md.analysis.scoring import committee_points
    from freecg_md.committee import load_committee
    from freecg_md.train.data import collate, structures_from_atoms

    torch.manual_seed(1)
    other = save_model(FreeCG(load_model(tiny_model).config), tmp_path / "other.pt")
    frames = []
    for k in range(3):
        frame = load_chignolin().atoms.copy()
        frame.positions += np.random.default_rng(k).normal(0.0, 0.03, frame.positions.shape)
        frame.calc = EMT()
        energy, forces = frame.get_potential_energy(), frame.get_forces()
        frame.calc = SinglePointCalculator(frame, energy=energy, forces=forces)
        frames.append(frame)
    structures = structures_from_atoms(frames, cutoff=4.0)
    spread, error = committee_points([tiny_model, other], structures)
    assert spread.shape == error.shape == (3,)
    committee = load_committee([tiny_model, other]).requires_grad_(False).eval()
    for k, structure in enumerate(structures):
        batch = collate([structure]).to(torch.device("cpu"), torch.float32)
        out = committee.energy_and_forces(batch.numbers, batch.positions, batch.edge_index,
                                          batch.shifts, batch.batch, 1)
        assert spread[k] == pytest.approx(float(out["forces_std"].max()), rel=1e-5)
        assert error[k] == pytest.approx(
            float((out["forces"] - batch.forces).norm(dim=-1).max()), rel=1e-5)
    assert (spread > 0).all()


def test_learning_curve_fits_levelling_runs_and_declines_steady_ones(tmp_path, capsys):
    """learning_curve.py: a run whose errors level off gets its limit and the epoch of a
    target short of it; a run still falling at a steady pace gets no limit, only the
    reason; the fit starts at the run's recorded stage-two epoch by default."""
    fields = ["epoch", "step", "lr", "train_loss", "val_loss", "val_energy_mae_per_atom_eV",
              "val_force_mae_eV_per_A", "best", "elapsed_s"]
    epochs = np.arange(12)
    runs = {"levelling": (0.021 + 0.01 * 0.7 ** epochs, 4e-4 + 6e-4 * 0.6 ** epochs, None),
            "steady": (0.03 - 5e-4 * epochs, 1e-3 - 2e-5 * epochs, 3)}
    for name, (force, energy, stage_two) in runs.items():
        run = tmp_path / name
        run.mkdir()
        with (run / "log.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(fields)
            for k in epochs:
                writer.writerow([k, 100 * k, 2e-4, 0.0, 0.0, energy[k], force[k], 1, 0.0])
        (run / "config.json").write_text(json.dumps(
            {"train": {"stage_two_epoch": stage_two}}))
    out = tmp_path / "curve.json"
    assert run_script(REPO / "analysis" / "learning_curve.py", tmp_path / "levelling",
                      tmp_path / "steady", "--force-target", "0.0215", "--out", out,
                      "--figure", tmp_path / "curve.png") == 0
    assert_png(tmp_path / "curve.png")
    report = json.loads(out.read_text())["runs"]
    levelling = report["levelling"]
    force = levelling["force_mae"]
    assert force["first_fitted_epoch"] == 0
    assert force["fit"]["limit"] == pytest.approx(0.021, abs=1e-6)
    assert force["epoch_reaching_target"] == pytest.approx(np.log(0.05) / np.log(0.7), rel=1e-3)
    assert levelling["energy_mae"]["fit"]["limit"] == pytest.approx(0.4, abs=1e-3)
    assert levelling["energy_mae"]["epoch_reaching_target"] == pytest.approx(
        np.log(0.1 / 0.6) / np.log(0.6), rel=1e-3)
    assert all(abs(limit - 0.021) < 1e-5
               for _, limit, _ in force["limit_by_last_epoch_fitted"])
    steady = report["steady"]
    assert steady["force_mae"]["first_fitted_epoch"] == 3
    assert steady["force_mae"]["fit"] is None
    assert "steady pace" in steady["force_mae"]["reason"]
    assert all(limit is None for _, limit, _ in steady["force_mae"]["limit_by_last_epoch_fitted"])
    # A start for one metric only.
    assert run_script(REPO / "analysis" / "learning_curve.py", tmp_path / "steady",
                      "--from-epoch", "energy_mae=5", "--out", out) == 0
    steady = json.loads(out.read_text())["runs"]["steady"]
    assert steady["energy_mae"]["first_fitted_epoch"] == 5
    assert steady["force_mae"]["first_fitted_epoch"] == 3
    # A damaged log is named, without a traceback.
    log = tmp_path / "steady" / "log.csv"
    log.write_text(log.read_text().replace("0.03,", "n/a,", 1))
    capsys.readouterr()
    assert run_script(REPO / "analysis" / "learning_curve.py", tmp_path / "steady",
                      "--out", out) == 2
    err = capsys.readouterr().err
    assert "val_force_mae_eV_per_A holds a value that is not a number" in err


def test_a_named_path_without_a_name_is_refused_naming_its_option(monkeypatch):
    import argparse

    monkeypatch.syspath_prepend(str(REPO / "analysis"))
    from report_cli import parse_set

    assert parse_set("probe=a/b.extxyz") == ("probe", Path("a/b.extxyz"))
    for text in ("a/b.extxyz", "=a/b.extxyz", "probe="):
        with pytest.raises(argparse.ArgumentTypeError, match="--set .*expected NAME=PATH"):
            parse_set(text)
