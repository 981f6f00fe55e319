"""Equilibration detection, decorrelation, error bars, the convergence verdict and its gating,
and the analysis functions' refusal of bad input."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from freecg_md.analysis import (
    KB_KCAL,
    acceptance_per_pair,
    chignolin_cvs,
    folded_unfolded_basins,
    frames_at_temperature,
    free_energy_2d,
    mbar_weights,
    radius_of_gyration,
    rmsd,
    round_trips,
)
from freecg_md.analysis.convergence import ConvergenceCriteria, assess_run, basin_changes
from freecg_md.analysis.reports import basin_summary, landscape_report
from freecg_md.analysis.rundir import RunData
from freecg_md.analysis.statistics import (
    block_bootstrap,
    decorrelated_indices,
    detect_equilibration,
    folded_mask,
    folding_free_energy,
    geometric_approach,
    linear_trend,
    melting_temperature,
    statistical_inefficiency,
    two_state_fraction,
)
from freecg_md.data import load_chignolin


def ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    """A stationary AR(1) series of unit variance: statistical inefficiency (1+phi)/(1-phi)."""
    noise = rng.normal(size=n) * np.sqrt(1 - phi**2)
    x = np.empty(n)
    x[0] = rng.normal()
    for t in range(1, n):
        x[t] = phi * x[t - 1] + noise[t]
    return x


def test_inefficiency_of_an_ar1_series_and_the_start_of_equilibrium():
    rng = np.random.default_rng(0)
    series = ar1(20_000, 0.8, rng)
    assert statistical_inefficiency(series) == pytest.approx(9.0, rel=0.25)
    # A decaying transient of 20 standard deviations before the stationary part.
    transient = 20.0 * np.exp(-np.arange(20_000) / 300.0)
    found = detect_equilibration(series + transient)
    assert 600 < found.start < 3_000
    assert found.inefficiency == pytest.approx(9.0, rel=0.3)
    assert found.n_effective == pytest.approx((20_000 - found.start) / found.inefficiency)
    frames = decorrelated_indices(100, 9.5, start=10)
    assert frames[0] == 10 and np.all(np.diff(frames) >= 9) and frames[-1] < 100


def test_folding_free_energy_and_its_error_on_independent_samples():
    rng = np.random.default_rng(1)
    folded = rng.random(4_000) < 0.3
    estimate = folding_free_energy(folded, 300.0, n_bootstrap=400)
    assert estimate.fraction == pytest.approx(0.3, abs=0.03)
    assert estimate.fraction_error == pytest.approx(np.sqrt(0.3 * 0.7 / 4_000), rel=0.3)
    expected = -KB_KCAL * 300.0 * np.log(0.3 / 0.7)
    assert estimate.free_energy == pytest.approx(expected, abs=0.1)
    # d(dG)/dp = -kT / (p (1 - p)): the error propagates accordingly.
    assert estimate.free_energy_error == pytest.approx(
        KB_KCAL * 300.0 * estimate.fraction_error / 0.21, rel=0.3)
    one_sided = folding_free_energy(np.ones(50, bool), 300.0)
    assert one_sided.free_energy is None and one_sided.fraction == 1.0


def test_a_free_energy_undefined_on_some_resamples_has_an_infinite_error():
    """With 2 folded frames in 100 some resamples hold no folded frame, where dG is
    undefined: the error is infinite rather than the spread of the other resamples."""
    folded = np.zeros(100, bool)
    folded[[10, 60]] = True
    estimate = folding_free_energy(folded, 300.0, n_bootstrap=200)
    assert estimate.free_energy == pytest.approx(-KB_KCAL * 300.0 * np.log(2 / 98))
    assert estimate.free_energy_error == np.inf
    assert np.isfinite(estimate.fraction_error)


def test_mean_and_standard_error():
    from freecg_md.analysis import mean_and_standard_error

    assert mean_and_standard_error(np.array([1.0, 2.0, 3.0])) == pytest.approx(
        (2.0, 1.0 / np.sqrt(3.0)))
    mean, error = mean_and_standard_error(np.array([4.0]))
    assert mean == 4.0 and np.isnan(error)
    assert np.isnan(mean_and_standard_error(np.array([]))).all()


def test_block_bootstrap_rounds_a_fractional_block_up():
    series = np.random.default_rng(3).normal(size=600)
    assert block_bootstrap(series, np.mean, block=2.2, seed=4) == block_bootstrap(
        series, np.mean, block=3, seed=4)


def test_block_bootstrap_sees_correlation_that_single_samples_hide():
    rng = np.random.default_rng(2)
    series = ar1(10_000, 0.95, rng)  # g = 39
    _, naive = block_bootstrap(series, np.mean, block=1, n_bootstrap=300)
    _, blocked = block_bootstrap(series, np.mean, block=200, n_bootstrap=300)
    assert blocked > 3 * naive
    assert blocked == pytest.approx(np.sqrt(39 / 10_000), rel=0.4)


# -- the verdict and its gating, on synthetic chignolin runs --------------------------

@pytest.fixture(scope="module")
def chignolin():
    return load_chignolin()


@pytest.fixture(scope="module")
def unfolded_positions(chignolin):
    """An unfolded conformation of the shipped classical sampling (far from native)."""
    from pathlib import Path

    frames = np.load(Path(__file__).resolve().parents[2] / "data" / "chignolin" /
                     "frames_flexible.npz")["positions"].astype(np.float64)
    native = chignolin_cvs(chignolin.native_positions[None], chignolin.topology)[0]
    cvs = chignolin_cvs(frames, chignolin.topology)
    return frames[int(np.argmax(np.linalg.norm(cvs - native, axis=1)))]


def synthetic_run(tmp_path, chignolin, unfolded, p_folded: float, n_frames: int = 400,
                  kinetic_ratio: float = 1.0) -> RunData:
    """One replica at 300 K whose independent frames are native or unfolded at random."""
    rng = np.random.default_rng(3)
    folded = rng.random(n_frames) < p_folded
    base = np.where(folded[:, None, None], chignolin.native_positions[None], unfolded[None])
    positions = base + rng.normal(scale=0.02, size=base.shape)
    energies = rng.normal(size=(n_frames, 1))
    (tmp_path / "config.json").write_text(json.dumps({"run": {"temperatures": [300.0]}}))
    return RunData(tmp_path, {"run": {"temperatures": [300.0]}}, np.array([300.0]),
                   np.arange(1, n_frames + 1) * 50, np.arange(1, n_frames + 1) * 0.05,
                   positions[None].astype(np.float32), energies,
                   np.zeros((n_frames, 1), np.int64), chignolin.topology,
                   np.full((n_frames, 1), 300.0 * kinetic_ratio), np.ones((n_frames, 1)),
                   np.full((n_frames, 1), np.nan))


def test_a_converged_run_shows_depths(tmp_path, chignolin, unfolded_positions):
    run = synthetic_run(tmp_path, chignolin, unfolded_positions, p_folded=0.6)
    report = landscape_report(run, tmp_path / "plots")
    assert report["converged"], report["verdict"]
    depths = {b["name"]: b["free_energy"] for b in report["basins"]["histogram"]}
    # Two populated basins: folded at 0, unfolded kT ln(0.6/0.4) above it (binned).
    assert depths["folded"] == 0.0 and depths["unfolded"] > 0
    assert "kcal/mol" in basin_summary(report["basins"]["histogram"])
    assert (tmp_path / "plots" / "landscape_histogram.csv").is_file()
    saved = json.loads((tmp_path / "plots" / "convergence.json").read_text())
    assert saved["converged"] and saved["folding_free_energy"] is not None
    assert saved["folding_free_energy"] == pytest.approx(
        -KB_KCAL * 300 * np.log(saved["folded_fraction"] / (1 - saved["folded_fraction"])))


@pytest.mark.parametrize(
    ("p_folded", "kinetic_ratio", "reason"),
    [(1.0, 1.0, "0 unfolded decorrelated samples"),
     (0.6, 0.9, "mean kinetic temperature off its target"),
     (1.0, 1.0, "folding free energy undefined"),
     (0.01, 1.0, "folding free energy unbounded in error")],
)
def test_a_run_that_is_not_converged_shows_no_depths(tmp_path, chignolin, unfolded_positions,
                                                       p_folded, kinetic_ratio, reason):
    run = synthetic_run(tmp_path, chignolin, unfolded_positions, p_folded,
                        kinetic_ratio=kinetic_ratio)
    report = landscape_report(run, tmp_path / "plots")
    assert not report["converged"] and reason in report["verdict"]
    saved = json.loads((tmp_path / "plots" / "convergence.json").read_text())
    assert saved["folding_free_energy_error"] is None or np.isfinite(
        saved["folding_free_energy_error"])
    assert all(b["free_energy"] is None for b in report["basins"]["histogram"])
    assert "kcal/mol" not in basin_summary(report["basins"]["histogram"])
    assert not (tmp_path / "plots" / "landscape_histogram.csv").exists()
    rows = (tmp_path / "plots" / "basins.csv").read_text().splitlines()[1:]
    assert all(row.split(",")[2] == "" for row in rows)  # no depth written
    if p_folded == 1.0:
        assert "unfolded not visited" in basin_summary(report["basins"]["histogram"])


def test_other_temperatures_are_spaced_by_their_own_inefficiency_where_longer(
        tmp_path, chignolin, unfolded_positions):
    """Frames that stay in one basin for 20 frames at a time are far fewer than 400
    independent samples: spaced by their own inefficiency, not by the target's g = 1."""
    from freecg_md.analysis.reports import _decorrelated_cvs_at

    run = synthetic_run(tmp_path, chignolin, unfolded_positions, 0.5)
    blocks = np.repeat(np.random.default_rng(4).random(20) < 0.5, 20)
    base = np.where(blocks[:, None, None], chignolin.native_positions[None],
                    unfolded_positions[None])
    noise = np.random.default_rng(5).normal(scale=0.02, size=base.shape)
    correlated = dataclasses.replace(run, positions=(base + noise)[None].astype(np.float32))
    given, _ = _decorrelated_cvs_at(correlated, 0, 0, 1.0)
    own, _ = _decorrelated_cvs_at(correlated, 0, 0, 1.0, own=True)
    assert len(given) == 400 and len(own) < 400 / 5


