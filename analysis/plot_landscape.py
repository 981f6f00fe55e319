"""Free-energy landscape of a chignolin run over the paper's two backbone distances.

    python analysis/plot_landscape.py runs/remd_chignolin [--out DIR]

Assesses the run's convergence first (``convergence.json``: equilibration detected with
pymbar, decorrelated samples, round trips, kinetic temperatures, samples per basin, the
folding free energy's error) and writes ``landscape.png`` (the histogram of the
decorrelated frames at the chosen temperature and, for a replica-exchange run, the MBAR
landscape reweighted from every temperature), ``basins.csv``, ``melting.csv`` and
``melting.png`` into ``RUN/plots`` by default. Free energies (``landscape_*.csv`` and the
basins' depths) are written only for a run that meets the criteria; otherwise the figure
says why not and shows the bins the run visited.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from freecg_md.analysis.reduced import default_plot_dir, load_run
from freecg_md.analysis.reports import basin_summary, landscape_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory or reduced run (.npz)")
    parser.add_argument("--out", type=Path,
                        help="output directory (default RUN/plots, or plots/ beside a .npz)")
    parser.add_argument("--temperature-index", type=int, default=0,
                        help="ladder index of the target temperature (0: the lowest)")
    parser.add_argument("--bins", type=int, default=30, help="histogram bins per axis")
    args = parser.parse_args(argv)
    try:
        run = load_run(args.run)
        out = args.out or default_plot_dir(args.run)
        report = landscape_report(run, out,
                              args.temperature_index, args.bins)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(report["verdict"])
    for method, basins in report["basins"].items():
        print(f"{method}: {basin_summary(basins)}")
    print(f"wrote {report['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
