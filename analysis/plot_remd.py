"""Replica-exchange diagnostics of a run: acceptance per neighbouring pair, replica walks.

    python analysis/plot_remd.py runs/remd_chignolin [--out DIR]

Writes ``remd.png``, ``acceptance.csv`` and ``remd_summary.json`` (acceptance and round
trips per replica) into ``RUN/plots`` by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from freecg_md.analysis.reduced import default_plot_dir, load_run
from freecg_md.analysis.reports import remd_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path,
                        help="run directory (with exchanges) or reduced run (.npz)")
    parser.add_argument("--out", type=Path,
                        help="output directory (default RUN/plots, or plots/ beside a .npz)")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.run)
        out = args.out or default_plot_dir(args.run)
        report = remd_report(run, out)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rates = ", ".join("n/a" if a is None else f"{a:.2f}" for a in report["acceptance"])
    print(f"{report['attempts']} exchange rounds; acceptance per pair {rates}; round trips "
          f"{report['round_trips']}; wrote {report['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