def test_the_landscape_report_takes_one_folded_radius(tmp_path, chignolin, unfolded_positions):
    run = synthetic_run(tmp_path, chignolin, unfolded_positions, 0.6)
    with pytest.raises(ValueError, match="folded_radius=1.5 and criteria.folded_radius=2.0"):
        landscape_report(run, tmp_path / "plots", folded_radius=1.5,
                         criteria=ConvergenceCriteria(folded_radius=2.0))
    # Given once, in either place, it is the radius of the verdict and of the basins.
    for given in (dict(criteria=ConvergenceCriteria(folded_radius=2.0)),
                  dict(folded_radius=2.0)):
        report = landscape_report(run, tmp_path / "plots", **given)
        saved = json.loads((tmp_path / "plots" / "convergence.json").read_text())
        assert saved["criteria"]["folded_radius"] == 2.0 and report["basins"]


def test_the_kinetic_temperature_is_judged_over_the_whole_run(tmp_path, chignolin,
                                                              unfolded_positions):
    # The target's observables equilibrate after 100 frames; the thermostat ran 6 % cold
    # before and 3.5 % hot after, 1.1 % hot over the run: judged over the run, not only
    # over the region the target's observables call equilibrated.
    run = synthetic_run(tmp_path, chignolin, unfolded_positions, p_folded=0.6)
    energies = run.energies.copy()
    energies[:100] += 20.0
    kinetic = np.full_like(run.kinetic_temperature, 300.0 * 1.035)
    kinetic[:100] = 300.0 * 0.94
    run = dataclasses.replace(run, energies=energies, kinetic_temperature=kinetic)
    native = chignolin_cvs(chignolin.native_positions[None], chignolin.topology)[0]
    assessment = assess_run(run, native)
    assert assessment.start_frame >= 90
    assert assessment.kinetic_temperature_ratio == [pytest.approx(1.01125)]
    assert not any("kinetic" in reason for reason in assessment.reasons)


