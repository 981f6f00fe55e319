"""Cα RMSD to the native chignolin over the trajectories of a run, mean ± 1 std band.

    python analysis/plot_rmsd.py runs/langevin_chignolin [--out DIR] [--selection ca]

Writes ``rmsd.png`` and ``rmsd.csv`` (time, mean, standard deviation, every trajectory)
into ``RUN/plots`` by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from freecg_md.analysis.reduced import default_plot_dir, load_run
from freecg_md.analysis.reports import rmsd_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory or reduced run (.npz)")
    parser.add_argument("--out", type=Path,
                        help="output directory (default RUN/plots, or plots/ beside a .npz)")
    parser.add_argument("--selection", default="ca", choices=["ca", "backbone", "heavy", "all"],
                        help="atoms superposed and compared")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.run)
        out = args.out or default_plot_dir(args.run)
        report = rmsd_report(run, out, args.selection)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"RMSD at the end {report['final_mean_A']:.2f} ± {report['final_std_A']:.2f} Å, "
          f"mean over the run {report['overall_mean_A']:.2f} Å; wrote {report['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
