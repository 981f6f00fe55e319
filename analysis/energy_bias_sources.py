"""Where a model's energy bias on its own-MD frames comes from: the mean signed energy error
per atom of a training run's structures by the data entry they come from and by what sets
those frames apart from the classical ones.

    python analysis/energy_bias_sources.py configs/active/converge_m0.json \
        --model FreeCG=runs/active/snap/m0_epoch17.pt \
        --out docs/results/active_learning/energy_bias_sources_m0_epoch17.json

The frames of the models' own MD (active-learning rounds) have an energy bias the classical
ones lack, in training as held out. The model is evaluated on every own-MD frame of the run
(all splits), on the run's classical test frames and on each ``--set`` (labelled frames
from outside the run's data, such as a later model's own MD). Reported:

* per data entry of the config (each a folder of one origin and temperature range): the
  mean signed error (model minus GFN2-xTB) per atom in meV with its standard error, per
  split (own-MD entries: training, validation, test; classical entries: test only), and
  over those frames apart for frames with and without a contact below
  :data:`CONTACT_LIMIT`; and, from positions alone, how many of the entry's frames (all
  splits) have such a contact and the closest contact among them;
* per evaluated group (classical test frames, own-MD frames, each ``--set``): the same
  mean in groups of three quantities that could explain it:

  - ``contact``: the closest approach of two atoms not bonded in the native structure, as
    a multiple of the sum of their covalent radii (the first round's frames include
    hydrogens pressed onto a foreign oxygen, about 0.97-1.1);
  - ``strain``: the mean absolute reference force component (eV/Å; hot or strained
    geometries lie higher);
  - ``rg``: the mass-weighted radius of gyration (Å).

Grouping within each origin separates a quantity that explains the bias from one that
merely tells the origins apart (the own-MD group pools entries of several temperatures;
the per-entry cut at the contact limit keeps them apart). The errors are treated as those
of independent structures; the standard errors assume so. The model file's fingerprint is
recorded.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from report_cli import (  # this folder is on sys.path when run as a script
    add_set_argument,
    exits_on_bad_input,
    load_frozen,
    parse_model,
    write_report,
)

from freecg_md.analysis.scoring import (
    add_named_sets,
    closest_unbonded_contact,
    energy_errors,
    mean_reference_force,
    radii_of_gyration,
    run_structures,
)
from freecg_md.analysis.statistics import mean_and_standard_error
from freecg_md.data import load_chignolin
from freecg_md.io import model_fingerprint
from freecg_md.train import TrainConfig
from freecg_md.train.data import Structure

# Group edges of each quantity; a group needs this many frames for a mean.
EDGES = {"contact": [0.0, 1.2, 1.3, 1.4, np.inf],
         "strain": [0.0, 0.65, 0.7, 0.75, 0.8, np.inf],
         "rg": [0.0, 6.0, 6.5, 7.0, 8.0, np.inf]}
MIN_PER_GROUP = 5
# Contacts closer than this (in covalent radii) are rare in the classical data and common in
# the first rounds' frames (each report counts them: frames_with_contact_below).
CONTACT_LIMIT = 1.4


def contacts(structures: list[Structure], native: np.ndarray,
             chunk: int = 256) -> np.ndarray:
    """(S,) :func:`closest_unbonded_contact` of each structure, ``chunk`` frames at a time
    (all pairs of a frame at once: memory grows with the chunk)."""
    numbers = structures[0].numbers.numpy()
    return np.concatenate([
        closest_unbonded_contact(np.stack([s.positions.double().numpy()
                                           for s in structures[start:start + chunk]]),
                                 numbers, native)
        for start in range(0, len(structures), chunk)])


def frame_quantities(structures: list[Structure], native: np.ndarray,
                     contact: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``contact``, ``strain`` and ``rg`` (module docstring) of each structure, (S,) each;
    ``contact`` is computed unless given."""
    return {"contact": contacts(structures, native) if contact is None else contact,
            "strain": mean_reference_force(structures),
            "rg": radii_of_gyration(structures)}


