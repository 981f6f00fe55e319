"""Energy + forces of the default FreeCG on chignolin (166 atoms) through the ASE calculator.

Prints, from one interleaved run: ms per call in float32 and float64, the share of a call
spent building or checking the neighbour list with the Verlet cache on and off, and the
parameter count. Every configuration is timed in turn within each repeat, so load from other
jobs on a shared machine hits them alike and the printed ratios stay meaningful.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_calculator.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402

from freecg_md import FreeCG, FreeCGCalculator  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402


class TimedNeighbors:
    """Wraps a calculator's neighbour cache and accumulates the time spent in it."""

    def __init__(self, calculator: FreeCGCalculator) -> None:
        self.inner = calculator.neighbors.get
        self.seconds = 0.0
        calculator.neighbors.get = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per configuration")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--step", type=float, default=0.005,
                        help="rms displacement per call, Å (an MD step's worth)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    model = FreeCG()
    n_params = sum(p.numel() for p in model.parameters())
    atoms = load_chignolin().atoms
    configs = {
        (dtype, skin): FreeCGCalculator(model, dtype=dtype, skin=skin)
        for dtype in ("float32", "float64")
        for skin in (1.0, 0.0)
    }
    timers = {key: TimedNeighbors(calc) for key, calc in configs.items()}
    rng = np.random.default_rng(args.seed)
    totals: dict = {key: [] for key in configs}
    nl_before = {key: 0.0 for key in configs}
    walkers = {key: atoms.copy() for key in configs}
    for repeat in range(args.warmup + args.repeats):
        displacement = rng.normal(scale=args.step / np.sqrt(3), size=atoms.positions.shape)
        for key, calc in configs.items():
            walker = walkers[key]
            walker.positions += displacement
            walker.calc = calc
            nl_before[key] = timers[key].seconds
            start = time.perf_counter()
            walker.get_forces()
            elapsed = time.perf_counter() - start
            if repeat >= args.warmup:
                totals[key].append((elapsed, timers[key].seconds - nl_before[key]))

    print(f"FreeCG() default: {n_params:,} parameters; chignolin {len(atoms)} atoms; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{args.repeats} interleaved repeats, {args.step} Å rms step per call")
    print(f"{'dtype':8} {'NL cache':9} {'ms/call':>9} {'NL ms':>8} {'NL share':>9} "
          f"{'builds':>7} {'reuses':>7}")
    medians = {}
    for (dtype, skin), samples in totals.items():
        total = statistics.median(s[0] for s in samples) * 1e3
        nl = statistics.median(s[1] for s in samples) * 1e3
        share = sum(s[1] for s in samples) / sum(s[0] for s in samples)
        medians[dtype, skin] = total
        stats = configs[dtype, skin].neighbor_stats
        print(f"{dtype:8} {'on' if skin else 'off':9} {total:9.1f} {nl:8.3f} {share:9.2%} "
              f"{stats['builds']:7d} {stats['reuses']:7d}")
    print(f"ratio float64/float32 (cache on): "
          f"{medians['float64', 1.0] / medians['float32', 1.0]:.2f}")
    print(f"ratio cache off/on (float32): {medians['float32', 0.0] / medians['float32', 1.0]:.3f}")


if __name__ == "__main__":
    main()
