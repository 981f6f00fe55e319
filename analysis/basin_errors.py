"""Errors of FreeCG and its ablation on conformations from MD, per basin (figure 5b).

    # pick and label conformations from runs at 300 K, then evaluate and draw:
    python analysis/basin_errors.py runs/md_300K \
        --labelled docs/results/conformations_300K.extxyz.gz
    # redraw from the labelled conformations alone (no MD, no labelling):
    python analysis/basin_errors.py --labelled docs/results/conformations_300K.extxyz.gz

From every trajectory of the given runs at ``--temperature`` (a replica of a run without
exchanges, or the demultiplexed temperature of a replica-exchange run), frames at least
``--spacing`` ps apart are taken and classified as folded or unfolded by the Asp3 O - Gly7 N
and Glu5 O - Thr8 N distances; up to ``--per-basin`` of each, taken from the trajectories
in turn. Each is labelled with the reference (GFN2-xTB/ALPB(water), charge -2, the method
of the training data) and written with its basin, run and time to ``--labelled`` (extxyz;
an existing file is used as it is, so labelling happens once). Every model's energy error
(signed: a bias shapes any landscape) and force MAE are computed on all of them; per basin
their means with standard errors go to ``basin_errors_summary.csv``, every conformation to
``basin_errors.csv``, and ``basin_errors.png`` shows three examples per basin and the
per-basin means.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from report_cli import DEFAULT_MODELS, REPO, parse_model  # this folder is on sys.path as a script

from freecg_md import FreeCGCalculator
from freecg_md.analysis.conformations import (
    basin_statistics,
    errors_in_kcal,
    pick_conformations,
)
from freecg_md.analysis.plots import plot_basin_errors
from freecg_md.analysis.rundir import read_run
from freecg_md.analysis.structure import chignolin_cvs
from freecg_md.data.molecules import load_chignolin
from freecg_md.io import model_fingerprint


def run_model_fingerprint(directory: Path) -> str:
    """The fingerprint of the model that ran ``directory`` (its config.json), or ''."""
    config = directory / "config.json"
    return str(json.loads(config.read_text()).get("model_fingerprint", "")) if config.is_file() \
        else ""


def run_label(directory: Path) -> str:
    """A run's name in the tables: its path in the repository where it lies there (two
    studies' run directories share the name ``run``)."""
    directory = directory.resolve()
    return str(directory.relative_to(REPO)) if directory.is_relative_to(REPO) else directory.name


def trajectories(runs: list[Path], temperature: float) -> list[tuple[str, np.ndarray,
                                                                      np.ndarray]]:
    """(label, positions (F, N, 3) Å, time_ps (F,)) of every trajectory at ``temperature``."""
    found = []
    numbers = load_chignolin().atoms.numbers.tolist()
    for directory in runs:
        run = read_run(directory)
        # The picks are measured and labelled as chignolin's atoms, in its order.
        if [atom.element.atomic_number for atom in run.topology.atoms] != numbers:
            raise ValueError(f"{directory}: its atoms are not chignolin's ({len(numbers)} "
                             "atoms in the shipped order)")
        if np.unique(run.temperatures).size > 1 and (directory / "exchange.csv").is_file():
            k = int(np.argmin(np.abs(run.temperatures - temperature)))
            if abs(run.temperatures[k] - temperature) < 0.5:
                positions, _ = run.frames_at(k)
                found.append((f"{run_label(directory)} T{k}", positions, run.time_ps))
            continue
        for r, kelvin in enumerate(run.temperatures):
            if abs(kelvin - temperature) < 0.5:
                found.append((f"{run_label(directory)} r{r}", run.positions[r], run.time_ps))
    return found


