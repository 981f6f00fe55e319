"""Speed of the model's choices (FreeCGConfig) against our defaults: chignolin (166 atoms).

Energy + forces of a frozen model of the shipped size with the shipped weights (the max
enhancer's differently shaped enhancer drawn afresh), float32, through the calculator's
path (``atom_energies`` with a neighbour list), interleaved over ``--rounds`` rounds of
``--calls`` calls on slightly moved positions. Rows: our defaults on the fused CPU kernels
and on torch operations (``fused_kernels = False``), and each other setting, which runs on
torch operations (the kernels compute our defaults only). Prints the median ms per call and
the ratio to our defaults with the kernels, and to our defaults on torch operations.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_choices.py --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402

from freecg_md import FreeCG, load_model, shipped_model  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402
from freecg_md.neighbors import build_neighbor_list  # noqa: E402
from freecg_md.nn.model import REFERENCE_CHOICES  # noqa: E402

SETTINGS = {
    "ours, fused kernels": {},
    "ours, torch operations": {},
    "self_loops": {"self_loops": True},
    "edge_update dot": {"edge_update": "dot"},
    "enhancer max": {"enhancer": "max"},
    "vector message without cutoff": {"vector_message_cutoff": False},
    "the authors' settings": dict(REFERENCE_CHOICES),
}


def variant(base: FreeCG, name: str) -> FreeCG:
    model = FreeCG(dataclasses.replace(base.config, **SETTINGS[name]))
    own = model.state_dict()
    model.load_state_dict({key: value for key, value in base.state_dict().items()
                           if own[key].shape == value.shape}, strict=False)
    model.requires_grad_(False)
    model.fused_kernels = name == "ours, fused kernels"
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = load_model(shipped_model("chignolin"))
    models = {name: variant(base, name) for name in SETTINGS}
    atoms = load_chignolin().atoms
    numbers = torch.as_tensor(atoms.numbers)
    rng = np.random.default_rng(0)
    edges = torch.as_tensor(build_neighbor_list(atoms.positions, base.cutoff + 1.0).edge_index)
    times: dict[str, list[float]] = {name: [] for name in models}
    plans = {}
    for round_ in range(args.rounds + 1):  # the first round warms up
        for name, model in models.items():
            per_call = []
            for _ in range(args.calls):
                moved = atoms.positions + rng.normal(scale=0.005, size=atoms.positions.shape)
                positions = torch.as_tensor(moved, dtype=torch.float32)
                start = time.perf_counter()
                model.energy_and_forces(numbers, positions, edges)
                per_call.append(time.perf_counter() - start)
            plans[name] = model.last_plan.describe()
            if round_:
                times[name].append(statistics.median(per_call) * 1e3)
    fused = statistics.median(times["ours, fused kernels"])
    plain = statistics.median(times["ours, torch operations"])
    print(f"{'setting':32s} {'ms/call':>8s} {'/ fused':>8s} {'/ torch':>8s}  path")
    for name in models:
        ms = statistics.median(times[name])
        print(f"{name:32s} {ms:8.1f} {ms / fused:8.2f} {ms / plain:8.2f}  {plans[name]}")


if __name__ == "__main__":
    main()
