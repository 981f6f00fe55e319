"""Classical replica exchange of chignolin (OpenMM amber14 + GBn2): the reference ensemble
in the project's run-directory format, resumable exactly."""

import numpy as np
import pytest

pytest.importorskip("openmm")

from freecg_md.analysis.rundir import read_run  # noqa: E402
from freecg_md.classical_remd import ClassicalREMDConfig, run_classical_remd  # noqa: E402


def config(tmp_path, name, cycles, **overrides):
    return ClassicalREMDConfig(**{
        "temperatures": [300.0, 340.0, 380.0], "n_cycles": cycles,
        "output_dir": str(tmp_path / name), "steps_per_cycle": 5, "checkpoint_every": 2,
        "platform": "Reference", "seed": 3, **overrides})


def test_a_resumed_run_equals_an_uninterrupted_one_and_reads_back(tmp_path):
    whole = run_classical_remd(config(tmp_path, "whole", 6), progress=False)
    run_classical_remd(config(tmp_path, "parts", 4), progress=False)
    parts = run_classical_remd(config(tmp_path, "parts", 6), resume=True, progress=False)
    assert parts["n_attempts"] == whole["n_attempts"] == 6
    assert parts["temperature_of_replica"] == whole["temperature_of_replica"]
    a, b = read_run(tmp_path / "whole"), read_run(tmp_path / "parts")
    assert a.positions.shape == (3, 6, 166, 3)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_allclose(a.energies, b.energies, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(a.temperature_index, b.temperature_index)
    # Energies in eV for chignolin in GBn2: large and negative; kinetic temperatures near
    # the baths after a few fs from velocities drawn at them.
    assert np.all(a.energies < -10) and np.all(np.abs(a.kinetic_temperature - 340) < 150)
    assert a.config["force_field"].startswith("amber14")


def test_a_run_is_not_overwritten_and_a_changed_setting_is_refused(tmp_path):
    run_classical_remd(config(tmp_path, "run", 2), progress=False)
    with pytest.raises(FileExistsError, match="holds a run"):
        run_classical_remd(config(tmp_path, "run", 2), progress=False)
    with pytest.raises(ValueError, match="another configuration"):
        run_classical_remd(config(tmp_path, "run", 4, timestep_fs=2.0), resume=True,
                           progress=False)


@pytest.mark.parametrize("overrides,message", [
    ({"temperatures": [300.0, 300.0]}, "strictly increasing"),
    ({"steps_per_cycle": 0}, "steps_per_cycle=0"),
    ({"constrain_hydrogen_bonds": False}, "must be constrained"),
])
def test_bad_settings_are_refused(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, "bad", 2, **overrides)


def test_the_gbn2_implementation_may_change_when_a_run_resumes(tmp_path):
    # OpenMM's CustomGBForce and freecg_md.gbn2 compute the same force field: like the
    # platform, the choice is not part of the run's physics.
    run_classical_remd(config(tmp_path, "run", 2, gbn2="openmm"), progress=False)
    summary = run_classical_remd(config(tmp_path, "run", 4, gbn2="torch"), resume=True,
                                 progress=False)
    assert summary["n_attempts"] == 4
    run = read_run(tmp_path / "run")
    assert run.positions.shape[1] == 4 and run.config["classical"]["gbn2"] == "torch"
    assert run.config["gbn2_from_cycle"] == [[0, "openmm"], [2, "torch"]]
    with pytest.raises(ValueError, match="gbn2='amber': expected 'auto', 'torch' or 'openmm'"):
        config(tmp_path, "other", 2, gbn2="amber")


def test_replicas_stepped_from_several_threads_give_the_same_run(tmp_path):
    # Each replica has its own integrator and random stream; GBn2 in torch (shared compiled
    # function, one thread each call) gives the same forces whichever thread asks.
    kwargs = {"platform": "CPU", "gbn2": "torch", "threads": 1}
    run_classical_remd(config(tmp_path, "one", 3, **kwargs), progress=False)
    run_classical_remd(config(tmp_path, "two", 3, workers=2, **kwargs), progress=False)
    a, b = read_run(tmp_path / "one"), read_run(tmp_path / "two")
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.energies, b.energies)
    np.testing.assert_array_equal(a.temperature_index, b.temperature_index)
    with pytest.raises(ValueError, match="workers=0"):
        config(tmp_path, "bad", 2, workers=0)
