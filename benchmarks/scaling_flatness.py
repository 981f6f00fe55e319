"""How flat FreeCG's time per atom is from ~1,000 to ~50,000 atoms, measured side by side.

``scaling.py`` measures each (size, model) in a fresh process, one after another, so its
1,000-atom and 50,000-atom figures are minutes apart; on a shared machine whose speed drifts
by tens of percent in that time their ratio is mostly drift. Here one process per model
holds all the boxes (the water boxes of ``scaling.py``, frozen models built as
``peers_models.py`` builds them) and each round times every size, back to back, so the
ratio of a round compares calls made within a minute or two of each other. Prints each
round's time per atom of every size (the median of up to 5 calls that fill
``--min-seconds``: one call of the largest box) and the ratio of the slowest to the fastest;
the median of those ratios over the rounds is the figure.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/scaling_flatness.py --threads 2
    .venv/bin/python benchmarks/scaling_flatness.py --sizes 1000 5000 --rounds 2   # minutes
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import hardware, write_geometry  # noqa: E402
from peers_models import build, load_geometry  # noqa: E402
from scaling import water_box  # noqa: E402


def timed(call, min_seconds: float, max_calls: int = 5) -> list[float]:  # noqa: ANN001
    """Seconds of successive calls, until ``min_seconds`` have passed or ``max_calls``
    calls: small boxes get a median of several calls, the largest one call a round."""
    seconds: list[float] = []
    while sum(seconds) < min_seconds and len(seconds) < max_calls:
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 5000, 50000],
                        help="target numbers of atoms (boxes as in scaling.py)")
    parser.add_argument("--models", nargs="+", default=["freecg", "freecg-small"],
                        choices=["freecg", "freecg-small", "freecg-paper"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-seconds", type=float, default=5.0,
                        help="each size is called until this much time has passed (at most "
                             "5 calls) in every round, and the median call counts")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    geometries = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            numbers, positions, cell = water_box(size, seed=args.seed)
            path = Path(tmp) / f"water_{size}.npz"
            write_geometry(path, numbers, positions, cell, pbc=True)
            geometries[size] = load_geometry(path)
    print(f"{hardware()}; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"float32, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
          f"{args.rounds} rounds, every size once per round")
    for model in args.models:
        calls = {}
        for size, geometry in geometries.items():
            calls[size], _ = build(model, geometry, torch.float32)
            calls[size]()  # warm-up: kernels, allocator, first-call work
        n_atoms = {size: len(geometry["numbers"]) for size, geometry in geometries.items()}
        ratios = []
        for round_index in range(args.rounds):
            per_atom = {}
            for size, call in calls.items():
                seconds = statistics.median(timed(call, args.min_seconds))
                per_atom[size] = seconds / n_atoms[size] * 1e6
            ratio = max(per_atom.values()) / min(per_atom.values())
            ratios.append(ratio)
            cells = ", ".join(f"{n_atoms[size]:,} atoms {value:,.0f}"
                              for size, value in per_atom.items())
            print(f"{model:13s} round {round_index + 1}: µs/atom {cells}; "
                  f"slowest / fastest {ratio:.2f}x", flush=True)
        print(f"{model:13s} median slowest / fastest over {args.rounds} rounds: "
              f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f}-{max(ratios):.2f})",
              flush=True)
        calls.clear()


if __name__ == "__main__":
    main()
