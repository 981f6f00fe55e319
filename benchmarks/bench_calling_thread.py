"""What the calling thread does while the run pool shares a pass, side by side in one process.

A frozen model (the calculator's) shares a pass's runs of edges among a team of
single-threaded threads (:mod:`freecg_md.nn.cpu.threads`); the rest of the pass (the
edge vectors, spherical harmonics, per-atom work of small systems, the force sums) runs in
the calling thread. Three settings decide how, and this benchmark times none of them,
each of the first two, those two, and all three (the default), energy and forces by the
calculator, float32:

- ``alone``: the calling thread's own operations on one intra-op thread during the pass
  (``threads.CALLING_THREAD_ALONE``, the default) or on its team of ``--threads``;
- ``split``: the per-atom work of a system under 512 atoms split into one block per thread
  where atoms x F reaches ``threads.SPLIT_ATOM_FEATURES`` (the default), or left whole in
  the calling thread;
- ``takes``: the calling thread takes the pool's items (runs, blocks) beside
  ``--threads`` - 1 workers (``threads.CALLING_THREAD_TAKES_ITEMS``, the default) or waits
  while ``--threads`` workers take them all (but a single per-atom block, which it runs
  itself).

Each round times every combination in turn (``--calls`` calls after one untimed call, on
geometries moved by 0.005 Å rms), so load from other jobs falls on all alike; prints each
one's median ms per call over the rounds, its speed-up over none of them and over
"alone + split" (the calling thread waiting for the workers, as the pass ran before
``takes``), and the largest force difference from none of them.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_calling_thread.py \\
        --model models/chignolin.pt
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_runs import calculator_calls, timed_in_turns  # noqa: E402

from freecg_md.nn.cpu import threads  # noqa: E402

NEVER = 2 ** 62  # a SPLIT_ATOM_FEATURES no system reaches
# name: (CALLING_THREAD_ALONE, SPLIT_ATOM_FEATURES, CALLING_THREAD_TAKES_ITEMS)
SETTINGS = {"none": (False, NEVER, False), "alone": (True, NEVER, False),
            "split": (False, threads.SPLIT_ATOM_FEATURES, False),
            "alone + split": (True, threads.SPLIT_ATOM_FEATURES, False),
            "alone + split + takes (default)": (True, threads.SPLIT_ATOM_FEATURES, True)}


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
    if args.threads < 2:
        parser.error(f"--threads {args.threads}: the settings apply from 2 threads on")
    torch.set_num_threads(args.threads)
    atoms, calc, call = calculator_calls(args.model, args.system)
    start = atoms.get_positions()

    def use(name: str) -> None:
        (threads.CALLING_THREAD_ALONE, threads.SPLIT_ATOM_FEATURES,
         threads.CALLING_THREAD_TAKES_ITEMS) = SETTINGS[name]

    forces = {}
    for name in SETTINGS:
        use(name)
        atoms.set_positions(start)
        forces[name] = atoms.get_forces().copy()
        call()
    times = timed_in_turns({name: name for name in SETTINGS}, use, call, args.rounds,
                           args.calls)
    if torch.get_num_threads() != args.threads:
        raise RuntimeError(f"the calls left {torch.get_num_threads()} threads, not "
                           f"{args.threads}")
    print(f"{args.model} on {args.system} ({len(atoms)} atoms), float32, {args.threads} "
          f"threads, {args.rounds} rounds of {args.calls} calls; {calc.model.last_plan.describe()}")
    base = statistics.median(times["none"])
    waiting = statistics.median(times["alone + split"])
    print(f"{'':>31}  {'median':>11}  {'/ none':>6}  {'/ alone + split':>15}")
    for name in SETTINGS:
        median = statistics.median(times[name])
        difference = float(np.abs(forces[name] - forces["none"]).max())
        print(f"{name:>31}  {1e3 * median:8.1f} ms  {base / median:5.2f}x  "
              f"{waiting / median:14.2f}x  max |dF| {difference:.1e} eV/Å")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
