"""Batched FreeCG potential against the calculator; the ASE wrapper; input checks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms

from freecg_md import FreeCGCalculator
from freecg_md.md import ASECalculatorPotential, FreeCGPotential, Potential, WorkerError
from tests.conftest import random_molecule, small_model


def replica_positions(atoms: Atoms, n_replicas: int, scale: float = 0.15) -> torch.Tensor:
    rng = np.random.default_rng(5)
    return torch.tensor(np.stack([
        atoms.positions + rng.normal(scale=scale, size=atoms.positions.shape)
        for _ in range(n_replicas)
    ]))


def calculator_results(model, atoms: Atoms, positions: torch.Tensor):
    energies, forces = [], []
    for r in range(positions.shape[0]):
        frame = atoms.copy()
        frame.positions = positions[r].numpy()
        frame.calc = FreeCGCalculator(model, dtype="float64")
        energies.append(frame.get_potential_energy())
        forces.append(frame.get_forces())
    return np.array(energies), np.array(forces)


@pytest.mark.parametrize("periodic", [False, True])
def test_batched_freecg_equals_separate_calculator_calls(periodic):
    model = small_model(torch.float64)
    atoms = random_molecule(10, seed=3)
    if periodic:
        atoms.cell = np.diag([7.0, 7.5, 8.0])
        atoms.pbc = True
    positions = replica_positions(atoms, 4)
    potential = FreeCGPotential(model, atoms.numbers, atoms.cell.array, atoms.pbc,
                                dtype="float64", replicas_per_pass=None)  # one pass
    assert potential.replicas_per_pass is None
    assert isinstance(potential, Potential)
    energies, forces = potential.evaluate(positions)
    assert energies.dtype == forces.dtype == torch.float64
    assert energies.shape == (4,) and forces.shape == (4, 10, 3)
    expected_e, expected_f = calculator_results(model, atoms, positions)
    np.testing.assert_allclose(energies.numpy(), expected_e, rtol=0, atol=1e-9)
    np.testing.assert_allclose(forces.numpy(), expected_f, rtol=0, atol=1e-9)
    # One cache per replica; the second call (same positions) reuses all of them.
    potential.evaluate(positions)
    assert len(potential.caches) == 4
    assert potential.neighbor_stats == {"builds": 4, "reuses": 4}
    # Passes of at most 3 replicas give the same numbers and keep one cache per replica.
    chunked = FreeCGPotential(model, atoms.numbers, atoms.cell.array, atoms.pbc,
                              dtype="float64", replicas_per_pass=3)
    chunked_e, chunked_f = chunked.evaluate(positions)
    np.testing.assert_allclose(chunked_e.numpy(), expected_e, rtol=0, atol=1e-9)
    np.testing.assert_allclose(chunked_f.numpy(), expected_f, rtol=0, atol=1e-9)
    assert len(chunked.caches) == 4
    # On a CPU, "auto" evaluates one replica per pass (faster there; see the docstring).
    assert FreeCGPotential(model, atoms.numbers, dtype="float64").replicas_per_pass == 1
    # Passes in worker processes (started at the second call) give the same numbers.
    with FreeCGPotential(model, atoms.numbers, atoms.cell.array, atoms.pbc, dtype="float64",
                         replicas_per_pass=1, workers=3) as in_workers:
        for _ in range(3):
            workers_e, workers_f = in_workers.evaluate(positions)
            np.testing.assert_allclose(workers_e.numpy(), expected_e, rtol=0, atol=1e-9)
            np.testing.assert_allclose(workers_f.numpy(), expected_f, rtol=0, atol=1e-9)
        assert in_workers._worker_processes.n_workers == 3
        # The first call's lists (here), the workers' own lists, then their reuses.
        assert in_workers.neighbor_stats == {"builds": 8, "reuses": 4}


def test_worker_processes_report_errors_stay_in_step_and_stop():
    model = small_model(torch.float64)
    atoms = random_molecule(8, seed=6)
    positions = replica_positions(atoms, 4, scale=0.05)
    potential = FreeCGPotential(model, atoms.numbers, dtype="float64", workers=2)
    expected_e, expected_f = potential.evaluate(positions)  # in this process
    bad = positions.clone()
    bad[3, 5] = bad[3, 2] + 0.01  # in the second worker's block (replicas 2-3)
    with pytest.raises(ValueError, match="replica 3: atoms 2 and 5 overlap"):
        potential.evaluate(bad)
    workers = potential._worker_processes
    assert workers.n_workers == 2
    # Both workers answered, so the next call gets this call's results, not stale ones.
    energies, forces = potential.evaluate(positions)
    np.testing.assert_allclose(energies.numpy(), expected_e.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(forces.numpy(), expected_f.numpy(), rtol=0, atol=1e-9)
    # A worker that dies is reported by number and pid, and the others are stopped.
    victim = workers.processes[1]
    victim.kill()
    victim.wait()
    with pytest.raises(WorkerError, match=rf"worker process 1 \(pid {victim.pid}\) exited "
                                           r"with code -9 while evaluating replicas 2-3"):
        potential.evaluate(positions)
    assert all(process.poll() is not None for process in workers.processes)
    # The next call starts new workers.
    energies, _ = potential.evaluate(positions)
    np.testing.assert_allclose(energies.numpy(), expected_e.numpy(), rtol=0, atol=1e-9)
    processes = potential._worker_processes.processes
    potential.close()
    assert all(process.poll() is not None for process in processes)


def test_ase_calculator_potential_matches_and_keeps_one_calculator_per_replica():
    model = small_model(torch.float64)
    atoms = random_molecule(8, seed=4)
    positions = replica_positions(atoms, 3)
    made = []

    def factory(replica: int) -> FreeCGCalculator:
        made.append(replica)
        return FreeCGCalculator(model, dtype="float64")

    wrapped = ASECalculatorPotential(factory, atoms.numbers)
    energies, forces = wrapped.evaluate(positions)
    wrapped.evaluate(positions + 0.01)
    assert made == [0, 1, 2]
    assert all(c.neighbor_stats["builds"] + c.neighbor_stats["reuses"] == 2
               for c in wrapped.calculators)
    batched_e, batched_f = FreeCGPotential(model, atoms.numbers, dtype="float64").evaluate(
        positions)
    np.testing.assert_allclose(energies.numpy(), batched_e.numpy(), atol=1e-9, rtol=0)
    np.testing.assert_allclose(forces.numpy(), batched_f.numpy(), atol=1e-9, rtol=0)
    shared = FreeCGCalculator(model)
    with pytest.raises(ValueError, match="same object more than once"):
        ASECalculatorPotential([shared, shared], atoms.numbers)
    with pytest.raises(ValueError, match="only 1 calculators"):
        ASECalculatorPotential([shared], atoms.numbers).evaluate(positions)


def test_freecg_potential_input_errors():
    model = small_model()
    atoms = random_molecule(6, seed=1)
    potential = FreeCGPotential(model, atoms.numbers)
    positions = replica_positions(atoms, 3)
    positions[2, 4, 1] = float("nan")
    with pytest.raises(ValueError, match=r"replica 2 has NaN or infinite positions .*\[4\]"):
        potential.evaluate(positions)
    positions = replica_positions(atoms, 3)
    positions[1, 3] = positions[1, 0] + 0.01
    with pytest.raises(ValueError, match="replica 1: atoms 0 and 3 overlap"):
        potential.evaluate(positions)
    with pytest.raises(ValueError, match=r"positions has shape \(3, 5, 3\); expected \(R, 6, 3\)"):
        potential.evaluate(positions[:, :5])
    with pytest.raises(ValueError, match="element\\(s\\) Cl that the model was not trained on"):
        FreeCGPotential(model, [6, 17])
    with pytest.raises(ValueError, match="dtype='float16'"):
        FreeCGPotential(model, atoms.numbers, dtype="float16")
    with pytest.raises(ValueError, match="replicas_per_pass=0: expected 'auto'"):
        FreeCGPotential(model, atoms.numbers, replicas_per_pass=0)
    with pytest.raises(ValueError, match="workers=0: expected 'auto'"):
        FreeCGPotential(model, atoms.numbers, workers=0)
    with pytest.raises(TypeError, match="expected a FreeCG"):
        FreeCGPotential(torch.nn.Linear(2, 2), atoms.numbers)


def test_worker_processes_only_on_posix(monkeypatch):
    import types

    from freecg_md.md import potentials

    model = small_model()
    monkeypatch.setattr(potentials, "os", types.SimpleNamespace(name="nt"))
    assert FreeCGPotential(model, [1, 6]).workers == 1
    with pytest.raises(ValueError, match="workers=2: worker processes need a POSIX system"):
        FreeCGPotential(model, [1, 6], workers=2)


def test_freecg_potential_leaves_the_callers_model_alone():
    model = small_model(torch.float32)
    FreeCGPotential(model, [1, 6], dtype="float64")
    assert next(model.parameters()).dtype == torch.float32


WORKERS_SCRIPT = """
import os, signal, sys
import numpy as np, torch
sys.path.insert(0, {root!r})
from freecg_md.md import FreeCGPotential
from tests.conftest import random_molecule, small_model
atoms = random_molecule(6, seed=1)
potential = FreeCGPotential(small_model(), atoms.numbers, workers=2)
positions = torch.tensor(np.stack([atoms.positions] * 2))
potential.evaluate(positions)
potential.evaluate(positions)
print(*[process.pid for process in potential._worker_processes.processes], flush=True)
if sys.argv[1] == "killed":
    os.kill(os.getpid(), signal.SIGKILL)