def test_basin_changes_count_folding_and_unfolding_between_consecutive_samples(
        tmp_path, chignolin, unfolded_positions):
    assert basin_changes(np.array([True, True, False, False, True, False])) == 3
    assert basin_changes(np.array([True])) == 0 and basin_changes(np.ones(5, bool)) == 0
    run = synthetic_run(tmp_path, chignolin, unfolded_positions, p_folded=0.6)
    native = chignolin_cvs(chignolin.native_positions[None], chignolin.topology)[0]
    assessment = assess_run(run, native)
    cvs, _ = run.cvs_at(0)
    folded = folded_mask(cvs[assessment.decorrelated_frames], native, 1.5)
    assert assessment.n_transitions == basin_changes(folded) > 0


def test_demultiplexing_refuses_a_temperature_outside_the_ladder(
        tmp_path, chignolin, unfolded_positions):
    """An index outside the ladder matches no replica: refused, not read as replica 0."""
    run = synthetic_run(tmp_path, chignolin, unfolded_positions, p_folded=0.6)
    for bad in (-1, len(run.temperatures)):
        with pytest.raises(ValueError, match=f"temperature_index={bad}: expected 0 to"):
            run.frames_at(bad)
        with pytest.raises(ValueError, match=f"temperature_index={bad}: expected 0 to"):
            run.cvs_at(bad)


