"""Cα RMSD to the native chignolin over the trajectories of a run, mean ± 1 std band.

    python analysis/plot_rmsd.py runs/langevin_chignolin [--out DIR] [--selection ca]

Writes ``rmsd.png`` and ``rmsd.csv`` (time, mean, standard deviation, every trajectory)
into ``RUN/plots`` by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from freecg_md.analysis.reports import rmsd_report
from freecg_md.analysis.rundir import read_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("--out", type=Path, help="output directory (default RUN/plots)")
    parser.add_argument("--selection", default="ca", choices=["ca", "backbone", "heavy", "all"],
                        help="atoms superposed and compared")
    args = parser.parse_args(argv)
    report = rmsd_report(read_run(args.run), args.out or args.run / "plots", args.selection)
    print(f"RMSD at the end {report['final_mean_A']:.2f} ± {report['final_std_A']:.2f} Å, "
          f"mean over the run {report['overall_mean_A']:.2f} Å; wrote {report['png']}")


if __name__ == "__main__":
    main()
