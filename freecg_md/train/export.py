"""Export a model from a training run, measured on its held-out test split.

    python -m freecg_md.train.export configs/chignolin.json models/chignolin.pt

Takes ``best_model.pt`` of the run in the config's ``output_dir`` (the EMA weights at the
best validation figure so far, as the config's ``monitor`` names it; a run still training
may be exported at any time), or with ``--latest`` the weights of its last checkpoint (the
EMA weights where training stands, whether or not they validate better than the best so
far), evaluates it on the run's test split (``split.json``), and writes a float32 model
file whose metadata holds the test metrics, the epochs and training time behind it, the
training config, the split and the content fingerprint of the structures it splits
(refused if the data no longer match the run's record). A fine-tuned run (``init_from``)
is also scored on the test structures of the earlier and of the added data separately. The
training domain (elements, compositions, shortest distances; :mod:`freecg_md.domain`) of
the run's data goes into the metadata too. Prints the metrics as JSON. The run itself is
not touched.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import torch

from ..domain import DOMAIN_KEY, domain_from_structures, labels_provenance
from ..io import load_model, save_model
from ..nn import FreeCG
from .config import TrainConfig
from .data import structures_fingerprint
from .dataset_cache import check_run_data, data_files, load_training_structures
from .finetune import starting_point
from .loop import CHECKPOINT, evaluate_errors
from .loss import ErrorMetrics


def _training_progress(log_path: Path) -> dict[str, float]:
    """Epochs finished, best epoch and training seconds from a run's ``log.csv``."""
    if not log_path.is_file():
        raise FileNotFoundError(f"{log_path} is missing: no epoch of this run has finished")
    with open(log_path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{log_path} has no epoch yet")
    best = [row for row in rows if row["best"] in ("1", "True", "true")]
    # -1: no epoch beat the starting weights of a fine-tune, which are then the model.
    return {"epochs_finished": len(rows), "optimizer_steps": int(rows[-1]["step"]),
            "best_epoch": int(best[-1]["epoch"]) if best else -1,
            "training_time_s": float(rows[-1]["elapsed_s"])}


def latest_weights(run: Path) -> tuple[FreeCG, str, dict[str, int]]:
    """The model where a run's training stands: ``best_model.pt``'s architecture and energy
    standardisation with the last checkpoint's EMA weights (the raw weights without EMA),
    which weights of which optimiser step they are, and where in training that step lies
    (``epoch``: the epoch in progress, counted from 0; ``batch_in_epoch``: its batches
    done; ``optimizer_step``)."""
    for name in ("best_model.pt", CHECKPOINT):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} is missing: no checkpoint of this run to "
                                    f"export the latest weights from")
    model = load_model(run / "best_model.pt")
    state = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)
    model.load_state_dict(state["ema"] or state["model"])
    progress = json.loads(state["progress"])
    step = progress["step"]
    which = "EMA weights" if state["ema"] else "weights"
    where = {"epoch": progress["epoch"], "batch_in_epoch": progress["batch_in_epoch"],
             "optimizer_step": step}
    return model, f"{run / CHECKPOINT} ({which} at optimiser step {step})", where


def data_provenance(config: TrainConfig, n_structures: int) -> dict[str, object]:
    """The temperatures, reference method and net charges the run's first ``n_structures``
    frames record in their ``info`` (see :func:`freecg_md.domain.labels_provenance`): the
    tensor cache keeps none of it, so the extxyz headers are read again."""
    from ase.io import iread

    def infos():
        count = 0
        for path in data_files(config.data):
            for atoms in iread(path, index=":"):
                if count == n_structures:
                    return
                count += 1
                yield atoms.info

    return labels_provenance(infos())


