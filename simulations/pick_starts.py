"""Pick starting conformations for REMD of chignolin, folded and unfolded, from sampled frames.

    python simulations/pick_starts.py data/chignolin/frames.npz --folded 4 --unfolded 4 \\
        --out runs/starts.extxyz
    python simulations/remd_chignolin.py --initial runs/starts.extxyz --output runs/remd_mixed

Reads frames (an ``.npz`` with ``positions`` (F, N, 3) Å as written by
``python -m freecg_md.data.sample``, or any file ASE reads), measures the paper's two
distances (Asp3 O - Gly7 N, Glu5 O - Thr8 N) and writes an extxyz whose first frames are
folded (both distances within ``--folded-radius`` of the native structure's) and whose last
frames are unfolded (farther than ``--unfolded-radius``), each set drawn at random (``--seed``)
and ordered as written, so that ``--initial`` gives the low replicas the folded starts. The
chosen frame indices and distances are printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from freecg_md.analysis.structure import chignolin_cvs
from freecg_md.data.molecules import load_chignolin


def read_positions(path: Path) -> np.ndarray:
    """(F, N, 3) Å from a sampling ``.npz`` or any trajectory ASE reads."""
    if path.suffix == ".npz":
        with np.load(path) as data:
            return np.asarray(data["positions"], dtype=float)
    return np.stack([frame.positions for frame in ase.io.read(path, ":")])


def pick(cvs: np.ndarray, native: np.ndarray, n_folded: int, n_unfolded: int,
         folded_radius: float, unfolded_radius: float, seed: int) -> list[int]:
    """Indices of ``n_folded`` frames near ``native`` in CV space, then ``n_unfolded`` far."""
    distance = np.linalg.norm(cvs - native, axis=1)
    rng = np.random.default_rng(seed)
    chosen = []
    for name, pool, count in (("folded", np.flatnonzero(distance <= folded_radius), n_folded),
                              ("unfolded", np.flatnonzero(distance > unfolded_radius),
                               n_unfolded)):
        if len(pool) < count:
            raise ValueError(f"only {len(pool)} {name} frames for --{name} {count}")
        chosen.extend(sorted(rng.choice(pool, size=count, replace=False).tolist()))
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("frames", type=Path, help="sampled frames (.npz or an ASE-readable file)")
    parser.add_argument("--folded", type=int, default=4, help="number of folded starts")
    parser.add_argument("--unfolded", type=int, default=4, help="number of unfolded starts")
    parser.add_argument("--folded-radius", type=float, default=1.0,
                        help="Å from the native point in the plane of the two distances")
    parser.add_argument("--unfolded-radius", type=float, default=4.0, help="Å, as above")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="extxyz to write")
    args = parser.parse_args(argv)

    chignolin = load_chignolin()
    positions = read_positions(args.frames)
    if positions.shape[1:] != (len(chignolin.atoms), 3):
        print(f"error: {args.frames} holds frames of {positions.shape[1]} atoms; expected "
              f"chignolin's {len(chignolin.atoms)}", file=sys.stderr)
        return 2
    native = chignolin_cvs(chignolin.atoms.positions[None], chignolin.topology)[0]
    cvs = chignolin_cvs(positions, chignolin.topology)
    try:
        chosen = pick(cvs, native, args.folded, args.unfolded, args.folded_radius,
                      args.unfolded_radius, args.seed)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    frames = [Atoms(numbers=chignolin.atoms.numbers, positions=positions[i]) for i in chosen]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.out, frames, format="extxyz")
    print(f"native distances: {native[0]:.2f}, {native[1]:.2f} Å")
    for i in chosen:
        print(f"frame {i}: {cvs[i, 0]:.2f}, {cvs[i, 1]:.2f} Å")
    print(f"wrote {len(frames)} frames to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