def pick_and_label(args: argparse.Namespace) -> list[Atoms]:
    chignolin = load_chignolin()
    native = chignolin_cvs(chignolin.native_positions[None], chignolin.topology)[0]
    found = trajectories(args.runs, args.temperature)
    fingerprints = {run_label(d): run_model_fingerprint(d) for d in args.runs}
    if not found:
        raise ValueError(f"no trajectory at {args.temperature} K in {args.runs}")
    cvs = [chignolin_cvs(p, chignolin.topology) for _, p, _ in found]
    picks = pick_conformations(cvs, [t for _, _, t in found], native, args.per_basin,
                               args.spacing, start_ps=args.start, spread=args.spread)
    if args.reference == "xtb":
        from freecg_md.data.labelling import default_reference_calculator
        reference = default_reference_calculator()
    else:
        from ase.calculators.emt import EMT
        reference = EMT()
    frames = []
    for pick in picks:
        label, positions, _ = found[pick.trajectory]
        atoms = Atoms(numbers=chignolin.atoms.numbers,
                      positions=positions[pick.frame].astype(np.float64))
        atoms.info.update(charge=-2, basin=pick.basin, run=label, time_ps=pick.time_ps,
                          cv1_A=pick.cvs[0], cv2_A=pick.cvs[1])
        if fingerprints[label.rsplit(" ", 1)[0]]:  # extxyz cannot read back an empty value
            atoms.info["md_model_fingerprint"] = fingerprints[label.rsplit(" ", 1)[0]]
        atoms.calc = reference
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
        print(f"labelled {pick.basin} conformation of {label} at {pick.time_ps:.2f} ps "
              f"({pick.cvs[0]:.2f}, {pick.cvs[1]:.2f} Å)", flush=True)
    args.labelled.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(args.labelled, frames, format="extxyz")
    return frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="*", help="run directories to pick from")
    parser.add_argument("--labelled", type=Path, required=True,
                        help="extxyz of the labelled conformations (read if it exists)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "figures")
    parser.add_argument("--model", type=parse_model, action="append",
                        help="NAME=PATH (repeatable; default FreeCG and its ablation)")
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    parser.add_argument("--per-basin", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=1.0, help="ps between picks")
    parser.add_argument("--start", type=float, default=0.0,
                        help="ps: leave out frames before this time (equilibration)")
    parser.add_argument("--spread", action="store_true",
                        help="spread each trajectory's picks over all its qualifying frames "
                             "instead of taking the earliest")
    parser.add_argument("--reference", choices=["xtb", "emt"], default="xtb",
                        help="emt: a cheap stand-in that checks the plumbing only")
    args = parser.parse_args(argv)
    models = dict(args.model) if args.model else DEFAULT_MODELS
    try:
        if args.labelled.is_file():
            frames = ase.io.read(args.labelled, ":")
        elif args.runs:
            frames = pick_and_label(args)
        else:
            parser.error(f"{args.labelled} does not exist; pass run directories to pick from")
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    basins = [atoms.info["basin"] for atoms in frames]
    energy_error, force_mae = {}, {}
    fingerprints = {name: model_fingerprint(path) for name, path in models.items()}
    for name, path in models.items():
        calculator = FreeCGCalculator(str(path))
        scored = np.array([errors_in_kcal(calculator, atoms, atoms.get_potential_energy(),
                                          atoms.get_forces()) for atoms in frames])
        energy_error[name], force_mae[name] = scored[:, 0], scored[:, 1]
    summary = [s for name in models for s in basin_statistics(
        name, basins, energy_error[name], force_mae[name])]
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "basin_errors.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conformation", "basin", "run", "time_ps", "cv1_A", "cv2_A"]
                        + [f"{m}: {q}" for m in models
                           for q in ("energy_error_kcal_mol", "force_mae_kcal_mol_A")])
        for c, atoms in enumerate(frames):
            writer.writerow([c, atoms.info["basin"], atoms.info["run"],
                             f"{atoms.info['time_ps']:.3f}", f"{atoms.info['cv1_A']:.3f}",
                             f"{atoms.info['cv2_A']:.3f}"]
                            + [f"{v:.4f}" for m in models
                               for v in (energy_error[m][c], force_mae[m][c])])
    with open(args.out / "basin_errors_summary.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "basin", "n", "energy_bias_kcal_mol", "bias_error",
                         "energy_mae_kcal_mol", "energy_mae_error", "force_mae_kcal_mol_A",
                         "force_mae_error", "model_file", "model_fingerprint"])
        for s in summary:
            path = Path(models[s.model])
            writer.writerow([s.model, s.basin, s.n, *(f"{v:.4f}" for v in (
                s.bias, s.bias_error, s.energy_mae, s.energy_mae_error, s.force_mae,
                s.force_mae_error)), path.relative_to(REPO) if path.is_relative_to(REPO)
                else path, fingerprints[s.model]])
    examples = [c for basin in dict.fromkeys(basins)
                for c in [i for i, b in enumerate(basins) if b == basin][:3]]
    png = plot_basin_errors(
        [f"{basins[c]} {k % 3 + 1}" for k, c in enumerate(examples)],
        {m: e[examples] for m, e in energy_error.items()},
        {m: f[examples] for m, f in force_mae.items()}, summary,
        f"chignolin conformations from MD at {args.temperature:.0f} K, "
        f"{len(frames)} labelled with the reference, >= {args.spacing:g} ps apart",
        args.out / "basin_errors.png")
    for s in summary:
        print(f"{s.model}, {s.basin} ({s.n}): energy bias {s.bias:+.2f} ± {s.bias_error:.2f} "
              f"kcal/mol, |energy error| {s.energy_mae:.2f} ± {s.energy_mae_error:.2f}, "
              f"force MAE {s.force_mae:.3f} ± {s.force_mae_error:.3f} kcal/mol/Å")
    print(f"wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
