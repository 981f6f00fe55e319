"""Reduce a chignolin run directory to its per-frame numbers, small enough to ship.

    python analysis/reduce_run.py studies/chignolin_remd/run docs/results/remd_chignolin.npz

Writes a compressed ``.npz`` (:mod:`freecg_md.analysis.reduced`): per replica and saved
frame the two distances of the landscape, the Cα RMSD to the native structure, the
potential energy, kinetic temperature, largest force and temperature index; the exchange
history; the run's config; and the fingerprint of the model (``--model``, default the
shipped one) recorded as the model that ran it. Every analysis script takes the file in
place of the run directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from freecg_md.analysis.reduced import reduce_run, save_reduced
from freecg_md.analysis.rundir import read_run
from freecg_md.io import model_fingerprint

REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("out", type=Path, help="the .npz to write")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "chignolin.pt",
                        help="the model file the run used")
    args = parser.parse_args(argv)
    try:
        reduced = reduce_run(read_run(args.run), model_fingerprint(args.model))
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = save_reduced(reduced, args.out)
    print(f"{reduced.label}: wrote {path} ({path.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