def test_criteria_are_explicit_and_configurable(tmp_path, chignolin, unfolded_positions):
    run = synthetic_run(tmp_path, chignolin, unfolded_positions, p_folded=0.6)
    strict = assess_run(run, chignolin_cvs(chignolin.native_positions[None],
                                           chignolin.topology)[0],
                        criteria=ConvergenceCriteria(min_samples_per_basin=10_000))
    assert not strict.converged and "fewer than 10000 in a basin" in strict.verdict()


# -- bad input: a clear ValueError, never a silent NaN ---------------------------------

NAN = float("nan")


def test_linear_trend_recovers_a_slope_within_its_error():
    rng = np.random.default_rng(1)
    x = rng.uniform(6.0, 9.0, 400)
    y = -1.5 * x + rng.normal(0.0, 0.5, x.size)  # e.g. meV/atom against Å
    trend = linear_trend(x, y)
    assert trend.n == 400 and abs(trend.slope + 1.5) < 3 * trend.slope_error
    assert 0.01 < trend.slope_error < 0.1 and trend.spearman < -0.8 and trend.p_value < 1e-10
    flat = linear_trend(x, rng.normal(0.0, 0.5, x.size))
    assert abs(flat.slope) < 4 * flat.slope_error and flat.p_value > 1e-3


def test_geometric_approach_recovers_the_limit_of_a_levelling_curve():
    """A validation error by epoch, 0.020 + 0.006 * 0.75^n with scatter: the limit within
    its error, the ratio, the epochs to a target short of the limit, none beyond it."""
    rng = np.random.default_rng(2)
    epochs = np.arange(9, 25)
    curve = 0.020 + 0.006 * 0.75 ** (epochs - 9)
    fit = geometric_approach(epochs, curve + rng.normal(0.0, 5e-5, epochs.size))
    assert fit.n == 16 and fit.first == 9
    assert abs(fit.limit - 0.020) < 3 * fit.limit_error and fit.limit_error < 2e-4
    assert abs(fit.ratio - 0.75) < 3 * fit.ratio_error
    assert 3e-5 < fit.rms_residual < 8e-5
    exact = geometric_approach(epochs, curve)
    assert exact.steps_to(0.0215) == pytest.approx(np.log(0.25) / np.log(0.75), rel=1e-4)
    assert exact.steps_to(0.0195) is None
    assert exact.steps_to(0.03) == 0.0  # the curve starts below it
    assert exact.last == 24 and exact.fraction_seen == pytest.approx(1 - 0.75 ** 15)
    assert exact.at(epochs) == pytest.approx(curve, abs=1e-9)
    for n, y, match in ((epochs[:3], curve[:3], "at least 4"),
                        (epochs[::-1], curve, "increase strictly"),
                        (epochs, curve[:-1], "one y per n")):
        with pytest.raises(ValueError, match=match):
            geometric_approach(n, y)


