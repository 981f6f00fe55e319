"""``python -m freecg_md.data.sample OUT.npz``: classical conformations of chignolin."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", help="output .npz")
    parser.add_argument("--frames-per-temperature", type=int)
    parser.add_argument("--frame-interval-ps", type=float)
    parser.add_argument("--temperatures", type=float, nargs="+", help="K")
    parser.add_argument("--equilibration-ps", type=float)
    parser.add_argument("--timestep-fs", type=float)
    parser.add_argument("--constrain-hydrogen-bonds", action="store_true",
                        help="constrain X-H bonds (not for ML training data; see sampling.py)")
    parser.add_argument("--hydrogen-mass-amu", type=float,
                        help="hydrogen mass repartitioning (default: natural masses)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--platform", help="OpenMM platform (default CPU)")
    parser.add_argument("--worker", type=int, default=0)
    parser.add_argument("--n-workers", type=int, default=1)
    args = parser.parse_args(argv)
    os.environ.setdefault("OPENMM_CPU_THREADS", "1")
    from .sampling import SamplingConfig, sample_conformations

    overrides = {k: v for k, v in {
        "frames_per_temperature": args.frames_per_temperature,
        "frame_interval_ps": args.frame_interval_ps,
        "temperatures": tuple(args.temperatures) if args.temperatures else None,
        "equilibration_ps": args.equilibration_ps,
        "timestep_fs": args.timestep_fs,
        "constrain_hydrogen_bonds": args.constrain_hydrogen_bonds or None,
        "hydrogen_mass_amu": args.hydrogen_mass_amu,
        "seed": args.seed,
        "platform": args.platform}.items() if v is not None}
    config = dataclasses.replace(SamplingConfig(), **overrides)
    out = sample_conformations(config, args.out, worker=args.worker, n_workers=args.n_workers)
    print(out if out else f"worker {args.worker}: its temperatures are done; others pending")
    return 0


if __name__ == "__main__":
    sys.exit(main())
