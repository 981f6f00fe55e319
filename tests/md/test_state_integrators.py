"""Units, Maxwell-Boltzmann velocities, and the integrators' physics (equipartition, NVE)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms, units

from freecg_md.md import (
    ReplicaState,
    baoab_step,
    degrees_of_freedom,
    instantaneous_temperature,
    kinetic_energy,
    maxwell_boltzmann_velocities,
    replica_generators,
    replica_seed,
    velocity_verlet_step,
)
from tests.md.toys import Harmonic


def block_error(samples: np.ndarray, n_blocks: int = 20) -> float:
    """Standard error of the mean of correlated samples, from the spread of block means."""
    means = np.array([block.mean() for block in np.array_split(samples, n_blocks)])
    return float(means.std(ddof=1) / np.sqrt(n_blocks))


def harmonic_state(n_replicas: int, n_atoms: int, seed: int = 0) -> tuple[ReplicaState, Harmonic]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=3.0, size=(n_atoms, 3))
    positions = torch.tensor(np.broadcast_to(centers, (n_replicas, n_atoms, 3)).copy())
    state = ReplicaState(positions, torch.zeros_like(positions),
                         torch.tensor(rng.uniform(1.0, 16.0, n_atoms)),
                         torch.ones(n_atoms, dtype=torch.long), torch.zeros(3, 3), False)
    return state, Harmonic(centers, k=rng.uniform(0.5, 2.0, n_atoms))


def test_kinetic_energy_matches_ase_units():
    rng = np.random.default_rng(1)
    atoms = Atoms("H2O", positions=rng.normal(size=(3, 3)))
    velocities_a_per_fs = rng.normal(scale=0.01, size=(3, 3))
    atoms.set_velocities(velocities_a_per_fs / units.fs)  # ASE's own velocity unit
    state = ReplicaState.from_atoms(atoms, 1)
    kinetic = kinetic_energy(torch.tensor(velocities_a_per_fs)[None], state.masses)
    assert kinetic.item() == pytest.approx(atoms.get_kinetic_energy(), rel=1e-12)
    temperature = instantaneous_temperature(torch.tensor(velocities_a_per_fs)[None],
                                            state.masses, com_removed=False)
    assert temperature.item() == pytest.approx(atoms.get_temperature(), rel=1e-12)


def test_maxwell_boltzmann_temperature_com_and_seed_independence():
    n_atoms, temperatures = 500, [300.0, 600.0]
    masses = torch.tensor(np.random.default_rng(0).uniform(1, 32, n_atoms))
    velocities = maxwell_boltzmann_velocities(masses, temperatures,
                                              replica_generators(7, [0, 1]), remove_com=True)
    momentum = (velocities * masses[:, None]).sum(dim=1)
    assert torch.allclose(momentum, torch.zeros(2, 3, dtype=torch.float64), atol=1e-12)
    measured = instantaneous_temperature(velocities, masses, com_removed=True)
    dof = degrees_of_freedom(n_atoms, True)
    for t, t_expected in zip(measured.tolist(), temperatures, strict=True):
        assert abs(t - t_expected) < 4 * t_expected * np.sqrt(2 / dof)
    # Replica 1's draw does not depend on replica 0 being drawn with it.
    alone = maxwell_boltzmann_velocities(masses, [600.0], replica_generators(7, [1]))
    assert torch.equal(alone[0], velocities[1])
    assert replica_seed(7, 1) != replica_seed(8, 0) != replica_seed(7, 0)


def test_baoab_equipartition_on_harmonic_springs():
    """<KE> = <PE> = (3N/2) kT at each replica's own temperature, within statistical error
    estimated from the run (block averages)."""
    n_replicas, n_atoms = 3, 32
    state, potential = harmonic_state(n_replicas, n_atoms)
    temperatures = torch.tensor([150.0, 300.0, 600.0])
    generators = replica_generators(3, range(n_replicas))
    energies, forces = potential.evaluate(state.positions)
    kinetic, potential_energy = [], []
    for step in range(8000):
        energies, forces = baoab_step(state, forces, potential, temperatures, 20.0, 1.0,
                                      generators)
        if step >= 500:
            kinetic.append(kinetic_energy(state.velocities, state.masses).numpy())
            potential_energy.append(energies.numpy())
    assert state.step == 8000
    expected = 1.5 * n_atoms * units.kB * temperatures.numpy()
    for series in (np.array(kinetic), np.array(potential_energy)):
        for r in range(n_replicas):
            mean, error = series[:, r].mean(), block_error(series[:, r])
            # 4 sigma of statistics plus the O(dt^2) bias of kinetic energy (~0.1% here).
            assert abs(mean - expected[r]) < 4 * error + 0.005 * expected[r], (
                r, mean, expected[r], error)


def test_velocity_verlet_conserves_energy():
    state, potential = harmonic_state(2, 8, seed=2)
    state.velocities = maxwell_boltzmann_velocities(state.masses, [300.0, 300.0],
                                                    replica_generators(0, [0, 1]), False)
    energies, forces = potential.evaluate(state.positions)
    start = energies + kinetic_energy(state.velocities, state.masses)
    totals = []
    for _ in range(2000):
        energies, forces = velocity_verlet_step(state, forces, potential, 0.5)
        totals.append(energies + kinetic_energy(state.velocities, state.masses))
    drift = (torch.stack(totals) - start).abs().max()
    assert drift < 1e-3 * start.abs().max()


def test_zero_friction_baoab_is_velocity_verlet():
    state_a, potential = harmonic_state(2, 4, seed=3)
    state_a.velocities = maxwell_boltzmann_velocities(state_a.masses, [300.0, 500.0],
                                                      replica_generators(0, [0, 1]), False)
    state_b = state_a.select(slice(0, 2))
    _, forces_a = potential.evaluate(state_a.positions)
    forces_b = forces_a.clone()
    for _ in range(10):
        _, forces_a = baoab_step(state_a, forces_a, potential, [300.0, 500.0], 0.0, 1.0,
                                 replica_generators(0, [0, 1]))
        _, forces_b = velocity_verlet_step(state_b, forces_b, potential, 1.0)
    assert torch.allclose(state_a.positions, state_b.positions, atol=1e-12)
    assert torch.allclose(state_a.velocities, state_b.velocities, atol=1e-12)
    # After a BAOAB step, an NVE step's kinetic velocities are its own end velocities.
    assert state_a.midstep_velocities is not None
    velocity_verlet_step(state_a, forces_a, potential, 1.0)
    assert state_a.midstep_velocities is None
    assert torch.equal(state_a.kinetic_velocities(), state_a.velocities)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(friction_per_ps=-1.0), "friction_per_ps"),
        (dict(timestep_fs=0.0), "timestep_fs"),
        (dict(temperatures=[300.0, 300.0, 300.0]), "temperatures has 3 values"),
        (dict(temperatures=[300.0, -5.0]), "temperatures"),
    ],
)
def test_baoab_rejects_bad_arguments(kwargs, match):
    state, potential = harmonic_state(2, 3)
    _, forces = potential.evaluate(state.positions)
    arguments = dict(temperatures=[300.0, 300.0], friction_per_ps=1.0, timestep_fs=1.0)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        baoab_step(state, forces, potential, arguments["temperatures"],
                   arguments["friction_per_ps"], arguments["timestep_fs"],
                   replica_generators(0, [0, 1]))


def test_state_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"velocities has shape \(2, 4, 3\); expected"):
        ReplicaState(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3), torch.ones(5),
                     torch.ones(5, dtype=torch.long), torch.zeros(3, 3), False)
    with pytest.raises(ValueError, match=r"masses has shape \(4,\); expected \(5,\)"):
        ReplicaState(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), torch.ones(4),
                     torch.ones(5, dtype=torch.long), torch.zeros(3, 3), False)
    with pytest.raises(ValueError, match="expected positive amu"):
        ReplicaState(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.tensor([1.0, 0.0]),
                     torch.ones(2, dtype=torch.long), torch.zeros(3, 3), False)


def test_state_from_frames_cycles_conformations_and_refuses_other_systems():
    rng = np.random.default_rng(3)
    frames = [Atoms("H2O", positions=rng.normal(size=(3, 3))) for _ in range(3)]
    state = ReplicaState.from_frames(frames, 5)
    for replica, frame in zip(range(5), [0, 1, 2, 0, 1], strict=True):
        assert np.array_equal(state.positions[replica].numpy(), frames[frame].positions)
    assert torch.count_nonzero(state.velocities) == 0
    with pytest.raises(ValueError, match=r"frames\[1\] has atomic numbers"):
        ReplicaState.from_frames([frames[0], Atoms("H2S", positions=frames[1].positions)], 2)
    with pytest.raises(ValueError, match="frames is empty"):
        ReplicaState.from_frames([], 2)


def test_reprs_of_large_objects_stay_short(tmp_path):
    from freecg_md.analysis.reduced import ReducedRun
    from freecg_md.data import load_chignolin
    from freecg_md.md import ReplicaState

    state = ReplicaState.from_atoms(load_chignolin().atoms, 8)
    assert repr(state) == "ReplicaState(8 replicas of 166 atoms, step 0, periodic " \
                          "[False, False, False])"
    reduced = ReducedRun("run", {}, np.array([300.0]), np.arange(1000), np.arange(1000.0),
                         np.zeros((1, 1000, 2)), np.zeros((1, 1000)), np.zeros((1000, 1)),
                         np.zeros((1000, 1)), np.zeros((1000, 1)),
                         np.zeros((1000, 1), np.int64), np.zeros((0, 1)), np.zeros(2))
    assert len(repr(reduced)) < 100


def test_the_kinetic_temperature_is_measured_from_the_midstep_velocities(tmp_path):
    """A stiff harmonic well at omega dt = 0.8: BAOAB samples positions exactly and its
    mid-step velocities exactly, while the end-of-step velocities are too slow by
    1 - (omega dt)^2 / 4 = 0.84 in kinetic energy. The logged temperature is the exact one."""
    from freecg_md.analysis.rundir import read_run
    from freecg_md.md import RunConfig, run_replicas
    from freecg_md.md.state import ACCELERATION_UNIT
    from tests.md.toys import Harmonic

    n_atoms, mass, dt = 16, 12.0, 2.0
    k = 0.4**2 * mass / ACCELERATION_UNIT  # omega = 0.4/fs, so omega dt = 0.8
    centers = np.zeros((n_atoms, 3))
    positions = torch.zeros((2, n_atoms, 3), dtype=torch.float64)
    state = ReplicaState(positions, torch.zeros_like(positions), torch.full((n_atoms,), mass),
                         torch.full((n_atoms,), 6, dtype=torch.long), torch.zeros(3, 3), False)
    config = RunConfig(temperatures=[300.0, 300.0], n_steps=20_000, output_dir=str(tmp_path),
                       timestep_fs=dt, friction_per_ps=50.0, report_interval=10,
                       checkpoint_interval=20_000, seed=1, remove_com_motion=False,
                       max_bond_stretch=None, min_bond_compression=None)
    result = run_replicas(Harmonic(centers, k=k), state, config, progress=False)
    temperature = read_run(tmp_path).kinetic_temperature[200:]
    # 3,600 frames of 48 degrees of freedom: the mean's error is well below 1 %; the
    # end-of-step estimate would be 16 % low.
    assert abs(temperature.mean() / 300.0 - 1) < 0.02
    assert result.state.step == 20_000
    # The same dynamics step by step: the end-of-step velocities are the slow ones.
    generators = replica_generators(1, range(2))
    potential = Harmonic(centers, k=k)
    forces = potential.evaluate(state.positions)[1]
    end, mid = [], []
    for step in range(6000):
        _, forces = baoab_step(state, forces, potential, [300.0, 300.0], 50.0, dt, generators)
        if step >= 1000:
            end.append(instantaneous_temperature(state.velocities, state.masses, False))
            mid.append(instantaneous_temperature(state.kinetic_velocities(), state.masses,
                                                 False))
    assert abs(torch.stack(mid).mean() / 300.0 - 1) < 0.03
    assert abs(torch.stack(end).mean() / 300.0 - 0.84) < 0.03


def test_hydrogen_mass_repartitioning_on_chignolin():
    from freecg_md.data import load_chignolin
    from freecg_md.md import check_timestep, max_stable_timestep, repartition_hydrogen_masses
    from freecg_md.md.guards import find_bonds

    atoms = load_chignolin().atoms
    bonds, _, _ = find_bonds(atoms.positions, atoms.numbers)
    masses = repartition_hydrogen_masses(atoms.get_masses(), atoms.numbers, bonds, 3.024)
    hydrogen = atoms.numbers == 1
    assert float(masses.sum()) == pytest.approx(atoms.get_masses().sum())
    np.testing.assert_allclose(masses[hydrogen].numpy(), 3.024)
    # A methyl carbon gives 3 x 2.016 amu: the lightest heavy atom stays above 5 amu.
    assert float(masses[~hydrogen].min()) > 5.0
    assert max_stable_timestep(masses) == pytest.approx(2.0 * np.sqrt(3.0))
    check_timestep(3.0, masses)  # refused with natural masses, accepted here
    with pytest.raises(ValueError, match="too long"):
        check_timestep(3.0, atoms.get_masses())
    with pytest.raises(ValueError, match="hydrogen 0 is bonded to 0 heavy atoms"):
        repartition_hydrogen_masses([1.008, 12.0], [1, 6], np.zeros((0, 2)))
    with pytest.raises(ValueError, match="would keep .* less than a hydrogen's"):
        repartition_hydrogen_masses([1.008, 1.008, 1.008, 1.008, 4.0], [1, 1, 1, 1, 3],
                                    [[0, 4], [1, 4], [2, 4], [3, 4]], 2.0)


class _Dimers:
    """C-H pairs (atoms 2i, 2i+1) on radial springs of 30 eV/Å² around 1.09 Å."""

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = positions.detach().clone().requires_grad_(True)
        bond = torch.linalg.vector_norm(x[:, 1::2] - x[:, 0::2], dim=-1)
        energies = 15.0 * ((bond - 1.09) ** 2).sum(dim=1)
        (gradient,) = torch.autograd.grad(energies.sum(), x)
        return energies.detach(), -gradient


def test_repartitioned_masses_sample_the_same_thermodynamics_with_a_longer_step(tmp_path):
    """Stiff C-H dimers: natural masses at 1 fs and repartitioned ones (3.024 amu hydrogens)
    at 3 fs give the same mean potential energy and the bath's kinetic temperature."""
    from freecg_md.analysis.rundir import read_run
    from freecg_md.md import RunConfig, repartition_hydrogen_masses, run_replicas
    from freecg_md.md.guards import find_bonds

    n_pairs = 12
    rng = np.random.default_rng(0)
    centres = rng.uniform(0, 20, size=(n_pairs, 3))
    positions = np.concatenate([centres, centres + [1.09, 0, 0]], axis=1).reshape(-1, 3)
    numbers = np.tile([6, 1], n_pairs)
    natural = np.tile([12.011, 1.008], n_pairs)
    bonds, _, _ = find_bonds(positions, numbers)
    heavy_h = repartition_hydrogen_masses(natural, numbers, bonds, 3.024)
    means = {}
    for name, masses, dt, steps in (("natural", natural, 1.0, 18_000),
                                    ("hmr", heavy_h, 3.0, 6_000)):
        start = torch.tensor(np.broadcast_to(positions, (2,) + positions.shape).copy())
        state = ReplicaState(start, torch.zeros_like(start), torch.as_tensor(masses),
                             torch.as_tensor(numbers), torch.zeros(3, 3), False)
        config = RunConfig(temperatures=[300.0, 300.0], n_steps=steps,
                           output_dir=str(tmp_path / name), timestep_fs=dt,
                           friction_per_ps=5.0, report_interval=10,
                           checkpoint_interval=steps, seed=2, remove_com_motion=False)
        run_replicas(_Dimers(), state, config, progress=False)
        run = read_run(tmp_path / name)
        keep = run.time_ps > 2.0
        means[name] = (run.energies[keep].mean(), run.kinetic_temperature[keep].mean())
    # <PE> of a radial spring in 3D is about kT/2 per pair (7.6 meV at 300 K, 12 pairs).
    assert means["hmr"][0] == pytest.approx(means["natural"][0], rel=0.05)
    assert means["hmr"][1] == pytest.approx(300.0, rel=0.02)
    assert means["natural"][1] == pytest.approx(300.0, rel=0.02)


def test_a_hydrogen_pressed_onto_a_second_atom_keeps_only_its_own_bond():
    from freecg_md.md.guards import find_bonds

    # Water's O-H at 0.96 Å, and a second oxygen 1.10 Å from one hydrogen (closer than 1.2
    # times the O-H radii): a contact, not a second bond of that hydrogen.
    positions = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0],
                          [2.06, 0.0, 0.0]])
    numbers = np.array([8, 1, 1, 8])
    bonds, _, lengths = find_bonds(positions, numbers)
    assert sorted(map(tuple, bonds.tolist())) == [(0, 1), (0, 2)]
    # Moved closer to the second oxygen, the hydrogen counts as bonded to it instead.
    positions[1, 0] = 1.15
    bonds, _, _ = find_bonds(positions, numbers)
    assert sorted(map(tuple, bonds.tolist())) == [(0, 2), (1, 3)]
