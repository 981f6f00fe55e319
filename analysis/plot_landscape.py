"""Free-energy landscape of a chignolin run over the paper's two backbone distances.

    python analysis/plot_landscape.py runs/remd_chignolin [--out DIR] [--discard 0.2]

Writes ``landscape.png`` (filled contours; the histogram of the frames at the chosen
temperature and, for a replica-exchange run, the MBAR landscape reweighted from every
temperature), ``landscape_histogram.csv``, ``landscape_mbar.csv`` and ``basins.csv``
(depth and location of the folded and unfolded basins) into ``RUN/plots`` by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from freecg_md.analysis.reports import landscape_report
from freecg_md.analysis.rundir import read_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("--out", type=Path, help="output directory (default RUN/plots)")
    parser.add_argument("--temperature-index", type=int, default=0,
                        help="ladder index of the target temperature (0: the lowest)")
    parser.add_argument("--discard", type=float, default=0.2,
                        help="fraction of frames dropped as equilibration")
    parser.add_argument("--bins", type=int, default=30, help="histogram bins per axis")
    args = parser.parse_args(argv)
    report = landscape_report(read_run(args.run), args.out or args.run / "plots",
                              args.temperature_index, args.discard, args.bins)
    for method, basins in report["basins"].items():
        for basin in basins:
            print(f"{method}: {basin['name']} basin {basin['free_energy']:.2f} kcal/mol at "
                  f"({basin['x']:.2f}, {basin['y']:.2f}) Å")
    print(f"wrote {report['png']}")


if __name__ == "__main__":
    main()