def test_radius_of_gyration_of_simple_shapes(chignolin):
    # Two points 2 Å apart: each 1 Å from the centre; a heavier one pulls the centre to it.
    pair = np.array([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    assert radius_of_gyration(pair) == pytest.approx(1.0)
    assert radius_of_gyration(pair, masses=[3.0, 1.0]) == pytest.approx(np.sqrt(0.75))
    # Frames at once, and mdtraj's geometric radius of gyration on the native structure.
    positions = chignolin.native_positions
    frames = np.stack([positions, 2.0 * positions])
    rg = radius_of_gyration(frames)
    assert rg.shape == (2,) and rg[1] == pytest.approx(2.0 * rg[0])
    import mdtraj
    expected = mdtraj.compute_rg(mdtraj.Trajectory(positions[None] / 10.0,
                                                   chignolin.topology))[0] * 10.0
    assert rg[0] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: free_energy_2d([1.0, NAN], [1.0, 2.0], 300), "x holds 1 NaN"),
        (lambda: free_energy_2d([1.0, 2.0], [1.0, np.inf], 300), "y holds 1 NaN or infinite"),
        (lambda: free_energy_2d([1.0, 2.0], [1.0, 2.0], 0.0), "expected temperatures > 0"),
        (lambda: free_energy_2d([1.0, 2.0], [1.0, 2.0], -5.0), "expected temperatures > 0"),
        (lambda: free_energy_2d([1.0, 2.0], [1.0, 2.0], NAN), "temperature holds 1 NaN"),
        (lambda: free_energy_2d([], [], 300), "x is empty"),
        (lambda: free_energy_2d([1.0, 2.0], [1.0], 300), "equal length"),
        (lambda: free_energy_2d([1.0, 2.0], [1.0, 2.0], 300, weights=[1.0, NAN]),
         "weights holds 1 NaN"),
        (lambda: free_energy_2d([1.0, 2.0], [1.0, 2.0], 300, weights=[1.0]), "weights has 1"),
        (lambda: mbar_weights([1.0, NAN], [300.0, 350.0], 300.0), "energies holds 1 NaN"),
        (lambda: mbar_weights([1.0, 2.0], [300.0, 0.0], 300.0), "sampled_temperature"),
        (lambda: mbar_weights([1.0, 2.0], [300.0, 350.0], -1.0), "target_temperature"),
        (lambda: mbar_weights([1.0, 2.0, 3.0], [300.0, 350.0], 300.0), "same shape"),
        (lambda: frames_at_temperature([[0, 0], [1, 0]], 0), "row 0 is \\[0, 0\\], not a "
                                                             "permutation"),
        (lambda: round_trips([[0, 1], [1, 1]]), "row 1 is \\[1, 1\\]"),
        (lambda: acceptance_per_pair([[0, 1], [0, 2]]), "not a permutation"),
        (lambda: acceptance_per_pair(np.zeros((0, 2))), "expected a non-empty"),
        (lambda: round_trips([[0.0, NAN]]), "NaN or infinite"),
        (lambda: statistical_inefficiency([1.0, NAN, 2.0]), "series holds 1 NaN"),
        (lambda: detect_equilibration([1.0]), "series is empty or too short"),
        (lambda: folding_free_energy(np.array([True, False]), 0.0), "expected temperatures > 0"),
        (lambda: folding_free_energy(np.array([], bool), 300.0), "non-empty"),
        (lambda: folding_free_energy(np.array([True, False]), 300.0, weights=[1.0]),
         "weights has 1 values"),
        (lambda: folded_mask(np.array([[1.0, NAN]]), (1.0, 2.0)), "cvs holds 1 NaN"),
        (lambda: block_bootstrap(np.arange(3.0), np.mean, block=2), "at least 2 blocks"),
        (lambda: block_bootstrap(np.arange(9.0), np.mean, block=0), "block=0: expected"),
        (lambda: block_bootstrap(np.arange(9.0), np.mean, block=-5), "block=-5: expected"),
        (lambda: block_bootstrap(np.arange(9.0), np.mean, block=NAN), "block=nan"),
        (lambda: block_bootstrap(np.arange(9.0), np.mean, n_bootstrap=1), "n_bootstrap=1"),
        (lambda: block_bootstrap(np.arange(9.0), np.mean, n_bootstrap=2.5), "whole number"),
        (lambda: block_bootstrap(np.array([1.0, NAN, 2.0]), np.mean), "samples holds NaN"),
        (lambda: linear_trend([1.0, 2.0, 3.0], [1.0, 2.0]), "one y per x"),
        (lambda: linear_trend([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), "not all equal"),
        (lambda: linear_trend([1.0, 2.0, NAN], [1.0, 2.0, 3.0]), "x holds 1 NaN"),
        (lambda: radius_of_gyration(np.zeros((4, 2))), "expected \\(F, N, 3\\)"),
        (lambda: radius_of_gyration(np.zeros((4, 3)), masses=[1.0, 2.0]), "one per atom"),
        (lambda: radius_of_gyration(np.zeros((2, 3)), masses=[1.0, 0.0]), "positive"),
    ],
)
def test_analysis_functions_refuse_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_structure_functions_refuse_nan_and_wrong_shapes(chignolin):
    bad = chignolin.native_positions.copy()
    bad[3, 1] = NAN
    with pytest.raises(ValueError, match="positions holds 1 NaN"):
        rmsd(bad, chignolin.native_positions, chignolin.topology)
    with pytest.raises(ValueError, match="expected \\(F, 166, 3\\)"):
        chignolin_cvs(np.zeros((2, 10, 3)), chignolin.topology)
    native = chignolin.native_positions
    with pytest.raises(ValueError, match="reference has shape \\(2, 166, 3\\); expected "
                                         "\\(166, 3\\)"):
        rmsd(native, np.stack([native, native]), chignolin.topology)
    for atoms in ([0, 166], [-1, 3], [], [0.5, 1.0]):
        with pytest.raises(ValueError, match="expected a selection name or atom indices "
                                             "0 to 165"):
            rmsd(native, native, chignolin.topology, atoms)
    # Residues numbered otherwise (here one residue renamed) give other distances.
    renamed = chignolin.topology.copy()
    list(renamed.residues)[6].name = "ALA"
    with pytest.raises(ValueError, match="residues 3, 5, 7, 8 are \\['ASP', 'GLU', 'ALA', "
                                         "'THR'\\]; expected"):
        chignolin_cvs(native, renamed)


