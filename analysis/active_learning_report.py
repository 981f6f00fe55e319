"""Errors of the models of an active-learning round, and how well its committee's
disagreement predicts their error.

    python analysis/active_learning_report.py configs/active/round1_m0.json \
        --model shipped=models/chignolin.pt --model m0=runs/active/round_1/round1_m0.pt ... \
        --committee runs/active/round_1/round1_m0.pt runs/active/round_1/round1_m1.pt \
        --probe docs/results/active_learning/probe_300K_v1.extxyz.gz \
        --out docs/results/active_round1.json --figure docs/figures/committee_calibration.png

Three sets of labelled conformations, none trained on by any model of the round: the
held-out test structures of the earlier data (the shipped models' test split), the held-out
test structures of the frames added this round (the models' own MD), and a fixed probe of
own-MD frames (``--probe``, an extxyz with energies and forces). Per model and set: force
MAE (eV/Å), energy MAE and mean signed energy error (bias), both per atom (meV). For the
committee (its mean is the model): per conformation, the largest per-atom force
disagreement against the largest per-atom force error, their Spearman rank correlation per
set, and the distribution of the disagreement on the probe. Writes a JSON report and a
figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import ase.io
import numpy as np
import torch
from basin_errors import parse_model  # this directory is on sys.path when run as a script
from scipy.stats import spearmanr

from freecg_md.committee import load_committee
from freecg_md.io import load_model, model_fingerprint
from freecg_md.train import TrainConfig
from freecg_md.train.data import structures_from_atoms
from freecg_md.train.dataset_cache import load_training_structures
from freecg_md.train.finetune import starting_point
from freecg_md.train.loop import evaluate_errors, predict_in_batches

MEV = 1000.0


def evaluation_sets(config: TrainConfig, probe: Path | None) -> dict[str, list]:
    """The held-out test structures of the earlier and the added data of the round's run,
    and the probe's conformations."""
    start = starting_point(config)
    if start is None:
        raise SystemExit(f"{config.output_dir}: the config has no init_from; expected a "
                         "round's fine-tune config")
    structures, _ = load_training_structures(config)
    split_path = Path(config.output_dir) / "split.json"
    if not split_path.is_file():
        raise SystemExit(f"{split_path} is missing: has the round's training started?")
    test = json.loads(split_path.read_text())["test"]
    n_old = start.n_structures
    sets = {"held-out, earlier data": [structures[i] for i in test if i < n_old],
            "held-out, added own-MD frames": [structures[i] for i in test if i >= n_old]}
    if probe is not None:
        sets["probe, own MD at 300 K"] = structures_from_atoms(
            ase.io.read(probe, index=":"), start.model.cutoff)
    return sets


def errors(model: torch.nn.Module, structures: list, config: TrainConfig) -> dict[str, float]:
    summary = evaluate_errors(model, structures, config, torch.device("cpu"),
                              torch.float32).summary()
    return {"n": len(structures),
            "force_mae_eV_per_A": summary["force_mae_eV_per_A"],
            "energy_mae_meV_per_atom": summary["energy_mae_per_atom_eV"] * MEV,
            "energy_bias_meV_per_atom": summary["energy_bias_per_atom_eV"] * MEV}


def committee_points(paths: list[Path], structures: list) -> tuple[np.ndarray, np.ndarray]:
    """Per conformation: the committee's largest per-atom force disagreement and its mean
    force's largest per-atom error, both eV/Å."""
    committee = load_committee(paths).requires_grad_(False).eval()
    spread, error = [], []
    for batch, out in predict_in_batches(committee, structures, 1, "cpu", torch.float32):
        spread.append(float(out["forces_std"].max()))
        error.append(float((out["forces"].detach() - batch.forces).norm(dim=-1).max()))
    return np.array(spread), np.array(error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="a fine-tune config of the round")
    parser.add_argument("--model", type=parse_model, action="append", default=[],
                        help="NAME=PATH of a model to evaluate (repeatable)")
    parser.add_argument("--committee", type=Path, nargs="+", default=None,
                        help="the committee's member files")
    parser.add_argument("--probe", type=Path, default=None,
                        help="extxyz of labelled own-MD conformations evaluated every round")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--figure", type=Path, default=None, help="calibration figure")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig.from_json(args.config)
    sets = evaluation_sets(config, args.probe)
    report: dict[str, object] = {"sets": {name: len(s) for name, s in sets.items()},
                                 "models": {}, "committee": None}
    for name, path in args.model:
        model = load_model(path).to(torch.float32).requires_grad_(False)
        report["models"][name] = {"file": str(path), "fingerprint": model_fingerprint(path),
                                  **{set_name: errors(model, s, config)
                                     for set_name, s in sets.items()}}
        print(name, json.dumps(report["models"][name], indent=1))
    points = {}
    if args.committee:
        committee_report: dict[str, object] = {"members": [str(p) for p in args.committee]}
        for set_name, structures in sets.items():
            spread, error = committee_points(args.committee, structures)
            points[set_name] = (spread, error)
            rho, p_value = spearmanr(spread, error)
            committee_report[set_name] = {
                "spearman_rho": float(rho), "p_value": float(p_value),
                "disagreement_quantiles_eV_per_A": {
                    q: float(np.quantile(spread, float(q))) for q in ("0.1", "0.5", "0.9")},
                "max_error_median_eV_per_A": float(np.median(error))}
        report["committee"] = committee_report
        print(json.dumps(committee_report, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.figure is not None and points:
        from freecg_md.analysis.plots import new_figure

        figure, axis = new_figure(figsize=(5.5, 4.5))
        for (set_name, (spread, error)), marker in zip(points.items(), "os^", strict=False):
            rho = report["committee"][set_name]["spearman_rho"]
            axis.scatter(spread, error, s=12, marker=marker, alpha=0.7,
                         label=f"{set_name} (n={len(spread)}, Spearman {rho:.2f})")
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("committee disagreement, max per-atom force s.d. (eV/Å)")
        axis.set_ylabel("max per-atom force error vs GFN2-xTB (eV/Å)")
        axis.set_title(f"Committee of {len(args.committee)}: disagreement against error",
                       fontsize=10)
        axis.legend(fontsize=7)
        figure.tight_layout()
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(args.figure, dpi=130)
        print(f"wrote {args.figure}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
