"""How models' energy errors follow the compactness of chignolin and the strain of its
geometry: the signed error per atom against the radius of gyration and against the mean
reference force, on a training run's held-out structures by origin and on a probe of the
model's own MD.

    python analysis/energy_error_trend.py configs/active/converge_m0.json \
        --model FreeCG=freecg_md/models/chignolin.pt \
        --model ablation=freecg_md/models/chignolin_visnet.pt \
        --probe docs/results/active_learning/probe_300K_v1.extxyz.gz \
        --out docs/results/active_learning/energy_error_trend.json \
        --figure docs/figures/energy_error_trend.png

A model whose energy error falls as the molecule opens up ranks extended conformations too
low against compact ones, and so biases any folded/unfolded free energy it samples,
whatever its mean error. Per model and set: the mean signed energy error (model minus
reference) per atom, its least-squares slope against the mass-weighted radius of gyration
R_g (meV/atom per Å, with its standard error) and Spearman's rank correlation, and the mean
error in 0.5 Å bins of R_g; and the same trend against the mean absolute reference force
component (eV/Å), which grows as bonds and angles leave their minima (a strained or hot
geometry). The held-out structures are independent picks, so the errors are those of
independent samples. Each model file's fingerprint is recorded. Writes JSON
and a figure (error against R_g, one panel per model).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from report_cli import (  # this folder is on sys.path when run as a script
    add_evaluation_arguments,
    models_and_sets,
    write_report,
)

from freecg_md.analysis.plots import new_figure
from freecg_md.analysis.scoring import energy_errors, mean_reference_force, radii_of_gyration
from freecg_md.analysis.statistics import linear_trend, mean_and_standard_error
from freecg_md.io import model_fingerprint

BIN_WIDTH = 0.5  # Å of R_g
MIN_PER_BIN = 3


def binned_means(rg: np.ndarray, error: np.ndarray) -> list[dict[str, float]]:
    """Mean error and its standard error in ``BIN_WIDTH`` bins of R_g holding at least
    ``MIN_PER_BIN`` structures."""
    rows = []
    edges = np.arange(np.floor(rg.min() / BIN_WIDTH) * BIN_WIDTH, rg.max() + BIN_WIDTH,
                      BIN_WIDTH)
    for low in edges:
        chosen = error[(rg >= low) & (rg < low + BIN_WIDTH)]
        if chosen.size >= MIN_PER_BIN:
            bias, bias_error = mean_and_standard_error(chosen)
            rows.append({"rg_from_A": round(float(low), 2), "n": int(chosen.size),
                         "bias_meV_per_atom": bias, "error_meV_per_atom": bias_error})
    return rows


def summarise(rg: np.ndarray, force: np.ndarray, error: np.ndarray) -> dict[str, object]:
    trend = linear_trend(rg, error)
    strain = linear_trend(force, error)
    bias, bias_error = mean_and_standard_error(error)
    return {"n": trend.n, "bias_meV_per_atom": bias, "bias_error_meV_per_atom": bias_error,
            "slope_meV_per_atom_per_A": trend.slope,
            "slope_error_meV_per_atom_per_A": trend.slope_error,
            "spearman": trend.spearman, "spearman_p": trend.p_value,
            "rg_range_A": [float(rg.min()), float(rg.max())],
            "by_rg": binned_means(rg, error),
            "mean_reference_force_eV_per_A": float(force.mean()),
            "slope_vs_force_meV_per_atom_per_eV_per_A": strain.slope,
            "slope_vs_force_error": strain.slope_error,
            "spearman_vs_force": strain.spearman, "spearman_vs_force_p": strain.p_value}


def draw(path: Path, rg: dict[str, np.ndarray], errors: dict[str, dict[str, np.ndarray]],
         report: dict) -> None:
    names = list(errors)
    figure, axes = new_figure(1, len(names), figsize=(4.2 * len(names), 3.6), sharey=True,
                              layout="constrained", squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        for set_name, values in errors[name].items():
            x = rg[set_name]
            stats = report["models"][name]["sets"][set_name]
            points = ax.scatter(x, values, s=8, alpha=0.6,
                                label=f"{set_name} ({stats['slope_meV_per_atom_per_A']:+.1f} "
                                      f"± {stats['slope_error_meV_per_atom_per_A']:.1f})")
            line = np.array([x.min(), x.max()])
            ax.plot(line, values.mean() + stats["slope_meV_per_atom_per_A"] * (line - x.mean()),
                    color=points.get_facecolor()[0][:3])
        ax.axhline(0.0, color="0.5", lw=0.8)
        ax.set_title(name)
        ax.set_xlabel("radius of gyration (Å)")
        ax.legend(fontsize=6, title="set (slope, meV/atom/Å)", title_fontsize=6)
    axes[0][0].set_ylabel("energy error, model - reference (meV/atom)")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150, bbox_inches="tight")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_evaluation_arguments(parser)
    parser.add_argument("--figure", type=Path, default=None, help="PNG of error against R_g")
    args = parser.parse_args(argv)
    _, models, sets = models_and_sets(args)
    rg = {name: radii_of_gyration(structures) for name, structures in sets.items()}
    force = {name: mean_reference_force(structures) for name, structures in sets.items()}
    report: dict = {"config": str(args.config), "rg": "mass-weighted, all atoms",
                    "sets": {name: len(s) for name, s in sets.items()}, "models": {}}
    errors: dict[str, dict[str, np.ndarray]] = {}
    for name, path in args.model:
        errors[name] = {set_name: energy_errors(models[name], structures)
                        for set_name, structures in sets.items()}
        report["models"][name] = {
            "file": str(path), "fingerprint": model_fingerprint(path),
            "sets": {set_name: summarise(rg[set_name], force[set_name], values)
                     for set_name, values in errors[name].items()}}
    write_report(report, args.out, echo=False)
    if args.figure is not None:
        draw(args.figure, rg, errors, report)
    json.dump({name: {s: {k: v for k, v in d.items() if k != "by_rg"}
                      for s, d in entry["sets"].items()}
               for name, entry in report["models"].items()}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
