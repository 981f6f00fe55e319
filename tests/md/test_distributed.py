"""Two torch.distributed processes (gloo, launched by torchrun) equal one process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist
from mdtraj.formats import DCDTrajectoryFile

from freecg_md.md import replica_block, run_replicas, trajectory_path
from tests.md.distributed_worker import build_runs

ROOT = Path(__file__).resolve().parents[2]

needs_gloo = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_replica_blocks_are_contiguous_and_cover_everything():
    blocks = [replica_block(7, 3, rank) for rank in range(3)]
    assert [(b.start, b.stop) for b in blocks] == [(0, 3), (3, 5), (5, 7)]
    with pytest.raises(ValueError, match="n_replicas=1 is less than world_size=2"):
        replica_block(1, 2, 0)


@needs_gloo
def test_two_processes_equal_one(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
           "OMP_WAIT_POLICY": "PASSIVE", "MASTER_ADDR": "127.0.0.1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1",
               "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()),
               str(ROOT / "tests" / "md" / "distributed_worker.py"), str(tmp_path / "two")]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    for name, (potential, state, config) in build_runs(tmp_path / "one").items():
        single = run_replicas(potential, state, config, progress=False)
        two = np.load(tmp_path / "two" / f"{name}_result.npz")
        assert np.array_equal(two["permutation"], single.exchange.temperature_of_replica)
        if name == "toy":  # replicas independent of their batch: bit for bit
            assert np.array_equal(two["positions"], single.state.positions.numpy())
            assert np.array_equal(two["velocities"], single.state.velocities.numpy())
        else:  # FreeCG's float64 sums differ in the last bit between batch sizes
            np.testing.assert_allclose(two["positions"], single.state.positions.numpy(),
                                       rtol=0, atol=1e-9)
        one_dir, two_dir = tmp_path / "one" / name, tmp_path / "two" / name
        assert json.loads((two_dir / "config.json").read_text())["world_size"] == 2
        for file in ("frames.csv", "exchange.csv"):
            assert (one_dir / file).read_text() == (two_dir / file).read_text()
        for r in range(5):
            with DCDTrajectoryFile(str(trajectory_path(one_dir, r))) as a, \
                    DCDTrajectoryFile(str(trajectory_path(two_dir, r))) as b:
                np.testing.assert_allclose(a.read()[0], b.read()[0], rtol=0, atol=1e-5)
