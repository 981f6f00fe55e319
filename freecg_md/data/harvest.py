"""Frames from the model's own MD, gathered for labelling (the active-learning pool).

A run directory of :func:`freecg_md.md.run_replicas` holds every replica's trajectory. The
frames worth labelling are those far enough apart in time to be nearly independent: frames
a few femtoseconds apart carry the same information twice and cost a reference calculation
each. :func:`harvest_frames` takes every replica's frames at a fixed spacing (after an
optional equilibration cut) from one or more run directories and writes them in the form
:func:`freecg_md.data.labelling.label_frames` reads, with where each frame came from.
:func:`committee_disagreement` scores them with a committee of models and
:func:`select_frames` keeps those the committee disagrees on most.

    freecg-md harvest RUN_DIR [RUN_DIR ...] --out pool.npz --spacing-ps 0.25 \
        [--committee m0.pt m1.pt --select 200]
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["committee_disagreement", "harvest_frames", "main", "save_harvest",
           "select_frames"]


def harvest_frames(run_dirs: Sequence[str | os.PathLike], spacing_ps: float,
                   discard_ps: float = 0.0) -> dict[str, np.ndarray]:
    """Frames of every replica of ``run_dirs``, ``spacing_ps`` apart.

    Parameters
    ----------
    run_dirs:
        Run directories (each with ``config.json``, ``frames.csv``, ``log.csv``, DCDs).
    spacing_ps:
        ps, the least time between two frames taken from one replica; rounded up to a
        whole number of saved frames.
    discard_ps:
        ps, frames before this time are skipped (equilibration).

    Returns
    -------
    dict of numpy arrays
        ``positions`` (n, N, 3) float32 Å; ``numbers`` (N,); ``temperature`` (n,) K, the
        bath temperature the frame was simulated at; ``time_ps`` (n,); ``replica`` (n,);
        ``run`` (n,) index into ``runs`` (the directories as given); ``energy_model`` (n,)
        eV, the model's potential energy logged with the frame.

    Raises
    ------
    ValueError
        ``spacing_ps`` not positive, ``discard_ps`` negative, no run directories, runs of
        different molecules, or no frame left.
    """
    from ..analysis.rundir import read_run

    if not np.isfinite(spacing_ps) or spacing_ps <= 0:
        raise ValueError(f"spacing_ps={spacing_ps}: expected a positive time in ps")
    if not np.isfinite(discard_ps) or discard_ps < 0:
        raise ValueError(f"discard_ps={discard_ps}: expected a time >= 0 in ps")
    if not run_dirs:
        raise ValueError("run_dirs is empty: expected at least one run directory")
    parts: dict[str, list[np.ndarray]] = {key: [] for key in (
        "positions", "temperature", "time_ps", "replica", "run", "energy_model")}
    numbers = None
    for index, directory in enumerate(run_dirs):
        run = read_run(directory)
        run_numbers = np.array([atom.element.atomic_number for atom in run.topology.atoms])
        if numbers is None:
            numbers = run_numbers
        elif not np.array_equal(numbers, run_numbers):
            raise ValueError(f"run_dirs[{index}]={str(directory)!r} holds another molecule "
                             "than run_dirs[0]; harvest one molecule at a time")
        if run.n_frames == 0:
            continue
        interval = float(np.median(np.diff(run.time_ps))) if run.n_frames > 1 else spacing_ps
        stride = max(1, int(np.ceil(spacing_ps / interval - 1e-9)))
        kept = np.flatnonzero(run.time_ps >= discard_ps)[::stride]
        bath = run.sampled_temperatures()
        for replica in range(run.n_replicas):
            parts["positions"].append(run.positions[replica, kept])
            parts["temperature"].append(bath[kept, replica])
            parts["time_ps"].append(run.time_ps[kept])
            parts["replica"].append(np.full(kept.size, replica))
            parts["run"].append(np.full(kept.size, index))
            parts["energy_model"].append(run.energies[kept, replica])
    if not parts["positions"] or sum(len(p) for p in parts["positions"]) == 0:
        raise ValueError(f"no frames at or after discard_ps={discard_ps} in {list(run_dirs)}")
    out = {key: np.concatenate(value) for key, value in parts.items()}
    out["numbers"] = numbers
    out["runs"] = np.array([str(d) for d in run_dirs])
    return out


def save_harvest(frames: dict[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write :func:`harvest_frames`' output as a compressed ``.npz`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, **frames)
    os.replace(tmp, path)
    return path


def committee_disagreement(frames: dict[str, np.ndarray], models: Sequence[str | os.PathLike],
                           progress: bool = True) -> np.ndarray:
    """(n,) eV/Å, the committee's largest per-atom force disagreement on every frame (see
    :mod:`freecg_md.committee`)."""
    from tqdm.auto import tqdm

    from ..committee import load_committee
    from ..md.potentials import FreeCGPotential

    potential = FreeCGPotential(load_committee(models), frames["numbers"], workers=1)
    spread = np.empty(len(frames["positions"]))
    for index in tqdm(range(len(spread)), disable=not progress, unit="frame",
                      desc="committee disagreement"):
        potential.evaluate(torch_positions(frames["positions"][index]))
        spread[index] = float(potential.force_disagreement[0])
    return spread


def torch_positions(positions: np.ndarray):  # noqa: ANN201 - torch imported lazily
    """(N, 3) Å -> a (1, N, 3) float64 tensor, the engines' input."""
    import torch

    return torch.as_tensor(np.asarray(positions, dtype=np.float64))[None]


