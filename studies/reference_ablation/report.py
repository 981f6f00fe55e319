"""Report the ablation of FreeCG's published choices: each variant's errors on structures
none of them trained on, with their spread over seeds, and each run's training log.

The runs trained on the first ``max_structures`` structures of the labelled set (one
shared split; frames of 300 and 350 K MD). The held-out sets are the same for every
variant: later structures from MD at those temperatures, and hotter ones. Writes
``docs/results/reference_ablation.json`` and prints a Markdown table. ``run.sh`` calls it
when every run has finished; runs not finished yet are left out and named.
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
from freecg_md.units import KCAL_MOL_PER_EV  # noqa: E402


def held_out(config: TrainConfig, config_dir: Path, stride: int) -> dict[str, list]:
    """The labelled structures after the ones the runs could draw from, by the temperature
    of the MD that made them: every 2nd of those at temperatures the runs' structures
    came from (300 and 350 K; only 350 K structures are left), and every ``stride``-th of
    the hotter ones (400-600 K, for how each variant extrapolates)."""
    from ase.io import read

    atoms = []
    for entry in config.data:
        path = (config_dir / entry).resolve()
        files = sorted(path.glob("*.extxyz*")) if path.is_dir() else [path]
        for file in files:
            atoms.extend(read(file, index=":"))
    seen = {a.info.get("temperature") for a in atoms[:config.max_structures]}
    rest = atoms[config.max_structures:]
    inside = [a for a in rest if a.info.get("temperature") in seen][::2]
    hotter = [a for a in rest if a.info.get("temperature") not in seen][::stride]
    cutoff = config.model["cutoff"]
    def band(structures: list) -> str:
        temperatures = sorted({int(a.info["temperature"]) for a in structures})
        if len(temperatures) == 1:
            return f"{temperatures[0]} K"
        return f"{temperatures[0]}-{temperatures[-1]} K"

    return {band(inside): structures_from_atoms(inside, cutoff),
            band(hotter): structures_from_atoms(hotter, cutoff)}


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
    torch.set_num_threads(2)  # run.sh calls it when the training is done
    configs = sorted((HERE / "configs").glob("*.json"))
    first = TrainConfig.from_dict(json.loads(configs[0].read_text()))
    sets = held_out(first, configs[0].parent, args.stride)
    runs = {}
    for path in configs:
        config = TrainConfig.from_dict(json.loads(path.read_text()))
        run = (path.parent / config.output_dir).resolve()
        if not (run / "test_metrics.json").exists():
            print(f"{path.stem}: not finished, left out", file=sys.stderr)
            continue
        model = load_model(run / "best_model.pt").float()
        result = {"model": model.config.to_dict(),
                  "fingerprint": model_fingerprint(run / "best_model.pt"), **training_log(run)}
        for label, structures in sets.items():
            errors = evaluate_errors(model, structures, config, torch.device("cpu"),
                                     torch.float32).summary()
            result[label] = {
                "force_mae_kcal_mol_per_A": errors["force_mae_eV_per_A"] * KCAL_MOL_PER_EV,
                "energy_mae_per_atom_kcal_mol": errors["energy_mae_per_atom_eV"] * KCAL_MOL_PER_EV}
        runs[path.stem] = result
    variants: dict[str, dict] = {}
    for name in runs:
        variant = name.rsplit("_s", 1)[0]
        variants.setdefault(variant, {"runs": []})["runs"].append(name)
    for entry in variants.values():
        for label in sets:
            entry[label] = {}
            for key in ("force_mae_kcal_mol_per_A", "energy_mae_per_atom_kcal_mol"):
                values = np.array([runs[name][label][key] for name in entry["runs"]])
                entry[label][key] = {
                    "mean": float(values.mean()),
                    "spread": float(values.std(ddof=1)) if len(values) > 1 else None,
                    "seeds": values.tolist()}
    report = {
        "what": "FreeCG's published choices against ours, one change per variant (and all "
                "of the authors' at once), the shipped model's size, equal data (the first "
                f"{first.max_structures} labelled structures, one split) and equal optimiser "
                "steps, seeds 0 and 1; errors on held-out labelled structures "
                "(GFN2-xTB/ALPB water) that no run trained on",
        "held_out_structures": {label: len(structures) for label, structures in sets.items()},
        "spread": "sample standard deviation over seeds",
        "variants": variants,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    labels = list(sets)
    print("| variant | " + " | ".join(
        f"force MAE {label} (kcal/mol/Å) | energy MAE {label} (kcal/mol/atom)"
        for label in labels) + " | steps |")
    print("| --- " * (2 * len(labels) + 2) + "|")
    for variant, entry in variants.items():
        cells = []
        for label in labels:
            for key, digits in (("force_mae_kcal_mol_per_A", 3),
                                ("energy_mae_per_atom_kcal_mol", 4)):
                value = entry[label][key]
                cells.append(f"{value['mean']:.{digits}f} ± {value['spread'] or 0:.{digits}f}")
        steps = runs[entry["runs"][0]]["steps"]
        print(f"| {variant} | " + " | ".join(cells) + f" | {steps} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
