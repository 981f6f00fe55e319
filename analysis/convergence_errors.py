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
import json
import sys
from pathlib import Path

import ase.io
import torch
from active_learning_report import errors  # this directory is on sys.path as a script
from basin_errors import named_path, parse_model

from freecg_md.io import load_model, model_fingerprint
from freecg_md.train import TrainConfig
from freecg_md.train.data import structures_from_atoms
from freecg_md.train.dataset_cache import data_files, load_training_structures

# NAME=PATH of labelled frames (an extxyz, or a folder of them) to score as the set NAME.
parse_set = named_path("--set")


def read_labelled(path: Path) -> list:
    """The frames of an extxyz file, or of every extxyz file in a folder (as training reads
    a data entry)."""
    return [atoms for file in data_files([str(path)]) for atoms in ase.io.read(file, index=":")]


def evaluation_sets(config: TrainConfig, own_md_from: int, probe: Path | None,
                    cutoff: float, training_own_md: bool = False,
                    named: list[tuple[str, Path]] = ()) -> dict[str, list]:
    """The run's held-out structures cut by origin, and the probe's conformations with
    their edges within ``cutoff`` (Å); with ``training_own_md`` also the own-MD frames of
    the training split (does the model fit what it trains on?); then each ``named`` labelled
    file under its name."""
    if not 0 < own_md_from < len(config.data):
        raise SystemExit(f"--own-md-from {own_md_from}: expected 1 to {len(config.data) - 1} "
                         f"(the config has {len(config.data)} data entries)")
    split_path = Path(config.output_dir) / "split.json"
    if not split_path.is_file():
        raise SystemExit(f"{split_path} is missing: has the run started?")
    structures, _ = load_training_structures(config)
    n_classical = sum(len(ase.io.read(path, index=":"))
                      for path in data_files(config.data[:own_md_from]))
    split = json.loads(split_path.read_text())
    test = split["test"]
    sets = {"held-out, classical MD data": [structures[i] for i in test if i < n_classical],
            "held-out, own-MD frames": [structures[i] for i in test if i >= n_classical]}
    if training_own_md:
        sets["training, own-MD frames"] = [structures[i] for i in split["train"]
                                           if i >= n_classical]
    if probe is not None:
        sets["probe, own MD at 300 K"] = structures_from_atoms(ase.io.read(probe, index=":"),
                                                               cutoff)
    for name, path in named:
        if name in sets:
            raise SystemExit(f"--set {name}: that name is taken; expected a new one")
        sets[name] = structures_from_atoms(read_labelled(path), cutoff)
    return sets


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set NAME=PATH`` (repeatable) into ``args.named_sets``."""
    parser.add_argument("--set", type=parse_set, action="append", default=[],
                        metavar="NAME=PATH", dest="named_sets",
                        help="labelled frames from outside the run's data (an extxyz, or a "
                             "folder of them), scored as the set NAME (repeatable)")


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that choose the models and sets (shared with energy_error_trend.py)."""
    parser.add_argument("config", type=Path, help="the training run's config")
    parser.add_argument("--model", type=parse_model, action="append", required=True,
                        help="NAME=PATH of a model to evaluate (repeatable)")
    parser.add_argument("--own-md-from", type=int, default=2,
                        help="index of the config's first data entry of own-MD frames")
    parser.add_argument("--probe", type=Path, default=None,
                        help="extxyz of labelled own-MD conformations")
    add_set_argument(parser)
    parser.add_argument("--training-own-md", action="store_true",
                        help="also score the own-MD frames of the training split")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--threads", type=int, default=None)


def models_and_sets(args: argparse.Namespace) -> tuple[TrainConfig, dict, dict[str, list]]:
    """The run's config, the frozen float32 models by name, and :func:`evaluation_sets`
    with the models' cutoff (one for all, or SystemExit)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    config = TrainConfig.from_json(args.config)
    models = {name: load_model(path).float().requires_grad_(False)
              for name, path in args.model}
    cutoffs = {model.cutoff for model in models.values()}
    if len(cutoffs) > 1:
        raise SystemExit(f"--model: the models' cutoffs differ ({sorted(cutoffs)} Å); "
                         "expected models of one training set-up")
    return config, models, evaluation_sets(config, args.own_md_from, args.probe,
                                           cutoffs.pop(), args.training_own_md,
                                           args.named_sets)


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
            "errors": {set_name: errors(model, structures, config)
                       for set_name, structures in sets.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
