"""``python -m freecg_md.data.label FRAMES.npz OUT_DIR``: label frames with GFN2-xTB."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("frames", help=".npz from freecg_md.data.sample or harvest")
    parser.add_argument("out_dir", help="directory for chunk_*.extxyz.gz")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--n-workers", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="threads for tblite")
    parser.add_argument("--charge", type=int, default=None,
                        help="total charge of the molecule, e (default -2: CLN025 chignolin "
                             "at pH 7, the shipped data's); recorded in each frame's method")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads {args.threads}: expected >= 1")
    import torch

    from . import labelling

    # tblite runs on the OpenMP runtime torch has already started (importing this package
    # loads torch), which read OMP_NUM_THREADS when it started: set the count through it.
    torch.set_num_threads(args.threads)
    charge = labelling.CHIGNOLIN_CHARGE if args.charge is None else args.charge
    try:
        written = labelling.label_frames(
            args.frames, args.out_dir,
            calculator_factory=lambda: labelling.default_reference_calculator(charge),
            chunk_size=args.chunk_size, worker=args.worker, n_workers=args.n_workers,
            method=labelling.reference_method(charge))
    except (OSError, ValueError, KeyError) as error:  # a missing file, a bad worker index...
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"worker {args.worker}: wrote {len(written)} chunks into {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
