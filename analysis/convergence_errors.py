"""Errors of models trained on one split, on its held-out structures by origin and on a probe
of the model's own MD: the figures of the training-to-convergence targets.

    python analysis/convergence_errors.py configs/active/converge_m0.json \
        --model FreeCG=studies/active_learning/run/converge_m0/best_model.pt \
        --model ablation=studies/active_learning/run/converge_ablation/best_model.pt \
        --probe docs/results/active_learning/probe_300K_v1.extxyz.gz \
        --set "own MD of chignolin.pt at 300 K=docs/results/conformations_300K.extxyz.gz" \
        --out errors.json

The run's test split (``split.json`` in the config's ``output_dir``; with
``--training-own-md`` also the own-MD frames of its training split) is cut by where each
structure comes from: the config's first ``--own-md-from`` data entries (the classical MD
data) and the rest (frames of the models' own MD, added by active learning); ``--probe``
and each ``--set`` add labelled conformations from outside the run's data. Per model and
set: force MAE (eV/Å), energy MAE and mean signed energy error (bias) per atom (meV), the
quantities and units of the targets (force MAE <= 0.020 eV/Å, energy MAE <= 0.5 meV/atom,
bias within ±0.1 meV/atom). Each model file's fingerprint is recorded with its figures.
Writes JSON and prints it.
"""

from __future__ import annotations

import argparse

from report_cli import (  # this folder is on sys.path when run as a script
    add_evaluation_arguments,
    models_and_sets,
    write_report,
)

from freecg_md.analysis.scoring import target_errors
from freecg_md.io import model_fingerprint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_evaluation_arguments(parser)
    args = parser.parse_args(argv)
    config, models, sets = models_and_sets(args)
    fingerprints = {name: model_fingerprint(path) for name, path in args.model}
    report = {"config": str(args.config), "sets": {name: len(s) for name, s in sets.items()},
              "models": {}}
    for name, path in args.model:
        model = models[name]
        report["models"][name] = {
            "file": str(path), "fingerprint": fingerprints[name],
            "errors": {set_name: target_errors(model, structures, config)
                       for set_name, structures in sets.items()}}
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
