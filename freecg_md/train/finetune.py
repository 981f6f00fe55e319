"""Fine-tuning: continue a finished training run on a data set that extends its data.

The earlier run fixes three things: the starting weights (its ``best_model.pt``, the EMA
weights at its best validation loss), the model hyperparameters and energy standardisation
that come with them, and the split of the structures it already had. Keeping that split is
what keeps the test set honest: a structure the earlier run trained on must not be scored as
held out now.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..io import load_model
from ..nn import FreeCG
from .config import TrainConfig

__all__ = ["StartingPoint"]


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
        run_dir = Path(run_dir)
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

    @property
    def n_structures(self) -> int:
        return sum(len(indices) for indices in self.split.values())

    def model_config(self, requested: dict[str, Any]) -> dict[str, Any]:
        """The earlier model's hyperparameters; ``requested`` (a config's ``model``) may
        repeat them but not change them, since the weights only fit this architecture."""
        own = self.model.config.to_dict()
        for key, value in requested.items():
            mine = own.get(key)
            same = (list(mine) == list(value) if isinstance(value, list | tuple)
                    else mine == value)
            if not same:
                raise ValueError(
                    f"model.{key}={value!r} differs from {mine!r} of the model in "
                    f"init_from={str(self.run_dir)!r}; fine-tuning keeps the architecture "
                    "(leave model empty or repeat its values)")
        return own

    def extend_split(self, data: list[str], n_structures: int, config: TrainConfig
                     ) -> dict[str, list[int]]:
        """Keep the earlier split for the leading structures and split the added ones.

        Parameters
        ----------
        data:
            This run's data paths; the earlier run's must be their first entries.
        n_structures:
            Structures in this run's data.
        config:
            Fractions and seed for the added structures.
        """
        ours = [_resolved(p) for p in data]
        if ours[: len(self.data)] != self.data:
            raise ValueError(
                f"data={data!r} must start with the data of init_from={str(self.run_dir)!r} "
                f"({self.data!r}) so that its split can be kept")
        n_old = self.n_structures
        n_new = n_structures - n_old
        if n_new < 0:
            raise ValueError(f"the data hold {n_structures} structures, fewer than the "
                             f"{n_old} of init_from={str(self.run_dir)!r}")
        split = {part: list(indices) for part, indices in self.split.items()}
        if n_new:
            order = n_old + np.random.default_rng(config.seed).permutation(n_new)
            n_val = round(config.val_fraction * n_new)
            n_test = round(config.test_fraction * n_new)
            split["val"] += order[:n_val].tolist()
            split["test"] += order[n_val:n_val + n_test].tolist()
            split["train"] += order[n_val + n_test:].tolist()
        return {part: sorted(indices) for part, indices in split.items()}


def _resolved(path: str) -> str:
    return str(Path(path).resolve())
