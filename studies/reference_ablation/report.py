"""Report the ablation of FreeCG's published choices: each variant's errors on structures
none of them trained on, with their spread over seeds, and each run's training log.

The runs trained on the first ``max_structures`` structures of the labelled set (one
shared split); the held-out set here is every ``--stride``-th structure after them, so
it is the same for every variant. Writes ``docs/results/reference_ablation.json`` and
prints a Markdown table. Run ``run.sh``, which calls this when every run has finished.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from freecg_md.io import load_model, model_fingerprint  # noqa: E402
from freecg_md.train.config import TrainConfig  # noqa: E402
from freecg_md.train.data import structures_from_atoms  # noqa: E402
from freecg_md.train.loop import evaluate_errors  # noqa: E402

EV_TO_KCAL = 23.060548


def held_out(config: TrainConfig, config_dir: Path, stride: int) -> list:
    """Every ``stride``-th labelled structure after the ones the runs could draw from."""
    from ase.io import read

    atoms = []
    for entry in config.data:
        path = (config_dir / entry).resolve()
        files = sorted(path.glob("*.extxyz*")) if path.is_dir() else [path]
        for file in files:
            atoms.extend(read(file, index=":"))
    return structures_from_atoms(atoms[config.max_structures::stride], config.model["cutoff"])


def training_log(run: Path) -> dict:
    rows = list(csv.DictReader((run / "log.csv").open()))
    last = rows[-1]
    return {"epochs": len(rows), "steps": int(last["step"]),
            "training_time_s": float(last["elapsed_s"]),
            "val_force_mae_eV_per_A": min(float(r["val_force_mae_eV_per_A"]) for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stride", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "docs/results/reference_ablation.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    configs = sorted((HERE / "configs").glob("*.json"))
    first = TrainConfig.from_dict(json.loads(configs[0].read_text()))
    structures = held_out(first, configs[0].parent, args.stride)
    runs = {}
    for path in configs:
        config = TrainConfig.from_dict(json.loads(path.read_text()))
        run = (path.parent / config.output_dir).resolve()
        model = load_model(run / "best_model.pt").float()
        errors = evaluate_errors(model, structures, config, torch.device("cpu"),
                                 torch.float32).summary()
        runs[path.stem] = {
            "model": model.config.to_dict(),
            "fingerprint": model_fingerprint(run / "best_model.pt"),
            "force_mae_kcal_mol_per_A": errors["force_mae_eV_per_A"] * EV_TO_KCAL,
            "energy_mae_per_atom_kcal_mol": errors["energy_mae_per_atom_eV"] * EV_TO_KCAL,
            **training_log(run),
        }
    variants: dict[str, dict] = {}
    for name in runs:
        variant = name.rsplit("_s", 1)[0]
        variants.setdefault(variant, {"runs": []})["runs"].append(name)
    for entry in variants.values():
        for key in ("force_mae_kcal_mol_per_A", "energy_mae_per_atom_kcal_mol"):
            values = np.array([runs[name][key] for name in entry["runs"]])
            entry[key] = {"mean": float(values.mean()),
                          "spread": float(values.std(ddof=1)) if len(values) > 1 else None,
                          "seeds": values.tolist()}
    report = {
        "what": "FreeCG's published choices against ours, one change per variant, equal "
                "data and optimiser steps, seeds 0 and 1; errors on held-out labelled "
                "structures (GFN2-xTB/ALPB water) that no run trained on",
        "held_out_structures": len(structures),
        "spread": "sample standard deviation over seeds",
        "variants": variants,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print("| variant | force MAE (kcal/mol/Å) | energy MAE (kcal/mol/atom) |")
    print("| --- | --- | --- |")
    for variant, entry in variants.items():
        force, energy = entry["force_mae_kcal_mol_per_A"], entry["energy_mae_per_atom_kcal_mol"]
        print(f"| {variant} | {force['mean']:.3f} ± {force['spread'] or 0:.3f} "
              f"| {energy['mean']:.4f} ± {energy['spread'] or 0:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
