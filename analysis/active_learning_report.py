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

import numpy as np
import torch
from report_cli import (  # this folder is on sys.path as a script
    exits_on_bad_input,
    load_frozen,
    parse_model,
)
from scipy.stats import spearmanr

from freecg_md.analysis.scoring import committee_points, round_sets, target_errors
from freecg_md.io import model_fingerprint
from freecg_md.train import TrainConfig


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
    with exits_on_bad_input():
        config = TrainConfig.from_json(args.config)
        sets = round_sets(config, args.probe)
        models = {name: load_frozen(path) for name, path in args.model}
    report: dict[str, object] = {"sets": {name: len(s) for name, s in sets.items()},
                                 "models": {}, "committee": None}
    for name, path in args.model:
        model = models[name]
        report["models"][name] = {"file": str(path), "fingerprint": model_fingerprint(path),
                                  **{set_name: target_errors(model, s, config)
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