def select_frames(frames: dict[str, np.ndarray], disagreement: np.ndarray, n: int
                  ) -> dict[str, np.ndarray]:
    """The ``n`` frames with the largest ``disagreement`` (all of them if fewer), in their
    original order, with ``disagreement`` added to what each frame carries."""
    disagreement = np.asarray(disagreement, dtype=np.float64)
    count = len(frames["positions"])
    if disagreement.shape != (count,):
        raise ValueError(f"disagreement has shape {disagreement.shape}; expected ({count},), "
                         "one value per frame")
    if not np.all(np.isfinite(disagreement)):
        raise ValueError("disagreement has NaN or infinite values")
    if n < 1:
        raise ValueError(f"n={n}: expected at least 1 frame to select")
    keep = np.sort(np.argsort(-disagreement, kind="stable")[:n])
    out = {key: (value[keep] if key not in ("numbers", "runs") else value)
           for key, value in frames.items()}
    out["disagreement"] = disagreement[keep]
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="freecg-md harvest", description=(
        "Gather frames of MD run directories for labelling (an .npz that freecg-md label "
        "reads), optionally keeping those a committee disagrees on most."))
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--out", required=True, help=".npz to write")
    parser.add_argument("--spacing-ps", type=float, default=0.25,
                        help="least time between two frames of one replica, ps")
    parser.add_argument("--discard-ps", type=float, default=0.0,
                        help="skip frames before this time, ps")
    parser.add_argument("--committee", nargs="+", default=None,
                        help="model files of a committee to score the frames with")
    parser.add_argument("--select", type=int, default=None,
                        help="keep this many frames, those of largest disagreement")
    args = parser.parse_args(argv)
    if args.select is not None and not args.committee:
        parser.error("--select needs --committee (the models whose disagreement ranks frames)")
    # Checked before the committee scores every frame, which can take hours.
    if args.select is not None and args.select < 1:
        parser.error(f"--select {args.select}: expected >= 1 frame")
    try:
        frames = harvest_frames(args.runs, args.spacing_ps, args.discard_ps)
        message = f"{len(frames['positions'])} frames"
        if args.committee:
            spread = committee_disagreement(frames, args.committee)
            frames["disagreement"] = spread
            if args.select is not None:
                frames = select_frames(frames, spread, args.select)
                message += (f", kept the {len(frames['positions'])} of largest committee "
                            f"disagreement ({frames['disagreement'].min():.3g}-"
                            f"{frames['disagreement'].max():.3g} eV/Å)")
    except (OSError, ValueError) as error:  # a missing run, a run without frames...
        print(f"error: {error}", file=sys.stderr)
        return 2
    save_harvest(frames, args.out)
    print(f"{message} -> {args.out}")
    return 0
