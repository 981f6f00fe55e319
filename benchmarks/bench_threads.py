"""Energy + forces on chignolin against the number of torch threads, side by side in one run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_threads.py
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_threads.py --threads 1 2 --paper-size

Times a frozen ``FreeCG()`` (random weights, seeded; ``--paper-size`` for F = 256, 9 layers,
G = 32; ``--model`` for a model file) on the protonated chignolin, float32, switching
``torch.set_num_threads`` between calls: every repeat calls the model twice per thread
count, in turn, on the same perturbed geometry, and times the second call (the first after
a switch resizes OpenMP's team), so load from other jobs falls on all counts alike. A frozen
model on a CPU shares its runs of edges among that many threads (see ``FreeCG``). Prints
the median ms per call per thread count and the speed-up over the first count.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402

from freecg_md import FreeCG, build_neighbor_list, load_model  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model", help="model file (default: FreeCG() with random weights)")
    parser.add_argument("--paper-size", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    if args.model:
        model = load_model(args.model)
    else:
        model = FreeCG(hidden=256, num_layers=9, num_groups=32) if args.paper_size else FreeCG()
    model = model.float().eval().requires_grad_(False)
    atoms = load_chignolin().atoms
    numbers = torch.as_tensor(atoms.numbers)
    rng = np.random.default_rng(args.seed)

    def call(positions: np.ndarray) -> float:
        edges = torch.as_tensor(build_neighbor_list(positions, model.cutoff).edge_index)
        start = time.perf_counter()
        model.energy_and_forces(numbers, torch.as_tensor(positions, dtype=torch.float32), edges)
        return time.perf_counter() - start

    for threads in args.threads:  # warm-up: kernels, thread pools
        torch.set_num_threads(threads)
        call(atoms.positions)
    samples: dict[int, list[float]] = {threads: [] for threads in args.threads}
    for _ in range(args.repeats):
        positions = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
        for threads in args.threads:
            torch.set_num_threads(threads)
            # The first call after a switch resizes OpenMP's team and wakes the run pool's
            # threads; it is not what a calculator that keeps its thread count pays.
            call(positions)
            samples[threads].append(call(positions))
    name = args.model or ("FreeCG(hidden=256, num_layers=9, num_groups=32)" if args.paper_size
                          else "FreeCG()")
    print(f"{name} float32 on chignolin ({len(atoms)} atoms), torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {args.repeats} interleaved repeats")
    first = statistics.median(samples[args.threads[0]])
    for threads, times in samples.items():
        median = statistics.median(times)
        print(f"{threads:3d} threads: {median * 1e3:8.1f} ms/call, "
              f"speed-up {first / median:.2f}x")


if __name__ == "__main__":
    main()
