"""Worker for test_distributed: run under ``torchrun --nproc-per-node 2 ... OUT_ROOT``.

Builds the same runs as :func:`build_runs` (also used by the test for the single-process
reference) and runs them with the replicas spread over the torch.distributed ranks.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from freecg_md.md import (  # noqa: E402
    FreeCGPotential,
    ReplicaState,
    RunConfig,
    init_distributed,
    run_replicas,
)
from tests.conftest import random_molecule, small_model  # noqa: E402
from tests.md.toys import DoubleWell  # noqa: E402

LADDER = [300.0, 340.0, 390.0, 450.0, 520.0]  # 5 replicas: blocks of 3 and 2 on 2 ranks


def build_runs(out_root: Path) -> dict[str, tuple]:
    """``name -> (potential, state, config)`` for a toy and a FreeCG replica-exchange run."""
    x0 = np.random.default_rng(0).normal(size=(4, 3))
    positions = torch.tensor(np.broadcast_to(x0, (5, 4, 3)).copy())
    toy_state = ReplicaState(positions, torch.zeros_like(positions), torch.full((4,), 4.0),
                             torch.ones(4, dtype=torch.long), torch.zeros(3, 3), False)
    toy = RunConfig(temperatures=LADDER, n_steps=60, output_dir=str(out_root / "toy"),
                    timestep_fs=2.0, friction_per_ps=20.0, exchange_interval=5,
                    report_interval=10, checkpoint_interval=20, seed=5,
                    remove_com_motion=False,
                    # Free particles in a double well: no chemical bonds to guard.
                    max_bond_stretch=None, min_bond_compression=None)
    atoms = random_molecule(8, seed=6)
    model = small_model(torch.float64)
    freecg = RunConfig(temperatures=LADDER, n_steps=12, output_dir=str(out_root / "freecg"),
                       timestep_fs=0.5, friction_per_ps=5.0, exchange_interval=3,
                       report_interval=3, checkpoint_interval=6, seed=6, dtype="float64")
    return {
        "toy": (DoubleWell(), toy_state, toy),
        "freecg": (FreeCGPotential(model, atoms.numbers, dtype="float64"),
                   ReplicaState.from_atoms(atoms, 5), freecg),
    }


def main() -> None:
    torch.set_num_threads(1)
    comm = init_distributed("gloo")
    for name, (potential, state, config) in build_runs(Path(sys.argv[1])).items():
        result = run_replicas(potential, state, config, progress=False, comm=comm)
        if comm.rank == 0:
            np.savez(Path(sys.argv[1]) / f"{name}_result.npz",
                     positions=result.state.positions.numpy(),
                     velocities=result.state.velocities.numpy(),
                     permutation=result.exchange.temperature_of_replica)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
