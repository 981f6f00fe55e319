"""Command-line plumbing shared by the scripts of this folder: naming models and labelled
sets on the command line, loading them, and writing a JSON report.

A script run as ``python analysis/NAME.py`` has this folder on ``sys.path``, so it imports
this module as ``report_cli`` (a name no installed package takes); the scripts never import
one another. What the reports compute lives in the package
(:mod:`freecg_md.analysis.scoring` and its neighbours).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from freecg_md.analysis.scoring import held_out_sets
from freecg_md.io import load_model
from freecg_md.train import TrainConfig

REPO = Path(__file__).resolve().parent.parent
# The shipped pair the figures compare when no --model is given.
DEFAULT_MODELS = {"FreeCG": REPO / "models" / "chignolin.pt",
                  "ablation without group CG": REPO / "models" / "chignolin_visnet.pt"}


def named_path(option: str) -> Callable[[str], tuple[str, Path]]:
    """An argparse type reading ``NAME=PATH`` for ``option`` (named in its error)."""
    def parse(text: str) -> tuple[str, Path]:
        name, sep, path = text.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: expected NAME=PATH")
        return name, Path(path)

    return parse


# NAME=PATH of a model file.
parse_model = named_path("--model")
# NAME=PATH of labelled frames (an extxyz, or a folder of them) to score as the set NAME.
parse_set = named_path("--set")


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    """``--set NAME=PATH`` (repeatable) into ``args.named_sets``."""
    parser.add_argument("--set", type=parse_set, action="append", default=[],
                        metavar="NAME=PATH", dest="named_sets",
                        help="labelled frames from outside the run's data (an extxyz, or a "
                             "folder of them), scored as the set NAME (repeatable)")


def add_evaluation_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments that choose the models and the sets of :func:`models_and_sets`."""
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


def load_frozen(path: str | Path) -> torch.nn.Module:
    """A model file as the reports score it: float32, parameters frozen (the faster
    inference path)."""
    return load_model(path).float().requires_grad_(False)


def models_and_sets(args: argparse.Namespace) -> tuple[TrainConfig, dict, dict[str, list]]:
    """The run's config, the frozen models by name, and
    :func:`~freecg_md.analysis.scoring.held_out_sets` with the models' cutoff (one for all);
    SystemExit naming the problem otherwise."""
    if args.threads:
        torch.set_num_threads(args.threads)
    with exits_on_bad_input():  # a missing or bad config or model file
        config = TrainConfig.from_json(args.config)
        models = {name: load_frozen(path) for name, path in args.model}
    cutoffs = {model.cutoff for model in models.values()}
    if len(cutoffs) > 1:
        raise SystemExit(f"--model: the models' cutoffs differ ({sorted(cutoffs)} Å); "
                         "expected models of one training set-up")
    with exits_on_bad_input():
        sets = held_out_sets(config, args.own_md_from, args.probe, cutoffs.pop(),
                             args.training_own_md, args.named_sets)
    return config, models, sets


@contextmanager
def exits_on_bad_input() -> Iterator[None]:
    """Turns the error of bad input (a set name taken, a run without a split, an index out
    of range, a missing or malformed file) into SystemExit with its message, so that a
    script ends with the message and status 1 rather than a traceback."""
    try:
        yield
    except (ValueError, TypeError, OSError) as error:
        raise SystemExit(f"error: {error}") from error


def write_report(report: dict, path: Path, indent: int = 2, echo: bool = True) -> None:
    """Write ``report`` as JSON to ``path`` (creating its folder) and, with ``echo``, print
    it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=indent) + "\n")
    if echo:
        json.dump(report, sys.stdout, indent=indent)
        print()
