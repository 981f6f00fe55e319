"""Replica exchange: ladders, the Metropolis rule, statistics, and Boltzmann sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units

from freecg_md.analysis.remd_stats import acceptance_per_pair, round_trips
from freecg_md.md import (
    ReplicaExchange,
    ReplicaState,
    RunConfig,
    check_ladder,
    load_temperature_trajectory,
    read_frame_index,
    run_replicas,
    temperature_ladder,
)
from tests.md.test_state_integrators import block_error
from tests.md.toys import DoubleWell


def test_temperature_ladders():
    geometric = temperature_ladder(300.0, 600.0, 5)
    assert geometric[0] == 300.0 and geometric[-1] == 600.0
    assert np.allclose(geometric[1:] / geometric[:-1], 2 ** 0.25)
    assert np.allclose(np.diff(temperature_ladder(300, 500, 3, kind="linear")), 100.0)
    assert temperature_ladder(300, 300, 1).tolist() == [300.0]


@pytest.mark.parametrize(
    ("ladder", "match"),
    [
        ([300.0, 400.0, 350.0], r"strictly increasing.*T\[1\]=400.0 >= T\[2\]=350.0"),
        ([300.0, 300.0], "strictly increasing"),
        ([-10.0, 300.0], "expected finite values > 0 K"),
        ([], "non-empty"),
    ],
)
def test_ladder_errors(ladder, match):
    with pytest.raises(ValueError, match=match):
        check_ladder(ladder)
    with pytest.raises(ValueError, match=match):
        ReplicaExchange(ladder)


def test_ladder_argument_errors():
    with pytest.raises(ValueError, match="kind='cubic'"):
        temperature_ladder(300, 400, 3, kind="cubic")
    with pytest.raises(ValueError, match="0 < t_min < t_max"):
        temperature_ladder(400, 300, 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        RunConfig(temperatures=[400, 300], n_steps=1, output_dir="x", exchange_interval=5)


def test_equal_energies_accept_every_exchange():
    exchange = ReplicaExchange([300.0, 350.0, 400.0, 460.0, 530.0], seed=1)
    history = [exchange.temperature_of_replica.copy()]
    for _ in range(40):
        scale, outcome = exchange.attempt(np.full(5, -3.2))
        assert np.all(outcome[outcome >= 0] == 1)
        history.append(exchange.temperature_of_replica.copy())
    assert np.array_equal(exchange.n_accepted, exchange.n_proposed)
    assert exchange.n_proposed[0, 1] == 20 and exchange.n_proposed[1, 2] == 20
    assert np.all(exchange.acceptance_rates() == 1.0)
    # The same numbers as the analysis module computes from the permutation history.
    assert np.allclose(acceptance_per_pair(np.array(history)), 1.0)
    assert np.array_equal(exchange.round_trips, round_trips(np.array(history)))
    assert exchange.round_trips.sum() > 0


def test_two_temperatures_swap_on_even_rounds_and_count_round_trips():
    exchange = ReplicaExchange([300.0, 400.0])
    outcomes = [exchange.attempt(np.zeros(2))[1][0] for _ in range(4)]
    assert outcomes == [1, -1, 1, -1]  # the only pair (0, 1) is even
    assert exchange.temperature_of_replica.tolist() == [0, 1]
    assert exchange.round_trips.tolist() == [1, 0]  # replica 0 went up and came back


def test_metropolis_probability_and_velocity_scale():
    temperatures = np.array([300.0, 360.0])
    betas = 1 / (units.kB * temperatures)
    energies = np.array([-0.05, 0.0])  # the cold replica is lower: uphill, p < 1
    expected = np.exp((betas[0] - betas[1]) * (energies[0] - energies[1]))
    accepted = 0
    n = 4000
    for attempt in range(n):
        exchange = ReplicaExchange(temperatures, seed=attempt)
        scale, outcome = exchange.attempt(energies)
        accepted += int(outcome[0])
        if outcome[0] == 1:
            assert np.allclose(scale, np.sqrt([360 / 300, 300 / 360]))
        else:
            assert np.all(scale == 1.0)
    rate = accepted / n
    assert abs(rate - expected) < 4 * np.sqrt(expected * (1 - expected) / n), (rate, expected)
    # The downhill direction is always accepted.
    assert ReplicaExchange(temperatures).attempt(energies[::-1].copy())[1][0] == 1


def test_exchange_state_round_trip_continues_identically():
    energies = np.random.default_rng(0).normal(scale=0.1, size=(30, 4))
    a = ReplicaExchange([300, 330, 370, 410], seed=5)
    for e in energies[:10]:
        a.attempt(e)
    b = ReplicaExchange([300, 330, 370, 410], seed=99)
    b.load_state_dict(a.state_dict())
    for e in energies[10:]:
        assert np.array_equal(a.attempt(e)[1], b.attempt(e)[1])
    assert a.summary() == b.summary()
    with pytest.raises(ValueError, match="exchange state is for temperatures"):
        ReplicaExchange([300, 330, 370, 420]).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match=r"energies has shape \(3,\); expected \(4,\)"):
        a.attempt(np.zeros(3))


def exact_moments(well: DoubleWell, temperature: float) -> dict[str, float]:
    x = np.linspace(-3.0, 3.0, 60001)
    energy = well.energy_1d(x)
    weight = np.exp(-(energy - energy.min()) / (units.kB * temperature))
    weight /= weight.sum()
    return {"x2": float(weight @ x**2), "energy": float(weight @ energy),
            "barrier": float(weight @ (np.abs(x) < 0.5))}


def test_remd_samples_boltzmann_at_every_temperature(tmp_path):
    """Through the whole pipeline: run, DCD frames, demultiplexing by temperature index.

    Four particles in a double well (barrier 0.15 eV: ~6 kT at 300 K, where crossings
    without exchanges are rare) at four temperatures; the demultiplexed x coordinates must
    have the exact Boltzmann moments at each temperature.
    """
    well = DoubleWell(h=0.15, b=1.0)
    n_atoms, ladder = 4, [300.0, 450.0, 680.0, 1000.0]
    x0 = np.array([[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 2.0, 0.0], [1.0, 2.0, 0.0]])
    positions = torch.tensor(np.broadcast_to(x0, (4, n_atoms, 3)).copy())
    state = ReplicaState(positions, torch.zeros_like(positions), torch.full((n_atoms,), 4.0),
                         torch.ones(n_atoms, dtype=torch.long), torch.zeros(3, 3), False)
    config = RunConfig(temperatures=ladder, n_steps=20000, output_dir=str(tmp_path),
                       timestep_fs=2.0, friction_per_ps=20.0, exchange_interval=10,
                       report_interval=20, checkpoint_interval=20000, seed=11,
                       remove_com_motion=False, flush_every=500)
    result = run_replicas(well, state, config, progress=False)
    assert np.all(result.exchange.acceptance_rates() > 0.3)
    index = read_frame_index(tmp_path)
    assert len(index.steps) == 1000
    for k, temperature in enumerate(ladder):
        x = load_temperature_trajectory(tmp_path, k).xyz[100:, :, 0] * 10.0  # nm -> Å
        exact = exact_moments(well, temperature)
        observed = {"x2": x**2, "energy": well.energy_1d(x), "barrier": np.abs(x) < 0.5}
        for name, values in observed.items():
            per_frame = values.mean(axis=1).astype(np.float64)
            error = block_error(per_frame)
            assert abs(per_frame.mean() - exact[name]) < 4 * error + 0.01 * abs(exact[name]), (
                temperature, name, per_frame.mean(), exact[name], error)