def export_model(config: TrainConfig, out_path: str | Path, model_path: str | Path | None = None,
                 threads: int | None = None, latest: bool = False,
                 description: str = "") -> dict[str, object]:
    """Evaluate ``model_path`` (default: the run's ``best_model.pt``; with ``latest``, the
    weights of its last checkpoint) on the run's test split and write it to ``out_path`` in
    float32 with the metrics in its metadata, and the training domain (with
    ``description``, free text saying what the systems are)."""
    if threads:
        torch.set_num_threads(threads)
    run = Path(config.output_dir)
    if latest and model_path is not None:
        raise ValueError("model_path and latest=True both say which weights to export; "
                         "give one")
    model_path = Path(model_path) if model_path else run / "best_model.pt"
    split = json.loads((run / "split.json").read_text())
    training: dict[str, object] = {}
    start = starting_point(config)
    if start is not None:
        # The earlier run's training is part of this model's budget.
        # A model file carries its own run's record (and that run's starting point).
        earlier = (dict(start.model.metadata.get("training", {})) if start.from_model_file
                   else _training_progress(start.run_dir / "log.csv"))
        training["initialised_from"] = {"run": str(start.run_dir), **earlier}
    structures, _ = load_training_structures(config)
    # The split's indices are only the run's test structures on the data it was made on.
    fingerprint = structures_fingerprint(structures)
    check_run_data(run, len(structures), fingerprint, split, "its split would score other "
                   "structures as held out")
    test = [structures[i] for i in split["test"]]
    progress = _training_progress(run / "log.csv")
    if latest:
        model, exported_from, where = latest_weights(run)
    else:
        model, exported_from = load_model(model_path), str(model_path)
        # best_model.pt holds the weights after the best epoch (-1: a fine-tune's start);
        # another file given as model_path is the caller's to describe.
        where = ({"epoch": progress["best_epoch"]}
                 if model_path.resolve() == (run / "best_model.pt").resolve() else {})
    # Frozen: scoring needs no parameter gradients, and a frozen model takes the faster
    # inference path (see FreeCG).
    model = model.to(torch.float32).requires_grad_(False)

    def errors(part: list) -> ErrorMetrics:
        return evaluate_errors(model, part, config, torch.device("cpu"), torch.float32)

    report: dict[str, object] = {}
    if not test:
        # test_fraction 0: no errors to report (zeros would read as a perfect model).
        metrics = dict.fromkeys(ErrorMetrics().summary())
    elif start is None:
        metrics = errors(test).summary()
    else:
        # A fine-tuned model is scored on its earlier and its added data separately, since
        # the added data is usually there to fix what the earlier data missed; each test
        # structure is evaluated once and the whole test set's errors are the parts' sum.
        n_old = start.n_structures
        total = ErrorMetrics()
        for name, keep in (("earlier", lambda i: i < n_old), ("added", lambda i: i >= n_old)):
            part = [structures[i] for i in split["test"] if keep(i)]
            if part:
                part_errors = errors(part)
                total = total.merged(part_errors)
                report[f"test_metrics_{name}_data"] = {**part_errors.summary(),
                                                       "n_test": len(part)}
        metrics = total.summary()
    metrics.update(n_train=len(split["train"]), n_val=len(split["val"]), n_test=len(test))
    report = {"test_metrics": metrics, **report}
    # best_epoch stays the run's best; exported_weights says which weights this file holds
    # (with --latest, not the best epoch's).
    report["training"] = {**progress, "exported_weights": where, **training}
    # Periodic structures' shortest distances would need their images: recorded for
    # molecules only.
    molecules = [(s.numbers.numpy(), s.positions.numpy()) for s in structures
                 if s.shifts is None]
    domain = ({DOMAIN_KEY: domain_from_structures(
        molecules, description=description, **data_provenance(config, len(structures))
    ).to_dict()} if molecules else {})
    save_model(model, out_path, metadata={
        **report, "train_config": config.to_dict(), "split": split,
        "data_fingerprint": fingerprint,
        "exported_from": exported_from, **domain})
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freecg_md.train.export",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the training config (JSON) of the run")
    parser.add_argument("out", help="model file to write")
    parser.add_argument("--model", help="model file of the run to export (default "
                                        "best_model.pt in its output_dir)")
    parser.add_argument("--latest", action="store_true",
                        help="export the last checkpoint's weights instead of the best")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--description", default="",
                        help="what the training systems are, for the model's training domain")
    args = parser.parse_args(argv)
    if args.latest and args.model:
        parser.error("--model and --latest both say which weights to export; give one")
    try:
        config = TrainConfig.from_json(args.config)
    except (OSError, TypeError, ValueError) as error:  # a JSON error is a ValueError
        parser.error(f"config {args.config}: {error}")
    try:
        report = export_model(config, args.out, args.model, args.threads,
                              latest=args.latest, description=args.description)
    except (OSError, ValueError) as error:
        # A run without a finished epoch, data that no longer match its split: named.
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
