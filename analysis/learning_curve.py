"""Where training runs' validation errors are heading: a geometric approach fitted to each
run's validation force and energy errors by epoch, with the limit's standard error and the
epochs the curve needs to reach a target, and the limits of the same fit to the first
epochs only (whether the later epochs bore them out).

    python analysis/learning_curve.py studies/active_learning/run/converge_m0 \
        studies/active_learning/run/converge_ablation \
        --out docs/results/active_learning/learning_curve.json \
        --figure docs/figures/learning_curve.png

Per run (a training directory with ``log.csv`` and ``config.json``) and metric, the fit
``y(t) = limit + scale * ratio^(t - t_0)`` over epochs t from t_0 on
(:func:`~freecg_md.analysis.statistics.geometric_approach`): t_0 is ``--from-epoch`` (for
all metrics, or ``METRIC=EPOCH`` for one), by default the run's ``stage_two_epoch`` (the
loss changes there, and with it the course of the errors) where it has one and has
reached it, else epoch 0. The limit is what the run would reach if it went on as in the
fitted epochs: a learning-rate cut by the plateau schedule after the last epoch, or its
early stop, is not in it. A limit is reported only where the fitted epochs span at least
half of the fall to it (``1 - ratio^(t_last - t_0) >= 0.5``) and its standard error is
below a quarter of that fall; errors still falling at a steady pace, or too noisy, get
the reason instead. Writes JSON (non-finite numbers as null) and a figure (validation
errors by epoch, the fits continued to ``--horizon`` epochs, the targets).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from freecg_md.analysis.plots import new_figure
from freecg_md.analysis.statistics import Approach, approach_curve, geometric_approach
from freecg_md.units import MEV_PER_EV as MEV

# A limit is reported where the fitted epochs span at least this share of the fall to it,
MIN_FRACTION_SEEN = 0.5
# and its standard error is below this share of that fall.
MAX_LIMIT_ERROR = 0.25
# name: (log.csv column, factor to the reported unit, unit, default target)
METRICS = {
    "force_mae": ("val_force_mae_eV_per_A", 1.0, "eV/Å", 0.020),
    "energy_mae": ("val_energy_mae_per_atom_eV", MEV, "meV/atom", 0.5),
}


def read_log(run: Path) -> dict[str, np.ndarray]:
    """The columns of the run's ``log.csv`` that the fits read, as arrays (one value per
    epoch, in order)."""
    path = run / "log.csv"
    if not path.is_file():
        raise ValueError(f"{run}: no log.csv (expected a training run directory)")
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path}: no epoch logged yet")
    wanted = ["epoch", "lr"] + [column for column, *_ in METRICS.values()]
    missing = [name for name in wanted if name not in rows[0]]
    if missing:
        raise ValueError(f"{path}: no column {', '.join(missing)} (a training log.csv has "
                         f"{', '.join(wanted)})")
    columns = {}
    for name in wanted:
        try:
            columns[name] = np.array([float(row[name]) for row in rows])
        except (TypeError, ValueError):
            message = f"{path}: column {name} holds a value that is not a number"
            raise ValueError(message) from None
    if np.any(np.diff(columns["epoch"]) <= 0):
        raise ValueError(f"{path}: epochs out of order")
    return columns


def first_fitted_epoch(run: Path, log: dict[str, np.ndarray], asked: int | None) -> int:
    """``asked``, else the run's stage-two epoch where it has reached it, else 0."""
    if asked is not None:
        return asked
    path = run / "config.json"
    # The trainer records its TrainConfig under "train".
    config = json.loads(path.read_text()).get("train", {}) if path.is_file() else {}
    stage_two = config.get("stage_two_epoch")
    if stage_two is not None and log["epoch"].max() >= stage_two:
        return int(stage_two)
    return 0


def why_not(fit: Approach, values: np.ndarray) -> str | None:
    """None where ``fit`` determines a limit; else the reason it does not."""
    if np.ptp(values) == 0:
        return "no change over these epochs"
    if fit.fraction_seen < MIN_FRACTION_SEEN:
        return (f"the epochs span {100 * fit.fraction_seen:.0f} % of the fall to the fitted "
                f"limit (ratio {fit.ratio:.3f}), less than {100 * MIN_FRACTION_SEEN:.0f} %: "
                "still falling at a steady pace")
    if not fit.limit_error < MAX_LIMIT_ERROR * abs(fit.scale):
        return (f"the limit's standard error ({fit.limit_error:.3g}) is not below "
                f"{MAX_LIMIT_ERROR:g} of the fall to it ({abs(fit.scale):.3g})")
    return None


def finite(value: float) -> float | None:
    """``value``, or None where it is not finite (JSON has no NaN or infinity)."""
    return float(value) if np.isfinite(value) else None


def limits_so_far(epochs: np.ndarray, values: np.ndarray) -> list[list[float | None]]:
    """``[last epoch, limit, its error]`` of the fit to the first 4, 5, ... of the epochs
    (limit and error None where that fit determines none): a limit that holds as epochs are
    added is one the later epochs bore out."""
    rows = []
    for end in range(4, epochs.size + 1):
        try:
            fit = geometric_approach(epochs[:end], values[:end])
        except ValueError:
            continue
        found = why_not(fit, values[:end]) is None
        rows.append([float(epochs[end - 1]), finite(fit.limit) if found else None,
                     finite(fit.limit_error) if found else None])
    return rows


