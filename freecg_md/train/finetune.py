"""Fine-tuning: continue a finished training run on a data set that extends its data.

The earlier run fixes three things: the starting weights (its ``best_model.pt``, the EMA
weights at its best validation figure), the model hyperparameters and energy standardisation
that come with them, and the split of the structures it already had. Keeping that split is
what keeps the test set honest: a structure the earlier run trained on must not be scored as
held out now.

The earlier run may also be a model file exported from it (a shipped model records its
training config and split in its metadata). The leading structures are checked against the
content fingerprint the earlier run recorded (its ``data.json``, or the model file's
``data_fingerprint``); for runs and files from before that record, a run directory's tensor
cache is compared energy by energy and a model file's split by count.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io import load_model
from ..nn import FreeCG
from .config import TrainConfig
from .data import Structure, load_structures, random_parts, split_size, structures_fingerprint
from .dataset_cache import DATA_RECORD

__all__ = ["StartingPoint", "starting_point"]


@dataclass
class StartingPoint:
    """What a fine-tuning run takes over from an earlier run directory.

    Attributes
    ----------
    run_dir:
        The earlier run.
    model:
        Its best model (weights, hyperparameters and energy standardisation).
    data:
        The data paths of its config, resolved.
    split:
        Its ``split.json``: structure indices of train, val and test.
    """

    run_dir: Path
    model: FreeCG
    data: list[str]
    split: dict[str, list[int]]

    @classmethod
    def read(cls, run_dir: str | Path) -> StartingPoint:
        """Read a training run directory, or a model file exported from one (such as a
        shipped model: its metadata carries the training config and the split)."""
        run_dir = Path(os.path.normpath(run_dir))
        if run_dir.is_file():
            return cls._from_model_file(run_dir)
        needed = [run_dir / name for name in ("best_model.pt", "split.json", "config.json")]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(
                f"init_from={str(run_dir)!r} is not a training run with a finished epoch: "
                f"missing {missing}")
        model = load_model(run_dir / "best_model.pt")
        train_config = json.loads((run_dir / "config.json").read_text())["train"]
        split = json.loads((run_dir / "split.json").read_text())
        return cls(run_dir, model, [_resolved(p) for p in train_config["data"]], split)

    @classmethod
    def _from_model_file(cls, path: Path) -> StartingPoint:
        model = load_model(path)
        metadata = model.metadata
        if "split" not in metadata or "train_config" not in metadata:
            raise ValueError(
                f"init_from={str(path)!r} is a model file without the split and training "
                "config of its run (metadata keys 'split', 'train_config'); fine-tune from "
                "its run directory or from a file written by freecg_md.train.export")
        split, train_config = metadata["split"], metadata["train_config"]
        return cls(path, model, [os.path.normpath(p) for p in train_config["data"]], split)

    def recorded_fingerprint(self) -> str | None:
        """The content fingerprint of the earlier run's structures
        (:func:`~freecg_md.train.data.structures_fingerprint`), from its ``data.json`` or
        its model file's metadata; None where it was not recorded."""
        if self.from_model_file:
            return self.model.metadata.get("data_fingerprint")
        record = self.run_dir / DATA_RECORD
        return json.loads(record.read_text())["fingerprint"] if record.is_file() else None

    @property
    def from_model_file(self) -> bool:
        """True when the start is a model file rather than a run directory."""
        return self.run_dir.is_file()

    @property
    def n_structures(self) -> int:
        return split_size(self.split)

    def model_config(self, requested: dict[str, Any]) -> dict[str, Any]:
        """The earlier model's hyperparameters; ``requested`` (a config's ``model``) may
        repeat them but not change them, since the weights only fit this architecture."""
        own = self.model.config.to_dict()
        for key, value in requested.items():
            if key not in own:
                raise ValueError(f"model.{key}: not a FreeCGConfig field; expected some of "
                                 f"{sorted(own)}")
            mine = own[key]
            same = (list(mine) == list(value) if isinstance(value, list | tuple)
                    else mine == value)
            if not same:
                raise ValueError(
                    f"model.{key}={value!r} differs from {mine!r} of the model in "
                    f"init_from={str(self.run_dir)!r}; fine-tuning keeps the architecture "
                    "(leave model empty or repeat its values)")
        return own

    def extend_split(self, data: list[str], structures: list[Structure], config: TrainConfig
                     ) -> dict[str, list[int]]:
        """Keep the earlier split for the leading structures and split the added ones.

        Parameters
        ----------
        data:
            This run's data paths; the earlier run's must be their first entries.
        structures:
            This run's structures; the leading ones must be the earlier run's, in order
            (checked on their energies against the earlier run's tensor cache).
        config:
            Fractions and seed for the added structures.
        """
        ours = [_resolved(p) for p in data]
        if self.from_model_file and self.recorded_fingerprint() is not None:
            # The content check below decides: the file's paths are those of the machine it
            # was exported on.
            matches = True
        elif self.from_model_file:
            # The file records its data paths relative to where it was exported: match them
            # by their trailing components.
            leading = ours[: len(self.data)]
            matches = len(leading) == len(self.data) and all(
                Path(mine).parts[-len(Path(theirs).parts):] == Path(theirs).parts
                for mine, theirs in zip(leading, self.data, strict=True))
        else:
            matches = ours[: len(self.data)] == self.data
        if not matches:
            raise ValueError(
                f"data={data!r} must start with the data of init_from={str(self.run_dir)!r} "
                f"({self.data!r}) so that its split can be kept")
        n_old = self.n_structures
        n_new = len(structures) - n_old
        if n_new < 0:
            raise ValueError(f"the data hold {len(structures)} structures, fewer than the "
                             f"{n_old} of init_from={str(self.run_dir)!r}")
        self._check_same_leading_structures(structures)
        added = random_parts(n_new, round(config.val_fraction * n_new),
                             round(config.test_fraction * n_new), config.data_split_seed,
                             offset=n_old)
        return {part: sorted(indices + added[part]) for part, indices in self.split.items()}

    def _check_same_leading_structures(self, structures: list[Structure]) -> None:
        # Indices only mean the same structures if the earlier files are unchanged: a chunk
        # added to or reordered in an earlier folder would move trained-on structures into
        # this run's validation or test set.
        n_old = self.n_structures
        recorded = self.recorded_fingerprint()
        if recorded is not None:
            if structures_fingerprint(structures[:n_old]) != recorded:
                raise ValueError(
                    f"the first {n_old} structures of data differ from those init_from="
                    f"{str(self.run_dir)!r} was split on (files changed, added, reordered or "
                    "relabelled); its split cannot be kept")
            return
        if self.from_model_file:
            return  # a file exported before the fingerprint was recorded: checked by count
        # A run from before the record: its newest tensor cache.
        caches = sorted(self.run_dir.glob("data_cache_*.pt"), key=lambda p: p.stat().st_mtime)
        if not caches:
            raise FileNotFoundError(
                f"init_from={str(self.run_dir)!r} has no data_cache_*.pt to check its "
                "structures against; fine-tune from a run made by this package")
        n_old = self.n_structures
        # The cache holds every structure of the earlier files, also where that run used
        # only the first max_structures of them.
        earlier = torch.stack([s.energy for s in load_structures(caches[-1])])[:n_old]
        current = torch.stack([s.energy for s in structures[:n_old]])
        if len(earlier) != n_old or not torch.equal(earlier, current):
            raise ValueError(
                f"the first {n_old} structures of data differ from those init_from="
                f"{str(self.run_dir)!r} was split on (files changed, added or reordered); "
                "its split cannot be kept")


def starting_point(config: TrainConfig) -> StartingPoint | None:
    """The run ``config.init_from`` names, or None; sets ``config.model`` to its model's
    hyperparameters (so the data is prepared with its cutoff)."""
    if not config.init_from:
        return None
    start = StartingPoint.read(config.init_from)
    config.model = start.model_config(config.model)
    return start


def _resolved(path: str) -> str:
    return str(Path(path).resolve())