"""


def _exited(pid: int) -> bool:
    """No process ``pid``, or one that has exited and waits to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("ending", ["exits", "killed"])
def test_worker_processes_end_with_their_parent(ending):
    """The workers stop when the parent exits without close(), and when it is killed (they
    see their socket close)."""
    root = str(Path(__file__).resolve().parents[2])
    result = subprocess.run([sys.executable, "-c", WORKERS_SCRIPT.format(root=root), ending],
                            capture_output=True, text=True, timeout=300)
    pids = [int(pid) for pid in result.stdout.split()]
    assert len(pids) == 2, result.stderr
    deadline = time.monotonic() + 30
    while not all(_exited(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_exited(pid) for pid in pids)


def test_a_committee_in_worker_processes_equals_the_committee_here():
    members = [small_model(torch.float64, seed=s) for s in range(2)]
    atoms = random_molecule(9, seed=4)
    positions = replica_positions(atoms, 3)
    here = FreeCGPotential(members, atoms.numbers, dtype="float64", workers=1)
    energies, forces = here.evaluate(positions)
    spread = here.force_disagreement.clone()
    assert spread.shape == (3,) and bool((spread > 0).all())
    # The mean of the members, as the calculator computes it.
    member_results = [calculator_results(m, atoms, positions) for m in members]
    np.testing.assert_allclose(energies.numpy(), np.mean([e for e, _ in member_results], 0),
                               atol=1e-9)
    with FreeCGPotential(members, atoms.numbers, dtype="float64", workers=3) as in_workers:
        for _ in range(2):  # the first call runs here, the second in the workers
            workers_e, workers_f = in_workers.evaluate(positions)
            np.testing.assert_allclose(workers_e.numpy(), energies.numpy(), atol=1e-9)
            np.testing.assert_allclose(workers_f.numpy(), forces.numpy(), atol=1e-9)
            np.testing.assert_allclose(in_workers.force_disagreement.numpy(), spread.numpy(),
                                       atol=1e-9)
        assert in_workers._worker_processes.n_workers == 3
