"""A calculator in the user's own process with glibc's default malloc against
:func:`freecg_md.keep_freed_memory`, in fresh processes taking turns.

``keep_freed_memory`` changes malloc for the whole process and cannot be undone, so each
setting runs in a process of its own: every round starts one process per setting, in turn,
each timing ``--calls`` energy + forces calls of a frozen model through
:class:`~freecg_md.FreeCGCalculator` (float32) on chignolin or the peers' 1,002-atom water
droplet, on geometries moved by 0.005 Å rms, after ``--warmup`` untimed calls. Prints each
setting's median ms per call over all rounds, the page faults per call (the process's
minor faults over the timed calls), and the speed-up.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_malloc.py --model models/chignolin.pt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

SETTINGS = ("default", "keep_freed_memory")


def child(args: argparse.Namespace) -> None:
    """One process: the setting, the calls, one JSON line of results."""
    from freecg_md import keep_freed_memory

    if args.child == "keep_freed_memory" and not keep_freed_memory():
        raise SystemExit("keep_freed_memory() did not take here (not glibc?)")
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_runs import calculator_calls

    torch.set_num_threads(args.threads)
    _, _, call = calculator_calls(args.model, args.system)

    for _ in range(args.warmup):
        call()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    times = []
    for _ in range(args.calls):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"times": times, "faults": faults / args.calls}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/chignolin.pt", help="a model file")
    parser.add_argument("--system", choices=("chignolin", "water"), default="chignolin")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per process")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per process")
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    times: dict[str, list[float]] = {name: [] for name in SETTINGS}
    faults: dict[str, list[float]] = {name: [] for name in SETTINGS}
    passed = [f"--{key}={value}" for key, value in vars(args).items()
              if key not in ("rounds", "child")]
    for _ in range(args.rounds):
        for name in SETTINGS:
            done = subprocess.run([sys.executable, __file__, *passed, f"--child={name}"],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"the {name} process failed:\n{done.stderr}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            times[name] += result["times"]
            faults[name].append(result["faults"])
    print(f"{args.model} on {args.system}, float32, {args.threads} thread(s), {args.rounds} "
          f"rounds of a fresh process per setting, {args.calls} timed calls each")
    base = statistics.median(times["default"])
    for name in SETTINGS:
        median = statistics.median(times[name])
        print(f"{name:>18}  {1e3 * median:8.1f} ms  {base / median:5.2f}x  "
              f"{statistics.median(faults[name]):8.0f} page faults per call")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
