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
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import torch
from active_learning_report import errors  # this directory is on sys.path as a script
from basin_errors import named_path, parse_model

from freecg_md.io import load_model, model_fingerprint
from freecg_md.train import TrainConfig
from freecg_md.train.data import Structure, structures_from_atoms
from freecg_md.train.dataset_cache import data_files, load_training_structures

# NAME=PATH of labelled frames (an extxyz, or a folder of them) to score as the set NAME.
parse_set = named_path("--set")


def read_labelled(path: Path) -> list:
    """The frames of an extxyz file, or of every extxyz file in a folder (as training reads
    a data entry)."""
    return [atoms for file in data_files([str(path)]) for atoms in ase.io.read(file, index=":")]


@dataclass(frozen=True)
class RunStructures:
    """A training run's structures in the order training reads them, with the data entry
    each comes from and the run's split.

    Attributes
    ----------
    structures:
        (S,) the structures of every entry of the config's ``data``.
    entry:
        (S,) index into ``config.data`` of each structure.
    split:
        The run's ``split.json``: split name -> indices into ``structures``.
    own_md:
        (S,) whether each structure comes from an own-MD entry (index >= ``--own-md-from``).
    """

    structures: list[Structure]
    entry: np.ndarray
    split: dict[str, np.ndarray]
    own_md: np.ndarray

    def pick(self, split: str, own_md: bool) -> list[Structure]:
        """The structures of ``split`` from own-MD entries (``own_md``) or the others."""
        return [self.structures[i] for i in self.split[split] if self.own_md[i] == own_md]


def run_structures(config: TrainConfig, own_md_from: int) -> RunStructures:
    """The structures a run trained on (its cache) with their entries and split; SystemExit
    naming the problem if ``own_md_from`` is out of range, the run has no split yet, or the
    config's files no longer hold the frames the run's cache does."""
    if not 0 < own_md_from < len(config.data):
        raise SystemExit(f"--own-md-from {own_md_from}: expected 1 to {len(config.data) - 1} "
                         f"(the config has {len(config.data)} data entries)")
    split_path = Path(config.output_dir) / "split.json"
    if not split_path.is_file():
        raise SystemExit(f"{split_path} is missing: has the run started?")
    structures, _ = load_training_structures(config)
    counts = [len(read_labelled(Path(folder))) for folder in config.data]
    entry = np.repeat(np.arange(len(counts)), counts)
    if entry.size != len(structures):
        raise SystemExit(f"the data hold {entry.size} frames but the run's cache "
                         f"{len(structures)}: expected the files the run trained on")
    split = {name: np.asarray(indices, dtype=int)
             for name, indices in json.loads(split_path.read_text()).items()}
    return RunStructures(structures, entry, split, entry >= own_md_from)


def evaluation_sets(config: TrainConfig, own_md_from: int, probe: Path | None,
                    cutoff: float, training_own_md: bool = False,
                    named: list[tuple[str, Path]] = ()) -> dict[str, list]:
    """The run's held-out structures cut by origin, and the probe's conformations with
    their edges within ``cutoff`` (Å); with ``training_own_md`` also the own-MD frames of
    the training split (does the model fit what it trains on?); then each ``named`` labelled
    file under its name."""
    run = run_structures(config, own_md_from)
    sets = {"held-out, classical MD data": run.pick("test", own_md=False),
            "held-out, own-MD frames": run.pick("test", own_md=True)}
    if training_own_md:
        sets["training, own-MD frames"] = run.pick("train", own_md=True)
    if probe is not None:
        sets["probe, own MD at 300 K"] = structures_from_atoms(ase.io.read(probe, index=":"),
                                                               cutoff)
    add_named_sets(sets, named, cutoff)
    return sets


def add_named_sets(sets: dict[str, list], named: list[tuple[str, Path]],
                   cutoff: float) -> None:
    """Each ``--set`` NAME=PATH into ``sets`` as structures with edges within ``cutoff``;
    SystemExit if a name is taken."""
    for name, path in named:
        if name in sets:
            raise SystemExit(f"--set {name}: that name is taken; expected a new one")
        sets[name] = structures_from_atoms(read_labelled(path), cutoff)


def write_report(report: dict, path: Path, indent: int = 2, echo: bool = True) -> None:
    """Write ``report`` as JSON to ``path`` (creating its folder) and, with ``echo``, print
    it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=indent) + "\n")
    if echo:
        json.dump(report, sys.stdout, indent=indent)
        print()


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
    write_report(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