def fit_metric(epochs: np.ndarray, values: np.ndarray, target: float) -> dict[str, object]:
    """The fit's numbers for the report; the reason in place of a fit where none is made."""
    try:
        fit = geometric_approach(epochs, values)
    except ValueError as error:
        return {"fit": None, "reason": str(error)}
    fitted = {"limit": finite(fit.limit), "limit_error": finite(fit.limit_error),
              "ratio": finite(fit.ratio), "ratio_error": finite(fit.ratio_error),
              "scale": finite(fit.scale), "fraction_seen": finite(fit.fraction_seen),
              "rms_residual": finite(fit.rms_residual)}
    reason = why_not(fit, values)
    if reason is not None:
        return {"fit": None, "reason": reason, "undetermined_fit": fitted}
    steps = fit.steps_to(target)
    return {"fit": fitted, "target": target,
            "epoch_reaching_target": None if steps is None else fit.first + steps}


def parse_start(text: str) -> tuple[str | None, int]:
    """``"EPOCH"`` (all metrics) or ``"METRIC=EPOCH"``."""
    metric, _, epoch = text.rpartition("=")
    if metric and metric not in METRICS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown metric {metric!r}; expected one "
                                         f"of {', '.join(METRICS)}")
    try:
        return metric or None, int(epoch)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected EPOCH or METRIC=EPOCH with a "
                                         "whole epoch number") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="training run directories")
    parser.add_argument("--from-epoch", type=parse_start, action="append", default=[],
                        metavar="[METRIC=]EPOCH",
                        help="first epoch fitted, for all metrics or one (force_mae, "
                             "energy_mae); repeatable (default: the run's stage_two_epoch "
                             "where reached, else 0)")
    parser.add_argument("--force-target", type=float, default=METRICS["force_mae"][3],
                        help="validation force MAE target, eV/Å")
    parser.add_argument("--energy-target", type=float, default=METRICS["energy_mae"][3],
                        help="validation energy MAE target, meV/atom")
    parser.add_argument("--horizon", type=int, default=60,
                        help="last epoch the figure continues the fits to")
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--figure", type=Path, default=None, help="figure (PNG)")
    args = parser.parse_args(argv)
    targets = {"force_mae": args.force_target, "energy_mae": args.energy_target}
    try:
        logs = {run: read_log(run) for run in args.runs}
    except ValueError as error:
        print(f"learning_curve.py: {error}", file=sys.stderr)
        return 2
    starts = dict(args.from_epoch)  # None: every metric
    report: dict[str, object] = {"runs": {}}
    for run, log in logs.items():
        entry: dict[str, object] = {"epochs_logged": int(log["epoch"].max()) + 1}
        for metric, (column, factor, unit, _) in METRICS.items():
            start = first_fitted_epoch(run, log, starts.get(metric, starts.get(None)))
            chosen = log["epoch"] >= start
            if chosen.any():
                # The curve's steps count from the first logged epoch fitted.
                start = int(log["epoch"][chosen].min())
            values = log[column] * factor
            entry[metric] = {"unit": unit, "by_epoch": values.tolist(),
                             "first_fitted_epoch": start,
                             "learning_rates_fitted": sorted(
                                 {float(lr) for lr in log["lr"][chosen]}),
                             **fit_metric(log["epoch"][chosen], values[chosen],
                                          targets[metric]),
                             "limit_by_last_epoch_fitted": limits_so_far(
                                 log["epoch"][chosen], values[chosen])}
        report["runs"][run.name] = entry
        for metric in METRICS:
            fitted = entry[metric]
            if fitted["fit"] is None:
                print(f"{run.name} {metric}: no fit ({fitted['reason']})")
                continue
            fit = fitted["fit"]
            reach = fitted["epoch_reaching_target"]
            print(f"{run.name} {metric} (epochs {fitted['first_fitted_epoch']}-"
                  f"{entry['epochs_logged'] - 1}): "
                  f"limit {fit['limit']:.4g} ± {fit['limit_error']:.2g} {fitted['unit']}, "
                  f"ratio {fit['ratio']:.3f} ± {fit['ratio_error']:.2g}, target "
                  f"{fitted['target']:g} " + (f"at epoch {reach:.1f}" if reach is not None
                                              else "not reached"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    if args.figure is not None:
        plot(report, logs, targets, args.horizon, args.figure)
    return 0


def plot(report: dict, logs: dict[Path, dict[str, np.ndarray]], targets: dict[str, float],
         horizon: int, path: Path) -> None:
    figure, axes = new_figure(1, 2, figsize=(10, 4))
    for axis, (metric, (_, _, unit, _)) in zip(axes, METRICS.items(), strict=True):
        for run, log in logs.items():
            entry = report["runs"][run.name]
            values = np.array(entry[metric]["by_epoch"])
            points = axis.plot(log["epoch"], values, "o", ms=4, label=run.name)[0]
            fit = entry[metric]["fit"]
            if fit is not None:
                first = entry[metric]["first_fitted_epoch"]
                ahead = np.linspace(first, max(horizon, log["epoch"].max()), 200)
                fitted = approach_curve(ahead - first, fit["limit"], fit["scale"], fit["ratio"])
                axis.plot(ahead, fitted, "-", color=points.get_color(), lw=1)
                axis.axhspan(fit["limit"] - fit["limit_error"],
                             fit["limit"] + fit["limit_error"], color=points.get_color(),
                             alpha=0.12)
        axis.axhline(targets[metric], color="k", ls="--", lw=1, label="target")
        axis.set_xlabel("epoch")
        axis.set_ylabel(f"validation {metric.replace('_', ' ')} ({unit})")
        axis.legend(fontsize=8)
    figure.suptitle("validation errors by epoch; fitted geometric approach (lines) and its "
                    "limit ± 1 s.e. (bands)", fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120, bbox_inches="tight")


if __name__ == "__main__":
    raise SystemExit(main())
