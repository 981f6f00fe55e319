"""``python -m freecg_md.data.label FRAMES.npz OUT_DIR``: label frames with GFN2-xTB."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("frames", help=".npz from freecg_md.data.sample")
    parser.add_argument("out_dir", help="directory for chunk_*.extxyz")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--n-workers", type=int, default=1)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="threads for tblite")
    args = parser.parse_args(argv)
    # Must happen before tblite's OpenMP runtime starts.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from .labelling import label_frames

    written = label_frames(args.frames, args.out_dir, chunk_size=args.chunk_size,
                           worker=args.worker, n_workers=args.n_workers)
    print(f"worker {args.worker}: wrote {len(written)} chunks into {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
