"""Training configuration: a dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# What `monitor` may name -> the key of the validation summary it reads.
MONITORED = {"loss": "loss", "force_mae": "force_mae_eV_per_A"}


@dataclass
class TrainConfig:
    """Everything a training run depends on; written into the run directory.

    Attributes
    ----------
    data:
        Labelled structures: extxyz files or directories of ``*.extxyz`` chunks (energy in
        eV, forces in eV/Å, as ASE writes them).
    output_dir:
        Run directory: checkpoints, logs, split, models, metrics.
    energy_key, forces_key:
        Names of the labels in the extxyz files when they are not ASE's calculator results
        (e.g. ``"REF_energy"`` in ``info`` and ``"REF_forces"`` in the per-atom arrays).
    model:
        :class:`freecg_md.FreeCGConfig` fields (``species`` defaults to the data's elements).
    energy_weight, force_weight:
        Loss weights on the per-atom energy MSE (eV²/atom²) and force MSE (eV²/Å²).
    lr, weight_decay:
        AdamW learning rate and weight decay.
    batch_size:
        Structures per optimiser step (and per evaluation batch).
    warmup_steps:
        Linear learning-rate warm-up from 0, in optimiser steps; None (the default) takes
        two epochs' steps, at most 1,000, so that a small data set is not still warming up
        when training ends.
    plateau_factor, plateau_patience, min_lr:
        ReduceLROnPlateau on the monitored validation figure (patience in epochs).
    ema_decay:
        Exponential moving average of the weights, used for validation, test and the saved
        model. 0 disables it.
    early_stopping_patience:
        Epochs without a better monitored validation figure before stopping.
    monitor:
        The validation figure that picks the best model and drives the plateau schedule
        and early stopping: ``"loss"`` (the weighted loss, squared errors of energies and
        forces together) or ``"force_mae"`` (the force MAE alone, the figure force targets
        are stated in). It may change on resume: the best model so far is then scored
        again by the new figure and the stale-epoch count and plateau schedule start
        afresh from it.
    stage_two_epoch, stage_two_energy_weight, stage_two_force_weight, stage_two_lr:
        A second stage of training from epoch ``stage_two_epoch`` on (None: one stage), with
        its own loss weights and learning rate (each None: as in stage one); typically a
        larger energy weight and a smaller rate once the forces are learnt, as MACE's
        second stage does. At the switch the best model so far is scored again under the
        new loss (its validation loss is not comparable across the switch), the stale-epoch
        count, the plateau schedule and the optimiser's moments start afresh (with the
        warm-up again), and every later validation loss, the early stopping and the test
        metrics use the new weights.
    max_epochs, max_minutes:
        Limits; a run stopped by ``max_minutes`` checkpoints and can be resumed.
    checkpoint_every:
        Also checkpoint every so many optimiser steps within an epoch (0: only at epoch ends).
    val_fraction, test_fraction:
        Share of the structures held out, split at random with ``split_seed``.
    max_structures:
        Use only this many structures (for quick tries); None uses all.
    init_from:
        Fine-tune: a finished or running training directory whose ``best_model.pt`` gives
        the starting weights, the model hyperparameters and the energy standardisation.
        Its ``data`` must be the leading entries of this config's ``data``; its
        train/val/test split is kept for those structures, so nothing it trained on enters
        this run's validation or test set, and only the structures added after them are
        split at random. It may also be a model file exported from such a run (its
        metadata holds the config and split), e.g. a shipped model.
    replay_fraction:
        With ``init_from``: the share of the earlier data's training structures that each
        epoch revisits, drawn afresh every epoch; the added structures are all visited every
        epoch. 1.0 trains on everything; a smaller share makes a fine-tune on a few new
        structures cheaper while the replayed ones keep the model from forgetting.
    compile:
        Compute each training step's energies and forces through one ``torch.compile``
        graph (:mod:`freecg_md.train.compiled`) instead of eager double backward: the same
        numbers, faster steps (``benchmarks/bench_training.py``), a few minutes of compiling
        at the first step. Needs a C++ compiler on a CPU (Triton on a GPU). Passes too large
        to keep whole, and models with self loops, stay eager. A resume compiles afresh and
        restarts the pass's checks against the reference path, so a run resumed with it
        matches an uninterrupted one to float rounding, not bit for bit.
    dtype, device, num_threads:
        Floating-point type of the weights and the data (``"float32"`` or ``"float64"``),
        where training runs (``"cpu"``, ``"cuda"``, ``"auto"``) and torch's CPU threads
        (None: torch's default).
    seed, split_seed:
        ``seed`` draws the initial weights and the order of the structures; ``split_seed``
        (None: ``seed``) the train/val/test split. Members of a committee take different
        seeds and one split_seed, so that none trains on another's test structures.
    """

    data: list[str]
    output_dir: str
    energy_key: str | None = None
    forces_key: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    energy_weight: float = 0.05
    force_weight: float = 0.95
    lr: float = 5e-4
    weight_decay: float = 0.0
    batch_size: int = 4
    warmup_steps: int | None = None
    plateau_factor: float = 0.8
    plateau_patience: int = 30
    min_lr: float = 1e-7
    ema_decay: float = 0.99
    early_stopping_patience: int = 100
    monitor: str = "loss"
    stage_two_epoch: int | None = None
    stage_two_energy_weight: float | None = None
    stage_two_force_weight: float | None = None
    stage_two_lr: float | None = None
    max_epochs: int = 1000
    max_minutes: float | None = None
    checkpoint_every: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    max_structures: int | None = None
    init_from: str | None = None
    replay_fraction: float = 1.0
    compile: bool = False
    seed: int = 0
    split_seed: int | None = None
    dtype: str = "float32"
    device: str = "cpu"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.data, str):
            self.data = [self.data]
        if not self.data:
            raise ValueError("data is empty; expected extxyz files or directories")
        self._check_types()
        checks = {
            "batch_size": (self.batch_size >= 1, ">= 1"),
            "lr": (self.lr > 0, "> 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "energy_weight": (self.energy_weight >= 0, ">= 0"),
            "force_weight": (self.force_weight >= 0, ">= 0"),
            "warmup_steps": (self.warmup_steps is None or self.warmup_steps >= 0,
                             ">= 0, or null for two epochs' steps"),
            "plateau_factor": (0 < self.plateau_factor < 1, "between 0 and 1"),
            "plateau_patience": (self.plateau_patience >= 0, ">= 0 epochs"),
            "min_lr": (self.min_lr >= 0, ">= 0"),
            "ema_decay": (0 <= self.ema_decay < 1, "0 (off) or between 0 and 1"),
            "early_stopping_patience": (self.early_stopping_patience >= 1, ">= 1 epoch"),
            "val_fraction": (0 < self.val_fraction < 1, "between 0 and 1"),
            "test_fraction": (0 <= self.test_fraction < 1, "0 or between 0 and 1"),
            "max_epochs": (self.max_epochs >= 1, ">= 1"),
            "max_minutes": (self.max_minutes is None or self.max_minutes >= 0,
                            ">= 0 (0 stops after the first step), or null for no limit"),
            "checkpoint_every": (self.checkpoint_every >= 0,
                                 ">= 0 optimiser steps (0: at epoch ends only)"),
            "max_structures": (self.max_structures is None or self.max_structures >= 3,
                               ">= 3 (train, validation, test), or null for all"),
            "replay_fraction": (0 < self.replay_fraction <= 1, "in (0, 1]"),
            "seed": (self.seed >= 0, ">= 0"),
            "split_seed": (self.split_seed is None or self.split_seed >= 0,
                           ">= 0, or null for seed"),
            "num_threads": (self.num_threads is None or self.num_threads >= 1,
                            ">= 1, or null for torch's default"),
            "dtype": (self.dtype in ("float32", "float64"), "'float32' or 'float64'"),
            "monitor": (self.monitor in MONITORED, " or ".join(map(repr, MONITORED))),
            "stage_two_epoch": (self.stage_two_epoch is None or self.stage_two_epoch >= 1,
                                ">= 1, or null for one stage"),
            "stage_two_energy_weight": (self.stage_two_energy_weight is None
                                        or self.stage_two_energy_weight >= 0,
                                        ">= 0, or null for energy_weight"),
            "stage_two_force_weight": (self.stage_two_force_weight is None
                                       or self.stage_two_force_weight >= 0,
                                       ">= 0, or null for force_weight"),
            "stage_two_lr": (self.stage_two_lr is None or self.stage_two_lr > 0,
                             "> 0, or null for lr"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"{name}={getattr(self, name)!r}: expected {expected}")
        if (self.energy_key is None) != (self.forces_key is None):
            raise ValueError(f"energy_key={self.energy_key!r}, forces_key="
                             f"{self.forces_key!r}: expected both label names or neither")
        stage_two = (self.stage_two_energy_weight, self.stage_two_force_weight,
                     self.stage_two_lr)
        if self.stage_two_epoch is None and any(v is not None for v in stage_two):
            raise ValueError("stage_two_energy_weight, stage_two_force_weight and "
                             "stage_two_lr need stage_two_epoch, the epoch stage two starts at")
        if self.stage_two_epoch is not None and all(v is None for v in stage_two):
            raise ValueError(f"stage_two_epoch={self.stage_two_epoch!r} without "
                             "stage_two_energy_weight, stage_two_force_weight or stage_two_lr: "
                             "expected at least one of them (stage two would only restart "
                             "the optimiser)")
        if self.val_fraction + self.test_fraction >= 1:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction}; "
                f"expected < 1 so that something is left to train on"
            )
        for stage in (1, 2):
            if self.loss_weights(stage) == (0, 0):
                raise ValueError(f"stage {stage}'s energy and force weights are both 0; "
                                 "nothing to fit")

    def _check_types(self) -> None:
        """TypeError naming a field whose JSON value has the wrong type (a string where a
        number belongs, a float where a count does, true where a count does)."""
        # From the annotations, so that a field added later is checked too.
        expected = {"int": ((int,), "an integer"), "float": ((int, float), "a number")}
        for spec in dataclasses.fields(self):
            kinds, words = expected.get(str(spec.type).removesuffix(" | None"), ((), ""))
            value = getattr(self, spec.name)
            if kinds and value is not None and (isinstance(value, bool)
                                                or not isinstance(value, kinds)):
                raise TypeError(f"{spec.name}={value!r}: expected {words}")
        if not isinstance(self.compile, bool):
            raise TypeError(f"compile={self.compile!r}: expected true or false")

    def stage(self, epoch: int) -> int:
        """The training stage (1 or 2) of ``epoch`` (counted from 0)."""
        return 2 if self.stage_two_epoch is not None and epoch >= self.stage_two_epoch else 1

    def loss_weights(self, stage: int | None = None) -> tuple[float, float]:
        """``(energy_weight, force_weight)`` of ``stage``; None: of the stage of the run's
        last epoch (``max_epochs - 1``), the loss its best model and test metrics are
        scored with."""
        if stage is None:
            stage = self.stage(self.max_epochs - 1)
        if stage == 1:
            return self.energy_weight, self.force_weight
        return (self.energy_weight if self.stage_two_energy_weight is None
                else self.stage_two_energy_weight,
                self.force_weight if self.stage_two_force_weight is None
                else self.stage_two_force_weight)

    def learning_rate(self, stage: int) -> float:
        """The learning rate a stage starts from (after warm-up)."""
        return self.stage_two_lr if stage == 2 and self.stage_two_lr is not None else self.lr

    @property
    def data_split_seed(self) -> int:
        """The seed of the train/val/test split."""
        return self.seed if self.split_seed is None else self.split_seed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; expected some of "
                             f"{sorted(known)}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        """Read a config file; relative data and output paths are taken from the file's
        directory."""
        path = Path(path)
        data = json.loads(path.read_text())
        base = path.resolve().parent
        data["data"] = [str(base / p) for p in ([data["data"]] if isinstance(data.get("data"), str)
                                                 else data.get("data", []))]
        for key in ("output_dir", "init_from"):
            if data.get(key):
                data[key] = str(base / data[key])
        return cls.from_dict(data)
