"""Figures of a run directory (or a reduced run, ``.npz``), with the numbers behind them.

    freecg-md plot landscape runs/remd_chignolin [--out DIR]   # verdict, landscapes, melting
    freecg-md plot remd runs/remd_chignolin                    # acceptance, replica walks
    freecg-md plot rmsd runs/langevin_chignolin [--selection ca]   # RMSD band
    freecg-md plot overlay REFERENCE RUN [RUN ...]   # runs over a reference landscape

``landscape`` assesses the run's convergence first (``convergence.json``: equilibration
detected with pymbar, decorrelated samples, round trips, kinetic temperatures, samples per
basin, the folding free energy's error) and writes ``landscape.png`` (the histogram of the
decorrelated frames at the chosen temperature and, for a replica-exchange run, the MBAR
landscape reweighted from every temperature), ``basins.csv``, ``melting.csv``,
``melting.json`` (a two-state fit's melting temperature) and ``melting.png``. Free energies
(``landscape_*.csv`` and the basins' depths) are written only for a run that meets the
criteria; otherwise the figure says why not and shows the bins the run visited. ``remd``
writes ``remd.png``, ``acceptance.csv`` and ``remd_summary.json`` (acceptance and round
trips per replica). ``rmsd`` writes ``rmsd.png`` and ``rmsd.csv`` (time, mean, standard
deviation, every trajectory). ``overlay`` draws the frames of ML runs at the reference's
lowest temperature over the landscape of a reference run (the classical REMD, ``freecg-md
classical-remd``) on the same axes and bins: ``overlay.png`` and ``overlay.json``.
Everything goes into ``RUN/plots`` (the reference's, for ``overlay``) unless ``--out`` says
otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="freecg-md plot",
                                     description=__doc__.splitlines()[0])
    figures = parser.add_subparsers(dest="figure", required=True,
                                    metavar="{landscape,remd,rmsd,overlay}")
    for name, text in (("landscape", "free-energy landscape and melting curve, with the "
                                     "convergence verdict"),
                       ("remd", "replica-exchange acceptance per pair and replica walks"),
                       ("rmsd", "RMSD to the native structure, mean with a ±1 s.d. band")):
        figure = figures.add_parser(name, help=text, description=text)
        figure.add_argument("run", type=Path, help="run directory or reduced run (.npz)")
        figure.add_argument("--out", type=Path, help="output directory (default RUN/plots, "
                                                     "or plots/ beside a .npz)")
        if name == "landscape":
            figure.add_argument("--temperature-index", type=int, default=0,
                                help="ladder index of the target temperature (0: the lowest)")
            figure.add_argument("--bins", type=int, default=30, help="histogram bins per axis")
        if name == "rmsd":
            figure.add_argument("--selection", default="ca",
                                choices=["ca", "backbone", "heavy", "all"],
                                help="atoms superposed and compared")
    overlay = figures.add_parser("overlay", help="runs drawn over a reference landscape",
                                 description="runs drawn over a reference landscape")
    overlay.add_argument("run", type=Path, help="the reference run directory or .npz")
    overlay.add_argument("others", type=Path, nargs="+", help="runs to draw over it")
    overlay.add_argument("--out", type=Path, help="output directory (default the "
                                                  "reference's plots/)")
    overlay.add_argument("--bins", type=int, default=30, help="histogram bins per axis")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..analysis.reduced import default_plot_dir, load_run
    from ..analysis.reports import (
        basin_summary,
        landscape_report,
        overlay_report,
        remd_report,
        rmsd_report,
    )

    try:
        run = load_run(args.run)
        out = args.out or default_plot_dir(args.run)
        if args.figure == "landscape":
            report = landscape_report(run, out, args.temperature_index, args.bins)
        elif args.figure == "remd":
            report = remd_report(run, out)
        elif args.figure == "overlay":
            report = overlay_report(run, [load_run(path) for path in args.others], out,
                                    bins=args.bins)
        else:
            report = rmsd_report(run, out, args.selection)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.figure == "landscape":
        print(report["verdict"])
        for method, basins in report["basins"].items():
            print(f"{method}: {basin_summary(basins)}")
        print(f"wrote {report['png']}")
    elif args.figure == "overlay":
        print(report["reference_verdict"])
        for name, numbers in report["runs"].items():
            print(f"{name}: {numbers['frames']} frames, "
                  f"{numbers['fraction_in_reference_bins']:.2f} of them in bins the "
                  "reference visited")
        print(f"wrote {report['png']}")
    elif args.figure == "remd":
        rates = ", ".join("n/a" if a is None else f"{a:.2f}" for a in report["acceptance"])
        print(f"{report['attempts']} exchange rounds; acceptance per pair {rates}; round trips "
              f"{report['round_trips']}; wrote {report['png']}")
    else:
        print(f"RMSD at the end {report['final_mean_A']:.2f} ± {report['final_std_A']:.2f} Å, "
              f"mean over the run {report['overall_mean_A']:.2f} Å; wrote {report['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
