"""Shared fixtures: small models and random structures that keep the suite fast."""

from __future__ import annotations

import copy
import os
import runpy
import sys
from pathlib import Path

# libgomp's default spin-waiting made calls 6-17x slower here when another job held a core;
# this must be set before torch starts its OpenMP runtime.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402

from freecg_md import FreeCG  # noqa: E402

SMALL = dict(hidden=32, num_layers=3, num_heads=4, num_groups=4, num_basis=16, cutoff=4.0)


def small_model(dtype: torch.dtype = torch.float32, seed: int = 0, **overrides) -> FreeCG:
    """A small FreeCG with non-trivial weights (Xavier scales, the group-CG weights
    enlarged, so the branch matters in the tests instead of starting near zero)."""
    torch.manual_seed(seed)
    model = FreeCG(**{**SMALL, "init": "xavier", **overrides})
    with torch.no_grad():
        for layer in model.layers:
            if layer.group_cg is not None:
                layer.group_cg.weight.mul_(3.0)
    return model.to(dtype)


def frozen_pair(edge_chunk_size: int | None) -> tuple[FreeCG, FreeCG]:
    """A frozen float64 ``small_model`` in runs of ``edge_chunk_size`` edges (None: whole
    passes), and its copy with the fused kernels off (torch operations), for comparisons."""
    model = small_model(torch.float64).requires_grad_(False)
    model.edge_chunk_size = edge_chunk_size
    plain = copy.deepcopy(model)
    plain.fused_kernels = False
    return model, plain


def random_molecule(
    n_atoms: int = 12, seed: int = 0, box: float = 5.0, species=(1, 6, 7, 8)
) -> Atoms:
    """Atoms at random positions at least 0.9 Å apart (rejection sampling)."""
    rng = np.random.default_rng(seed)
    positions: list[np.ndarray] = []
    while len(positions) < n_atoms:
        trial = rng.uniform(0, box, 3)
        if all(np.linalg.norm(trial - p) > 0.9 for p in positions):
            positions.append(trial)
    numbers = rng.choice(species, size=n_atoms)
    return Atoms(numbers=numbers, positions=np.array(positions))


def full_edges(n_atoms: int) -> torch.Tensor:
    """All ordered pairs i != j: a valid (if wasteful) input for any cutoff."""
    i, j = torch.meshgrid(torch.arange(n_atoms), torch.arange(n_atoms), indexing="ij")
    keep = i != j
    return torch.stack([i[keep], j[keep]])


@pytest.fixture
def model32() -> FreeCG:
    return small_model(torch.float32)


@pytest.fixture
def model64() -> FreeCG:
    return small_model(torch.float64)


def run_script(path: Path, *args: str) -> int:
    """Run a script's ``__main__`` with ``args``; returns its exit code (0 when it returns).
    As ``python path`` does, the script's folder comes first on ``sys.path`` (the scripts
    import their neighbours)."""
    saved, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(path), *map(str, args)]
    sys.path.insert(0, str(Path(path).resolve().parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)  # as the interpreter does with a message
        return 1
    finally:
        sys.argv = saved
        sys.path[:] = saved_path
    return 0
