"""Reduce a chignolin run directory to its per-frame numbers, small enough to ship.

    freecg-md reduce studies/chignolin_remd/run docs/results/remd_chignolin.npz

Writes a compressed ``.npz`` (:mod:`freecg_md.analysis.reduced`): per replica and saved
frame the two distances of the landscape, the Cα RMSD to the native structure, the
potential energy, kinetic temperature, largest force and temperature index; the exchange
history; the run's config; and the fingerprint of the model that ran it, as the run
recorded it in ``config.json`` (a committee's members joined by ``+``; for a classical run
its force field). Every figure command takes the file in place of the run directory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freecg-md reduce",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="run directory")
    parser.add_argument("out", type=Path, help="the .npz to write")
    parser.add_argument("--model", type=Path, default=None,
                        help="the model file the run used: only for a run whose config.json "
                             "records no fingerprint; otherwise checked against it")
    parser.add_argument("--name", default=None,
                        help="the run's name in figure titles (default: the directory's "
                             "name)")
    args = parser.parse_args(argv)
    from ..analysis.reduced import reduce_run, save_reduced
    from ..analysis.rundir import read_run
    from ..io import model_fingerprint

    try:
        run = read_run(args.run)
        recorded = run.config.get("model_fingerprint", "")
        if isinstance(recorded, list):  # a committee: every member's, in order
            recorded = "+".join(recorded)
        given = model_fingerprint(args.model) if args.model is not None else ""
        if recorded and given and given != recorded:
            raise ValueError(f"--model {args.model} has fingerprint {given[:12]}...; the run "
                             f"recorded {recorded[:12]}... (another model ran it)")
        if not (recorded or given) and run.config.get("force_field"):
            # A classical run (freecg_md.classical_remd): the force field is its identity.
            recorded = f"force field: {run.config['force_field']}"
        if not (recorded or given):
            raise ValueError(f"{args.run}/config.json records no model fingerprint; pass "
                             "--model with the model file that ran it")
        reduced = reduce_run(run, recorded or given, args.name)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    path = save_reduced(reduced, args.out)
    print(f"{reduced.label}: wrote {path} ({path.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
