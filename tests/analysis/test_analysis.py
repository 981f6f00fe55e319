"""Analysis functions against known answers on synthetic data."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import units
from e3nn import o3

from freecg_md.analysis import (
    KB_KCAL,
    acceptance_per_pair,
    atom_index,
    chignolin_cvs,
    folded_unfolded_basins,
    frames_at_temperature,
    free_energy_2d,
    mbar_free_energy_2d,
    mbar_weights,
    rmsd,
    round_trips,
)
from freecg_md.data import load_chignolin


@pytest.fixture(scope="module")
def chignolin():
    return load_chignolin()


def test_rmsd_of_a_rotated_translated_copy_is_zero(chignolin):
    torch.manual_seed(0)
    rotation = o3.rand_matrix().double().numpy()
    moved = chignolin.native_positions @ rotation.T + np.array([3.0, -7.0, 12.0])
    values = rmsd(np.stack([chignolin.native_positions, moved]), chignolin.native_positions,
                  chignolin.topology, "heavy")
    # mdtraj works in float32; near zero the square root amplifies its rounding to ~1e-3 Å.
    np.testing.assert_allclose(values, 0.0, atol=1e-2)


def test_rmsd_of_a_known_distortion(chignolin):
    # Stretch z by a factor about the centroid of the CA atoms: with the z axis the
    # distortion's only direction, superposition cannot undo it, and the RMSD of a uniform
    # scaling about the centroid is |s - 1| * rms(z - z_mean) (optimal rotation = identity).
    ca = chignolin.topology.select("name CA")
    positions = chignolin.native_positions.copy()
    centre = positions[ca].mean(axis=0)
    positions = positions - centre
    # Align the CA atoms' principal axes with x, y, z so the stretch is along one of them.
    _, _, axes = np.linalg.svd(positions[ca])
    positions = positions @ axes.T
    stretched = positions.copy()
    stretched[:, 2] *= 1.1
    expected = 0.1 * np.sqrt((positions[ca, 2] ** 2).mean())
    value = rmsd(stretched, positions, chignolin.topology, "ca")[0]
    assert value == pytest.approx(expected, rel=1e-3)


def test_cv_atoms_found_by_residue_and_name(chignolin):
    top = chignolin.topology
    o3_index = atom_index(top, 3, "O")
    assert top.atom(o3_index).residue.name == "ASP" and top.atom(o3_index).name == "O"
    assert top.atom(atom_index(top, 7, "N")).residue.name == "GLY"
    cvs = chignolin_cvs(chignolin.native_positions, top)
    direct = np.linalg.norm(chignolin.native_positions[atom_index(top, 3, "O")]
                            - chignolin.native_positions[atom_index(top, 7, "N")])
    assert cvs.shape == (1, 2) and cvs[0, 0] == pytest.approx(direct, abs=1e-4)
    with pytest.raises(KeyError, match="no atom named 'OXT'.*has N"):
        atom_index(top, 3, "OXT")
    with pytest.raises(KeyError, match="residue 11 does not exist"):
        atom_index(top, 11, "N")


def test_histogram_landscape_recovers_a_known_density():
    rng = np.random.default_rng(0)
    temperature = 300.0
    kt = KB_KCAL * temperature
    # Two Gaussian basins with weights 0.7 and 0.3 and equal widths: at their centres the
    # free-energy difference is -kT ln(0.3/0.7).
    n = 400_000
    pick = rng.random(n) < 0.7
    x = np.where(pick, rng.normal(3.0, 0.5, n), rng.normal(8.0, 0.5, n))
    y = np.where(pick, rng.normal(4.0, 0.5, n), rng.normal(9.0, 0.5, n))
    landscape = free_energy_2d(x, y, temperature, bins=60, ranges=((0, 11), (1, 12)))
    folded = landscape.minimum_in((2.5, 3.5), (3.5, 4.5))
    unfolded = landscape.minimum_in((7.5, 8.5), (8.5, 9.5))
    assert folded[0] == pytest.approx(0.0, abs=0.02)
    assert unfolded[0] == pytest.approx(-kt * np.log(0.3 / 0.7), abs=0.05)
    assert abs(folded[1] - 3.0) < 0.2 and abs(unfolded[2] - 9.0) < 0.2
    assert np.isnan(landscape.free_energy).any()  # empty bins are masked


def test_mbar_recovers_the_target_distribution_of_harmonic_oscillators():
    pytest.importorskip("pymbar")
    rng = np.random.default_rng(1)
    k = 2.0  # eV/Å^2, 1-D oscillator: x ~ N(0, kT/k), E = k x^2 / 2
    ladder = np.array([200.0, 300.0, 450.0, 700.0])
    target = 300.0
    samples, temps = [], []
    for t in ladder:
        samples.append(rng.normal(0, np.sqrt(units.kB * t / k), 20_000))
        temps.append(np.full(20_000, t))
    x, sampled = np.concatenate(samples), np.concatenate(temps)
    energies = 0.5 * k * x**2
    weights = mbar_weights(energies, sampled, target)
    variance = np.sum(weights * x**2)
    assert variance == pytest.approx(units.kB * target / k, rel=0.03)
    # Drop the 300 K samples: reweighting from the others still finds the 300 K variance.
    keep = sampled != target
    weights = mbar_weights(energies[keep], sampled[keep], target)
    assert np.sum(weights * x[keep] ** 2) == pytest.approx(units.kB * target / k, rel=0.05)
    landscape = mbar_free_energy_2d(x, x**2, energies, sampled, target, bins=20,
                                    ranges=((-0.3, 0.3), (0, 0.09)))
    assert np.nanmin(landscape.free_energy) == 0.0


def test_demultiplexing_and_remd_diagnostics():
    # Three temperatures, every attempt accepted (even attempts swap the pair (0, 1), odd
    # ones (1, 2)); replica 0 walks 0 -> 1 -> 2 -> 2 -> 1 -> 0: one round trip.
    history = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0], [1, 2, 0], [0, 2, 1]])
    assert frames_at_temperature(history, 0).tolist() == [0, 1, 1, 2, 2, 0]
    assert round_trips(history).tolist() == [1, 0, 0]
    assert acceptance_per_pair(history).tolist() == [1.0, 1.0]
    # A rejected even attempt (nothing moves), then an accepted odd one.
    assert acceptance_per_pair(np.array([[0, 1, 2], [0, 1, 2], [0, 2, 1]])).tolist() == [0, 1]
    with pytest.raises(ValueError, match="permutation"):
        frames_at_temperature(np.array([[0, 0, 2]]), 1)


def test_folded_and_unfolded_basins_of_two_gaussian_wells():
    # 3/4 of the samples near the "native" point (3, 6), 1/4 in a well 4 Å away: the folded
    # basin is the global minimum at the first well, the unfolded one kT ln 3 above it.
    rng = np.random.default_rng(7)
    near = rng.normal([3.0, 6.0], 0.3, size=(60_000, 2))
    far = rng.normal([7.0, 6.0], 0.3, size=(20_000, 2))
    x, y = np.concatenate([near, far]).T
    landscape = free_energy_2d(x, y, 300.0, bins=40, ranges=((1.0, 9.0), (4.0, 8.0)))
    folded, unfolded = folded_unfolded_basins(landscape, native=(3.0, 6.0))
    assert (folded.name, unfolded.name) == ("folded", "unfolded")
    assert folded.free_energy == 0.0
    assert abs(folded.x - 3.0) < 0.2 and abs(folded.y - 6.0) < 0.2
    assert abs(unfolded.x - 7.0) < 0.2 and abs(unfolded.y - 6.0) < 0.2
    assert unfolded.free_energy == pytest.approx(KB_KCAL * 300.0 * np.log(3.0), abs=0.1)
    # Nothing lies beyond 6.5 Å of the native point in this range: no basin is invented.
    _, missing = folded_unfolded_basins(landscape, native=(3.0, 6.0), unfolded_radius=6.5)
    assert np.isnan(missing.free_energy)
    with pytest.raises(ValueError, match="folded_radius"):
        folded_unfolded_basins(landscape, native=(3.0, 6.0), folded_radius=4.0,
                               unfolded_radius=3.0)


def test_drawing_figures_leaves_the_callers_matplotlib_backend_alone(tmp_path):
    # A notebook's inline backend must survive importing and using the plots: they draw on
    # figures of their own, without pyplot.
    script = (
        "import matplotlib; matplotlib.use('svg'); import numpy as np\n"
        "from freecg_md.analysis.plots import plot_rmsd_band\n"
        f"plot_rmsd_band(np.arange(5.0), np.ones((2, 5)), 'rmsd', r'{tmp_path / 'band.png'}')\n"
        "import sys; assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "band.png").stat().st_size > 0