def test_basins_of_an_empty_region_are_reported_not_visited(chignolin):
    landscape = free_energy_2d(np.full(50, 3.0), np.full(50, 6.5), 300.0, bins=10,
                               ranges=((0, 12), (0, 12)))
    folded, unfolded = folded_unfolded_basins(landscape, (2.9, 6.55))
    assert np.isfinite(folded.free_energy) and np.isnan(unfolded.x)


def test_a_two_state_fit_recovers_the_melting_temperature_within_its_error():
    rng = np.random.default_rng(3)
    ladder = np.geomspace(300.0, 450.0, 8)
    truth = two_state_fraction(ladder, 340.0, -12.0)
    assert truth[0] > 0.5 > truth[-1]
    assert two_state_fraction(np.array([340.0]), 340.0, -12.0)[0] == pytest.approx(0.5)
    n = np.full(8, 400)
    hits = []
    for _ in range(200):
        fraction = rng.binomial(n, truth) / n
        error = np.sqrt(fraction * (1 - fraction) / n)
        fit = melting_temperature(ladder, fraction, error, n)
        assert fit is not None and fit.within_ladder and fit.n_temperatures == 8
        assert fit.enthalpy < 0 and 0.5 < fit.melting_temperature_error < 10
        hits.append(abs(fit.melting_temperature - 340.0) < 2 * fit.melting_temperature_error)
    # About 95 % of 2-sigma intervals hold the truth; errors 1.5 times too small would give
    # about 82 %, below this bar.
    assert np.mean(hits) >= 0.9


def test_a_melting_curve_without_a_transition_gives_no_melting_temperature():
    ladder = np.geomspace(300.0, 450.0, 8)
    n = np.full(8, 30)
    # Folded everywhere: the fraction does not change, and an error of 0 at 1.0 is floored.
    assert melting_temperature(ladder, np.ones(8), np.zeros(8), n) is None
    # Too few sampled temperatures.
    nan = np.full(8, np.nan)
    nan[:2] = [0.9, 0.5]
    assert melting_temperature(ladder, nan, np.full(8, 0.05), n) is None
    with pytest.raises(ValueError, match="expected one shape"):
        melting_temperature(ladder, np.ones(7), np.zeros(8), n)
    n = np.full(8, 100)
    # Rising with temperature: not a melting curve.
    rising = two_state_fraction(ladder, 380.0, 12.0)
    assert melting_temperature(ladder, rising, np.full(8, 0.03), n) is None
    # Nearly flat with a dip at the top: the fit would run away to an absurd Tm.
    flat = np.array([0.9, 0.88, 0.9, 0.86, 0.9, 0.87, 0.85, 0.8])
    assert melting_temperature(ladder, flat, np.full(8, 0.03), n) is None


def test_a_poor_two_state_fit_reports_larger_errors():
    ladder = np.geomspace(300.0, 450.0, 8)
    n = np.full(8, 400)
    clean = two_state_fraction(ladder, 360.0, -12.0)
    wavy = np.clip(clean + 0.06 * np.array([1, -1, 1, -1, 1, -1, 1, -1]), 0.0, 1.0)
    error = np.full(8, 0.01)
    good = melting_temperature(ladder, clean, error, n)
    poor = melting_temperature(ladder, wavy, error, n)
    assert good.reduced_chi_square < 1e-6 and poor.reduced_chi_square > 10
    assert poor.melting_temperature_error > 3 * good.melting_temperature_error
