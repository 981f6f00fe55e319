"""Cost of a committee against one model: chignolin (166 atoms), float32.

Times, interleaved over ``--rounds`` rounds of ``--calls`` calls each (positions moved by an
MD step's worth between calls, so neighbour lists are reused as in MD):

* a FreeCGCalculator call with one model and with a committee of K copies of it;
* 8 replicas through FreeCGPotential (worker processes, one per thread) with one model and
  with the committee.

Prints ms per call and the ratio to the single model. The members are copies of the shipped
model: their weights do not change the cost.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_committee.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402

from freecg_md import FreeCGCalculator, shipped_model  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402
from freecg_md.md import FreeCGPotential  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = str(shipped_model("chignolin"))
    chignolin = load_chignolin()
    atoms = chignolin.atoms
    rng = np.random.default_rng(0)
    calculators = {"calculator, 1 model": FreeCGCalculator(model),
                   f"calculator, committee of {args.members}":
                       FreeCGCalculator([model] * args.members)}
    potentials = {"8 replicas, 1 model": FreeCGPotential(model, atoms.numbers),
                  f"8 replicas, committee of {args.members}":
                      FreeCGPotential([model] * args.members, atoms.numbers)}
    replicas = torch.as_tensor(np.repeat(atoms.positions[None], 8, axis=0))
    for potential in potentials.values():  # the first call runs in-process, then workers
        potential.evaluate(replicas)
        potential.evaluate(replicas)
    times: dict[str, list[float]] = {name: [] for name in [*calculators, *potentials]}
    for _ in range(args.rounds):
        for name, calculator in calculators.items():
            probe = atoms.copy()
            probe.calc = calculator
            start = time.perf_counter()
            for _ in range(args.calls):
                probe.positions += rng.normal(scale=0.005, size=probe.positions.shape)
                probe.get_forces()
            times[name].append((time.perf_counter() - start) / args.calls)
        for name, potential in potentials.items():
            positions = replicas.clone()
            start = time.perf_counter()
            for _ in range(args.calls):
                positions += torch.as_tensor(rng.normal(scale=0.005, size=positions.shape))
                potential.evaluate(positions)
            times[name].append((time.perf_counter() - start) / args.calls)
    for potential in potentials.values():
        potential.close()
    print(f"chignolin, shipped model, float32, {args.threads} threads, "
          f"{args.rounds} rounds of {args.calls} calls (median)")
    names = list(times)
    for single, committee in (names[0:2], names[2:4]):
        base = statistics.median(times[single])
        for name in (single, committee):
            value = statistics.median(times[name])
            print(f"{name:<36} {1000 * value:8.1f} ms  {value / base:5.2f}x")


if __name__ == "__main__":
    main()