def shown_path(path: str) -> str:
    """``path`` as a report records it: relative to the working directory (the repository,
    where the scripts run) where it lies below it, so the reports do not name this machine's
    folders."""
    normal = os.path.normpath(os.path.abspath(path))
    relative = os.path.relpath(normal)
    return normal if relative.startswith("..") else relative


def mean_with_error(values: np.ndarray) -> dict[str, float | int | None]:
    """n, mean and its standard error (None below two values)."""
    n = int(values.size)
    mean, error = mean_and_standard_error(values)
    return {"n": n, "mean": mean if n else None, "error": error if n > 1 else None}


def grouped(errors: np.ndarray, quantity: np.ndarray, edges: list[float]) -> list[dict]:
    """The mean error in each group ``edges[k] <= quantity < edges[k + 1]`` that holds at
    least :data:`MIN_PER_GROUP` frames."""
    rows = []
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        chosen = (quantity >= low) & (quantity < high)
        if chosen.sum() >= MIN_PER_GROUP:
            rows.append({"from": low, "to": None if np.isinf(high) else high,
                         **mean_with_error(errors[chosen])})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path, help="the training run's config")
    parser.add_argument("--model", type=parse_model, required=True,
                        help="NAME=PATH of the model to evaluate")
    parser.add_argument("--own-md-from", type=int, default=2,
                        help="index of the config's first data entry of own-MD frames")
    add_set_argument(parser)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    name, path = args.model
    with exits_on_bad_input():
        config = TrainConfig.from_json(args.config)
        run = run_structures(config, args.own_md_from)
        model = load_frozen(path)
    native = load_chignolin().native_positions
    # From positions alone, once for every structure of the run (the per-entry counts
    # below need the classical frames of every split too).
    contact = contacts(run.structures, native)
    # Every own-MD frame and the classical test frames, then each --set file.
    test = np.isin(np.arange(run.entry.size), run.split["test"])
    chosen = {"classical, test split": np.flatnonzero(test & ~run.own_md),
              "own MD, all splits": np.flatnonzero(run.own_md)}
    groups = {group: [run.structures[i] for i in indices] for group, indices in chosen.items()}
    with exits_on_bad_input():
        add_named_sets(groups, args.named_sets, model.cutoff)
    errors = {group: energy_errors(model, members) for group, members in groups.items()}
    quantities = {group: frame_quantities(members, native,
                                          contact[chosen[group]] if group in chosen else None)
                  for group, members in groups.items()}
    split_of = np.full(run.entry.size, "", dtype=object)
    for split_name, indices in run.split.items():
        split_of[indices] = split_name
    by_entry = []
    for k, folder in enumerate(config.data):
        row: dict[str, object] = {"data": shown_path(folder), "own_md": k >= args.own_md_from}
        group = "own MD, all splits" if row["own_md"] else "classical, test split"
        indices = chosen[group]
        values, in_entry = errors[group], run.entry[indices] == k
        for split_name in run.split:
            here = in_entry & (split_of[indices] == split_name)
            if here.any():
                row[split_name] = mean_with_error(values[here])
        # Every split together, cut at the closest contact the classical data reach.
        close = contact[indices] < CONTACT_LIMIT
        for label, below in (("contact_below", True), ("contact_above", False)):
            row[label] = mean_with_error(values[in_entry & (close == below)])
        every = contact[run.entry == k]
        row["frames"] = int(every.size)
        row["frames_with_contact_below"] = int((every < CONTACT_LIMIT).sum())
        row["closest_contact"] = float(every.min())
        by_entry.append(row)
    report = {"config": str(args.config), "model": name, "file": str(path),
              "fingerprint": model_fingerprint(path), "unit": "meV/atom, model minus reference",
              "contact_limit": CONTACT_LIMIT,
              "sets": {group: {"n": len(members), "bias": mean_with_error(errors[group]),
                               "frames_with_contact_below": int(
                                   (quantities[group]["contact"] < CONTACT_LIMIT).sum()),
                               "ranges": {q: [float(v.min()), float(v.max())]
                                          for q, v in quantities[group].items()}}
                       for group, members in groups.items()},
              "by_data_entry": by_entry,
              "by_quantity": {q: {group: grouped(errors[group], quantities[group][q], edges)
                                  for group in groups}
                              for q, edges in EDGES.items()}}
    write_report(report, args.out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
