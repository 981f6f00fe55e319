"""``python -m freecg_md.train CONFIG.json [--resume]``: train a FreeCG model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from .config import TrainConfig
from .loop import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freecg-md train", description=__doc__)
    parser.add_argument("config", help="training config (JSON); see freecg_md.train.TrainConfig")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the checkpoint in output_dir, if there is one")
    parser.add_argument("--max-minutes", type=float, help="stop (resumably) after this long")
    parser.add_argument("--max-epochs", type=int,
                        help="train to this many epochs in all (overrides the config's)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="compile each step's energies and forces, or not "
                             "(TrainConfig.compile; default: as the config says)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.from_json(args.config)
    except (OSError, TypeError, ValueError) as error:  # a JSON error is a ValueError
        parser.error(f"config {args.config}: {error}")
    overrides = {name: value for name, value in (("max_minutes", args.max_minutes),
                                                 ("max_epochs", args.max_epochs),
                                                 ("compile", args.compile))
                 if value is not None}
    try:
        # Through the constructor, so that the overrides are checked as the file's values.
        config = dataclasses.replace(config, **overrides)
    except (TypeError, ValueError) as error:
        parser.error(f"--{str(error).replace('_', '-', 1)}")
    try:
        metrics = train(config, resume=args.resume, progress=not args.no_progress)
    except (OSError, ValueError, FloatingPointError) as error:
        # Bad data, a run that cannot resume on this config or data, a loss that went
        # non-finite (the checkpoint before it is kept): the message says which.
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not metrics:
        print(f"stopped at the time limit; continue with --resume ({config.output_dir})")
        return 0
    print(training_summary(config.output_dir, metrics))
    return 0


def training_summary(output_dir: str, metrics: dict) -> str:
    """What a finished run printed: where its models are and its test metrics, labelled."""
    out = Path(output_dir)
    lines = [f"finished: {out}",
             f"  model to use:  {out / 'model.pt'} (the best weights by the monitored "
             "validation figure, with the test metrics in its metadata)",
             f"  best weights:  {out / 'best_model.pt'} (the same weights, without the test "
             "metrics)",
             "  to ship:       python -m freecg_md.train.export CONFIG OUT.pt",
             f"  test set ({metrics.get('n_test', '?')} structures):"]
    labels = {"energy_mae_eV": ("energy MAE", "eV"),
              "energy_mae_per_atom_eV": ("energy MAE per atom", "eV"),
              "force_mae_eV_per_A": ("force MAE", "eV/Å"),
              "force_rmse_eV_per_A": ("force RMSE", "eV/Å"),
              "force_mae_kcal_mol_per_A": ("force MAE", "kcal/mol/Å")}
    for key, (name, unit) in labels.items():
        if metrics.get(key) is not None:  # None: no test split
            lines.append(f"    {name:<20} {metrics[key]:.5g} {unit}")
    lines.append(f"  all metrics:   {json.dumps(metrics, sort_keys=True)}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
