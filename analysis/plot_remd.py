"""Replica-exchange diagnostics of a run: acceptance per neighbouring pair, replica walks.

    python analysis/plot_remd.py runs/remd_chignolin [--out DIR]

Writes ``remd.png``, ``acceptance.csv`` and ``remd_summary.json`` (acceptance and round
trips per replica) into ``RUN/plots`` by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from freecg_md.analysis.reports import remd_report
from freecg_md.analysis.rundir import read_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory (with exchanges)")
    parser.add_argument("--out", type=Path, help="output directory (default RUN/plots)")
    args = parser.parse_args(argv)
    report = remd_report(read_run(args.run), args.out or args.run / "plots")
    rates = ", ".join("n/a" if a is None else f"{a:.2f}" for a in report["acceptance"])
    print(f"{report['attempts']} exchange rounds; acceptance per pair {rates}; round trips "
          f"{report['round_trips']}; wrote {report['png']}")


if __name__ == "__main__":
    main()
