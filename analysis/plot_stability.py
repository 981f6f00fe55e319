"""The stability figure (largest force and longest X-H bond over time, failures marked)
redrawn from a stability run's tables:

    python analysis/plot_stability.py docs/results/stability docs/figures/stability.png

The tables are what ``freecg-md stability`` writes into its output directory and what
``studies/chignolin_stability/ship.sh`` ships: ``stability.csv``,
``stability_frames.csv.gz`` and ``stability_summary.json``.
"""

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

from freecg_md.commands.stability import redraw  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", type=Path, help="directory with the three tables")
    parser.add_argument("figure", type=Path, help="PNG to write")
    args = parser.parse_args(argv)
    try:
        redraw(args.tables, args.figure)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
