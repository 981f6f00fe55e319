"""How a frozen model's pass is cut into runs of edges, side by side in one process.

A frozen model (the calculator's) on chignolin (166 atoms, 5,546 edges within 5 Å) or a
1,002-atom water droplet (``--system water``, 42,286 edges), float32, energy and forces by
the calculator, with ``model.edge_chunk_size`` set to each of:

- ``auto``: what :func:`freecg_md.nn.plan.plan_pass` chooses (the default; through the fused
  CPU kernels, one run per thread and runs of at most 8,192 edges);
- ``1024``: runs of about 1,024 edges from 4,096 edges on;
- ``whole``: no runs (one pass in the calling thread).

Each round times every configuration in turn (``--calls`` calls after one untimed call, on
geometries moved by 0.005 Å rms), so load from other jobs falls on all alike; prints each
one's median ms per call over the rounds, its plan, its ratio to ``auto``, and the largest
force difference from ``whole``.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_runs.py --threads 2 \\
        --model models/chignolin.pt
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402

from freecg_md import FreeCGCalculator  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402
from freecg_md.nn import FreeCG, FreeCGConfig  # noqa: E402

CONFIGURATIONS = {"auto": "auto", "1024": 1024, "whole": None}


def system(name: str) -> Atoms:
    """Chignolin, or the peers benchmark's 1,002-atom water droplet."""
    if name == "chignolin":
        return load_chignolin().atoms.copy()
    sys.path.insert(0, str(Path(__file__).parent))
    from peers import water_cluster

    numbers, positions = water_cluster(334)
    return Atoms(numbers=numbers, positions=positions)


def calculator_calls(model: str, system_name: str) -> tuple[Atoms, FreeCGCalculator,
                                                             Callable[[], None]]:
    """``(atoms, calc, call)``: ``model`` (a file, ``default`` or ``paper``, random weights
    seeded) in a float32 calculator on ``system_name``, and a call that moves the atoms by
    0.005 Å rms from their start (a seeded draw each time) and asks for the forces."""
    torch.manual_seed(0)
    made = {"default": lambda: FreeCG(),
            "paper": lambda: FreeCG(FreeCGConfig(hidden=256, num_layers=9, num_groups=32))
            }.get(model, lambda: model)()
    calc = FreeCGCalculator(made, dtype="float32")
    atoms = system(system_name)
    atoms.calc = calc
    start = atoms.get_positions()
    rng = np.random.default_rng(0)

    def call() -> None:
        atoms.set_positions(start + rng.normal(scale=0.005, size=start.shape))
        atoms.get_forces()

    return atoms, calc, call


def timed_in_turns(configurations: dict[str, Any], use: Callable[[Any], None],
                   call: Callable[[], None], rounds: int, calls: int) -> dict[str, list[float]]:
    """Seconds per call of each configuration, one entry per round: every round applies each
    configuration in turn (``use(value)``), makes one untimed call (it warms the caches
    after the switch) and times ``calls`` more, so load from other jobs falls on all alike."""
    times: dict[str, list[float]] = {name: [] for name in configurations}
    for _ in range(rounds):
        for name, value in configurations.items():
            use(value)
            call()
            began = time.perf_counter()
            for _ in range(calls):
                call()
            times[name].append((time.perf_counter() - began) / calls)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default",
                        help="a model file, 'default' (FreeCG()) or 'paper' (F = 256, 9 "
                             "layers, G = 32; random weights)")
    parser.add_argument("--system", choices=("chignolin", "water"), default="chignolin")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per round")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    atoms, calc, call = calculator_calls(args.model, args.system)
    start = atoms.get_positions()
    plans, forces = {}, {}
    for name, chunk in CONFIGURATIONS.items():
        calc.model.edge_chunk_size = chunk
        atoms.set_positions(start)
        forces[name] = atoms.get_forces().copy()
        plans[name] = calc.model.last_plan.describe()
        call()
    times = timed_in_turns(CONFIGURATIONS, lambda chunk: setattr(calc.model, "edge_chunk_size",
                                                                 chunk),
                           call, args.rounds, args.calls)
    print(f"{args.model} on {args.system} ({len(atoms)} atoms), float32, {args.threads} "
          f"thread(s), {args.rounds} rounds of {args.calls} calls")
    base = statistics.median(times["auto"])
    for name in CONFIGURATIONS:
        median = statistics.median(times[name])
        difference = float(np.abs(forces[name] - forces["whole"]).max())
        print(f"{name:>6}  {1e3 * median:8.1f} ms  {median / base:5.2f}x auto  "
              f"max |dF| {difference:.1e} eV/Å  {plans[name]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
