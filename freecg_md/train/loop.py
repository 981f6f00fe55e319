"""The training loop: AdamW, warm-up, plateau schedule, EMA, early stopping, an optional second
stage with other loss weights, exact resume."""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..calculator import resolve_device, resolve_dtype
from ..io import _versions, load_model, save_model, write_text_atomic
from ..nn import FreeCG, FreeCGConfig
from .compiled import CompiledForces
from .config import MONITORED, TrainConfig
from .data import Batch, Structure, collate, split_indices, structures_fingerprint
from .dataset_cache import check_run_data, load_training_structures, record_run_data
from .finetune import starting_point
from .loss import ErrorMetrics, fit_energy_standardisation, loss_fn

LOG_FIELDS = ("epoch", "step", "lr", "train_loss", "val_loss", "val_energy_mae_per_atom_eV",
              "val_force_mae_eV_per_A", "best", "elapsed_s")
CHECKPOINT = "checkpoint.pt"
MAX_AUTO_WARMUP = 1000  # optimiser steps
# Clipping only catches the rare wild batch: the gradients of a healthy step of these models
# lie well below it, so it leaves their direction and size alone.
MAX_GRAD_NORM = 10.0
# Fields a run may resume with other values: limits, and how it runs, not what it computes.
RESUMABLE_CHANGES = ("max_epochs", "max_minutes", "early_stopping_patience", "monitor",
                     "checkpoint_every", "compile", "device", "num_threads")
# Fields that name files: compared relative to the run directory, so that a run moved or
# cloned with its data resumes.
PATH_FIELDS = ("data", "output_dir", "init_from")


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_val: float = float("inf")
    best_epoch: int = -1
    stale_epochs: int = 0
    elapsed_s: float = 0.0
    log_rows: int = 0
    epoch_loss_sum: float = 0.0
    stopped_early: bool = False
    stage: int = 1
    stage_start_step: int = 0
    # The validation loss over all structures at once (ErrorMetrics with weights), not the
    # mean of its batches' losses.
    exact_val_loss: bool = True
    # The figure best_val holds (TrainConfig.monitor); a checkpoint without it monitored
    # the loss.
    monitor: str = "loss"


def _epoch_order(n: int, seed: int, epoch: int, n_replayed: int | None = None,
                 n_earlier: int = 0) -> list[int]:
    """The training structures of one epoch, shuffled; with ``n_replayed``, only that many of
    the first ``n_earlier`` (a fine-tune's earlier data), drawn afresh each epoch, and all
    the rest."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if n_replayed is None or n_replayed >= n_earlier:
        return torch.randperm(n, generator=generator).tolist()
    replayed = torch.randperm(n_earlier, generator=generator)[:n_replayed]
    chosen = torch.cat([replayed, torch.arange(n_earlier, n)])
    return chosen[torch.randperm(len(chosen), generator=generator)].tolist()


def _evaluate(model: FreeCG, structures: list[Structure], config: TrainConfig,
              device: torch.device, dtype: torch.dtype,
              weights: tuple[float, float] | None = None,
              exact_loss: bool = True) -> dict[str, float]:
    return evaluate_errors(model, structures, config, device, dtype, weights,
                           exact_loss).summary()


def predict_in_batches(model: torch.nn.Module, structures: list[Structure], batch_size: int,
                       device: torch.device | str, dtype: torch.dtype
                       ) -> Iterator[tuple[Batch, dict[str, torch.Tensor]]]:
    """Each batch of ``batch_size`` consecutive structures, collated on ``device`` in
    ``dtype``, with the prediction of ``model`` (a FreeCG, a committee: anything with
    ``energy_and_forces``) on it: ``energy`` (B,) eV, ``forces`` (N, 3) eV/Å."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of structures, got "
                         f"{batch_size}")

    def batches() -> Iterator[tuple[Batch, dict[str, torch.Tensor]]]:
        for start in range(0, len(structures), batch_size):
            batch = collate(structures[start:start + batch_size]).to(device, dtype)
            yield batch, model.energy_and_forces(batch.numbers, batch.positions,
                                                 batch.edge_index, batch.shifts, batch.batch,
                                                 batch.num_graphs)

    return batches()


@contextlib.contextmanager
def parameters_frozen(model: torch.nn.Module) -> Iterator[None]:
    """Within the block no parameter of ``model`` asks for a gradient; each parameter's
    ``requires_grad`` is restored after it."""
    flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def evaluate_errors(model: FreeCG, structures: list[Structure], config: TrainConfig,
                    device: torch.device, dtype: torch.dtype,
                    weights: tuple[float, float] | None = None,
                    exact_loss: bool = True) -> ErrorMetrics:
    """Energy and force errors of ``model`` on ``structures``, in batches of the config's
    size; the loss with ``weights`` (energy, force), by default those of the config's last
    stage, over all structures at once (``exact_loss``) or as the mean of the batches'
    losses (see :class:`~freecg_md.train.loss.ErrorMetrics`).

    Scoring needs no parameter gradients, so it runs with the parameters frozen: the pass
    then takes the inference path (on a CPU the fused kernels, several times faster than
    the trainable path), which computes the same function to float32 rounding."""
    energy_weight, force_weight = weights or config.loss_weights()
    metrics = ErrorMetrics(weights=(energy_weight, force_weight) if exact_loss else None)
    model.eval()
    with parameters_frozen(model):
        for batch, out in predict_in_batches(model, structures, config.batch_size, device,
                                             dtype):
            loss = loss_fn(out["energy"], out["forces"], batch, energy_weight, force_weight)
            metrics.update(out["energy"], out["forces"], batch, loss.item())
    return metrics


class Trainer:
    """Owns the model, EMA copy, optimiser and schedules of one run directory."""

    def __init__(self, config: TrainConfig, structures: list[Structure],
                 split: dict[str, list[int]], species: tuple[int, ...],
                 initial_model: FreeCG | None = None, n_earlier: int = 0) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype)
        # Earlier data first, so that replay can draw from the leading training structures.
        train = sorted(split["train"])
        self.n_earlier_train = sum(1 for i in train if i < n_earlier)
        self.train_set = [structures[i] for i in train]
        self.val_set = [structures[i] for i in split["val"]]
        self.test_set = [structures[i] for i in split["test"]]
        torch.manual_seed(config.seed)
        if initial_model is not None:
            # Its energy standardisation stays: refitting it would shift every energy the
            # weights were trained to produce.
            self.model = copy.deepcopy(initial_model)
        else:
            model_config = FreeCGConfig.from_dict({"species": species, **config.model})
            self.model = FreeCG(model_config)
            self.model.set_energy_standardisation(
                *fit_energy_standardisation(self.train_set, model_config.species))
        self.model.to(device=self.device, dtype=self.dtype)
        self.ema = copy.deepcopy(self.model) if config.ema_decay > 0 else None
        self._new_optimizer(config.lr)
        self.progress = Progress(monitor=config.monitor)
        self.compiled = CompiledForces(self.model) if config.compile else None
        # What a resume changed, said when the run goes on.
        self.notes: list[str] = []

    def _new_optimizer(self, lr: float) -> None:
        """A fresh AdamW at ``lr`` and its plateau schedule."""
        config = self.config
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr,
                                           weight_decay=config.weight_decay)
        self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=config.plateau_factor, patience=config.plateau_patience,
            min_lr=config.min_lr)

    @property
    def eval_model(self) -> FreeCG:
        return self.ema if self.ema is not None else self.model

    # -- checkpoints -------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
            "optimizer": self.optimizer.state_dict(),
            "plateau": self.plateau.state_dict(),
            "progress": json.dumps(self.progress.__dict__),
        }
        tmp = self.out / f".{CHECKPOINT}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.out / CHECKPOINT)

    def load_checkpoint(self) -> None:
        state = torch.load(self.out / CHECKPOINT, map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.plateau.load_state_dict(state["plateau"])
        # A checkpoint from before the exact validation loss keeps the batch mean it was
        # selecting and stopping by, so that one run compares like with like.
        self.progress = Progress(**{"exact_val_loss": False,
                                    **json.loads(state["progress"])})
        if self.progress.monitor != self.config.monitor:
            self._switch_monitor()
        # The patience may change on resume (RESUMABLE_CHANGES): a run stopped early
        # continues under a longer one.
        self.progress.stopped_early = self._should_stop()
        _truncate_log(self.out / "log.csv", self.progress.log_rows)

    # -- one optimiser step ------------------------------------------------------------
    @property
    def n_replayed(self) -> int | None:
        """Earlier training structures per epoch (None: all of them)."""
        if self.config.replay_fraction >= 1 or not self.n_earlier_train:
            return None
        return max(1, round(self.config.replay_fraction * self.n_earlier_train))

    def epoch_order(self, epoch: int) -> list[int]:
        """Indices into ``train_set`` of one epoch's structures, in training order."""
        return _epoch_order(len(self.train_set), self.config.seed, epoch, self.n_replayed,
                            self.n_earlier_train)

    @property
    def warmup_steps(self) -> int:
        """The configured warm-up, or two epochs' optimiser steps (at most 1,000)."""
        if self.config.warmup_steps is not None:
            return self.config.warmup_steps
        per_epoch = -(-len(self.epoch_order(0)) // self.config.batch_size)
        return min(MAX_AUTO_WARMUP, 2 * per_epoch)

    @property
    def loss_weights(self) -> tuple[float, float]:
        """``(energy_weight, force_weight)`` of the stage training is in."""
        return self.config.loss_weights(self.progress.stage)

    def _set_warmup_lr(self) -> None:
        """Linear warm-up at the start of training and again at the start of stage two."""
        steps = self.progress.step - self.progress.stage_start_step
        if steps < self.warmup_steps:
            scale = (steps + 1) / self.warmup_steps
            for group in self.optimizer.param_groups:
                group["lr"] = self.config.learning_rate(self.progress.stage) * scale

    def train_step(self, batch: Batch) -> float:
        self.model.train()
        self._set_warmup_lr()
        if self.compiled is not None and self.compiled.supports(batch.edge_index.shape[1]):
            out = self.compiled.energy_and_forces(batch.numbers, batch.positions,
                                                  batch.edge_index, batch.shifts, batch.batch,
                                                  batch.num_graphs)
        else:
            out = self.model.energy_and_forces(batch.numbers, batch.positions,
                                               batch.edge_index, batch.shifts, batch.batch,
                                               batch.num_graphs, create_graph=True)
        loss = loss_fn(out["energy"], out["forces"], batch, *self.loss_weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=MAX_GRAD_NORM)
        # Before the step, so the weights stay finite: the run stops with the checkpoint
        # it last wrote, instead of training on (and checkpointing) NaN weights.
        if not (torch.isfinite(loss) and torch.isfinite(norm)):
            raise FloatingPointError(
                f"non-finite {'loss' if not torch.isfinite(loss) else 'gradient'} at "
                f"optimiser step {self.progress.step} (epoch {self.progress.epoch}, batch "
                f"{self.progress.batch_in_epoch}); the weights were not updated, and "
                f"{self.out / CHECKPOINT}, if the run has written one, holds its last good "
                "state. To go on with a smaller learning rate, start a new output_dir with "
                "init_from naming this run (a resume keeps the run's lr)")
        self.optimizer.step()
        if self.ema is not None:
            # Warm-up of the decay: early on the average would otherwise be dominated by
            # the random initial weights.
            step = self.progress.step
            decay = min(self.config.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for ema_p, p in zip(self.ema.parameters(), self.model.parameters(),
                                    strict=True):
                    ema_p.lerp_(p, 1.0 - decay)
        self.progress.step += 1
        return loss.item()

    # -- epochs --------------------------------------------------------------------------
    def run(self, show_progress: bool = True) -> bool:
        """Train until ``max_epochs``, early stopping or out of time; True unless time ran
        out (then the state is checkpointed for a resume)."""
        config, progress = self.config, self.progress
        for note in self.notes:
            if show_progress:
                tqdm.write(note)
        deadline = None
        if config.max_minutes is not None:
            deadline = time.monotonic() + 60 * config.max_minutes
        started = time.monotonic() - progress.elapsed_s
        # One bar over the epochs that stays, with the validation error; one per epoch over
        # its batches that goes when the epoch ends.
        epochs = tqdm(total=config.max_epochs, initial=progress.epoch, unit="epoch",
                      desc="training", disable=not show_progress, dynamic_ncols=True)
        while not progress.stopped_early and progress.epoch < config.max_epochs:
            if config.stage(progress.epoch) != progress.stage:
                if progress.stage == 2:
                    raise ValueError(
                        f"this run entered stage two before epoch {progress.epoch}, but the "
                        f"config's stage_two_epoch is {config.stage_two_epoch!r}; resume it "
                        "with the stage two it was trained with")
                self._enter_stage_two(show_progress)
            order = self.epoch_order(progress.epoch)
            starts = list(range(0, len(order), config.batch_size))
            bar = tqdm(starts[progress.batch_in_epoch:], disable=not show_progress,
                       desc=f"epoch {progress.epoch}", unit="batch", leave=False)
            for start in bar:
                batch = collate([self.train_set[i] for i in order[start:start + config.batch_size]])
                loss = self.train_step(batch.to(self.device, self.dtype))
                progress.epoch_loss_sum += loss
                progress.batch_in_epoch += 1
                bar.set_postfix(loss=f"{loss:.4g}")
                if config.checkpoint_every and progress.step % config.checkpoint_every == 0:
                    progress.elapsed_s = time.monotonic() - started
                    self.save_checkpoint()
                if deadline is not None and time.monotonic() > deadline:
                    progress.elapsed_s = time.monotonic() - started
                    self.save_checkpoint()
                    epochs.close()
                    return False
            self._end_epoch(progress.epoch_loss_sum / len(starts), time.monotonic() - started)
            epochs.update(1)
            epochs.set_postfix_str(f"val force MAE {self.last_val_force_mae:.4g} eV/Å, best "
                                   f"epoch {progress.best_epoch}")
        epochs.close()
        return True

    def _enter_stage_two(self, show_progress: bool) -> None:
        """Switch to stage two's loss weights and learning rate; score the best model so
        far under the new loss, so that later epochs are compared with it on equal terms.

        The optimiser starts afresh, with the warm-up again: AdamW's second moments were
        gathered under the old loss, and a parameter whose gradient was tiny there (one
        that moves the energies but hardly the forces, under a small energy weight) would
        take steps of up to ``3 lr`` all at once in the new loss's direction, every such
        parameter together: a blow-up in the first steps."""
        progress = self.progress
        progress.stage = 2
        best_path = self.out / "best_model.pt"
        best = load_model(best_path).to(device=self.device, dtype=self.dtype)
        val = _evaluate(best, self.val_set, self.config, self.device, self.dtype,
                        self.loss_weights, self.progress.exact_val_loss)
        progress.best_val, progress.stale_epochs = self.monitored(val), 0
        save_model(best, best_path, metadata={**best.metadata, "val": val,
                                              "rescored_for_stage_two": True})
        progress.stage_start_step = progress.step
        self._new_optimizer(self.config.learning_rate(2))
        self.save_checkpoint()
        if show_progress:
            energy_weight, force_weight = self.loss_weights
            tqdm.write(f"stage two from epoch {progress.epoch}: energy weight {energy_weight:g}, "
                       f"force weight {force_weight:g}, lr {self.config.learning_rate(2):g}; "
                       f"the best model (epoch {progress.best_epoch}) scores a validation "
                       f"loss of {val['loss']:.4g} under them (force MAE "
                       f"{val['force_mae_eV_per_A']:.4g} eV/Å)")

    def score_starting_point(self, run_dir: Path) -> dict[str, float]:
        """Validate the starting weights of a fine-tune and make them the best model so far
        (epoch -1): an epoch then counts as best only if it beats them, and a fine-tune
        that never does ends with the weights it started from."""
        val = _evaluate(self.eval_model, self.val_set, self.config, self.device, self.dtype,
                        self.loss_weights, self.progress.exact_val_loss)
        self.progress.best_val, self.progress.best_epoch = self.monitored(val), -1
        save_model(self.eval_model, self.out / "best_model.pt",
                   metadata={"epoch": -1, "val": val, "initialised_from": str(run_dir)})
        return val

    def monitored(self, val: dict[str, float]) -> float:
        """The figure of a validation summary that the run monitors (``config.monitor``)."""
        return val[MONITORED[self.progress.monitor]]

    def _switch_monitor(self) -> None:
        """A resume that monitors another figure: the best model so far is scored by it, and
        the stale-epoch count and the plateau schedule start afresh from that score (the
        learning rate reached stays), as at the start of stage two."""
        progress, before = self.progress, self.progress.monitor
        progress.monitor = self.config.monitor
        best_path = self.out / "best_model.pt"
        if not best_path.is_file():
            return  # no epoch has ended yet: nothing was scored by the old figure
        best = load_model(best_path).to(device=self.device, dtype=self.dtype)
        val = _evaluate(best, self.val_set, self.config, self.device, self.dtype,
                        self.loss_weights, progress.exact_val_loss)
        progress.best_val, progress.stale_epochs = self.monitored(val), 0
        self.plateau.best, self.plateau.num_bad_epochs = progress.best_val, 0
        self.plateau.cooldown_counter = 0
        save_model(best, best_path, metadata={**best.metadata, "val": val,
                                              "rescored_for_monitor": progress.monitor})
        self.save_checkpoint()
        self.notes.append(f"monitoring the validation {progress.monitor} (was {before}) from "
                          f"epoch {progress.epoch}: the best model (epoch "
                          f"{progress.best_epoch}) scores {progress.best_val:.6g}")

    def _end_epoch(self, train_loss: float, elapsed: float) -> None:
        config, progress = self.config, self.progress
        val = _evaluate(self.eval_model, self.val_set, config, self.device, self.dtype,
                        self.loss_weights, self.progress.exact_val_loss)
        self.last_val_force_mae = val["force_mae_eV_per_A"]
        figure = self.monitored(val)
        if progress.step - progress.stage_start_step >= self.warmup_steps:
            self.plateau.step(figure)
        improved = figure < progress.best_val
        if improved:
            progress.best_val, progress.best_epoch, progress.stale_epochs = (
                figure, progress.epoch, 0)
            save_model(self.eval_model, self.out / "best_model.pt",
                       metadata={"epoch": progress.epoch, "val": val})
        else:
            progress.stale_epochs += 1
        row = {"epoch": progress.epoch, "step": progress.step,
               "lr": self.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
               "val_loss": val["loss"],
               "val_energy_mae_per_atom_eV": val["energy_mae_per_atom_eV"],
               "val_force_mae_eV_per_A": val["force_mae_eV_per_A"], "best": int(improved),
               "elapsed_s": round(elapsed, 1)}
        _append_log(self.out / "log.csv", row)
        progress.log_rows += 1
        progress.epoch += 1
        progress.batch_in_epoch = 0
        progress.epoch_loss_sum = 0.0
        progress.elapsed_s = elapsed
        progress.stopped_early = self._should_stop()
        self.save_checkpoint()

    def _should_stop(self) -> bool:
        """Early stopping: ``early_stopping_patience`` stale epochs in the config's last stage
        (a stage one that stalls still hands over to the stage two the config asks for)."""
        return (self.progress.stage == self.config.stage(self.config.max_epochs - 1)
                and self.progress.stale_epochs >= self.config.early_stopping_patience)


def _append_log(path: Path, row: dict) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        handle.flush()


def _truncate_log(path: Path, rows: int) -> None:
    """Drop log rows written after the checkpoint a run resumes from. The rows kept end in
    the csv writer's CRLF, as those appended later will (text mode turned them into the
    platform's newline and left the file mixed; a file left mixed so is mended here)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        lines = [line.rstrip("\r\n") for line in handle.readlines()[: rows + 1]]
    write_text_atomic(path, "".join(line + "\r\n" for line in lines), newline="")


def _relative_paths(record: dict) -> dict:
    """A config record with its file names relative to its own ``output_dir``."""
    out = os.path.normpath(record["output_dir"])

    def relative(path: str) -> str:
        return os.path.relpath(os.path.normpath(path), out)

    record = dict(record)
    for key in PATH_FIELDS:
        value = record.get(key)
        if isinstance(value, list):
            record[key] = [relative(v) for v in value]
        elif isinstance(value, str):
            record[key] = relative(value)
    return record


def check_resumable(config: TrainConfig, recorded: Path) -> None:
    """ValueError naming each field where ``config`` differs from the run's recorded
    ``config.json`` (``recorded``), but for :data:`RESUMABLE_CHANGES`: a run resumed with
    another learning rate, batch size, loss or seed would be recorded as if it had been
    trained with the new values throughout. Fields the record lacks (written by an older
    version) are not compared."""
    if not recorded.is_file():
        return
    out = Path(config.output_dir)
    before = json.loads(recorded.read_text()).get("train", {})
    # Through JSON, as the record went, so that tuples and lists compare alike.
    now = json.loads(json.dumps(config.to_dict()))
    if "output_dir" in before:
        before, now = _relative_paths(before), _relative_paths(now)
    else:  # nothing to take the paths relative to: compared without them
        before, now = ({key: value for key, value in record.items() if key not in PATH_FIELDS}
                       for record in (before, now))
    # The model's fields as far as both know them: a field added to FreeCGConfig since
    # the run started is not a change of this run.
    before_model, now_model = before.get("model"), now.get("model")
    if isinstance(before_model, dict) and isinstance(now_model, dict):
        shared = before_model.keys() & now_model.keys()
        before["model"] = {key: before_model[key] for key in shared}
        now["model"] = {key: now_model[key] for key in shared}
    changed = [f"{key}: {before[key]!r} -> {now[key]!r}" for key in now
               if key in before and key not in RESUMABLE_CHANGES and before[key] != now[key]]
    if changed:
        raise ValueError(
            f"{out} was trained with another config ({'; '.join(changed)}); resume it with "
            f"the values it was trained with (only {', '.join(RESUMABLE_CHANGES)} may "
            "change), or start a new output_dir, with init_from to build on this run")


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train a FreeCG model as ``config`` says; returns the test metrics.

    The run directory receives ``config.json`` (with package versions), ``split.json``
    (structure indices of train/val/test), ``log.csv`` (one row per epoch),
    ``checkpoint.pt`` (exact resume), ``best_model.pt`` (EMA weights at the best
    validation figure that ``config.monitor`` names), ``model.pt`` (the final, best model)
    and ``test_metrics.json``.
    With ``resume=True`` a stopped run continues from its checkpoint, giving the same
    weights as an uninterrupted run. With ``config.init_from`` the run fine-tunes an
    earlier run's best model (see :mod:`freecg_md.train.finetune`). Returns an empty dict if
    ``max_minutes`` ran out first.
    """
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    checkpoint_exists = (out / CHECKPOINT).exists()
    if checkpoint_exists and not resume:
        raise FileExistsError(f"{out} already holds a training run; pass resume=True "
                              f"(--resume) to continue it or choose another output_dir")
    start = starting_point(config)  # sets config.model from init_from's model
    if checkpoint_exists:
        check_resumable(config, out / "config.json")
    else:
        # Rows of an attempt that never checkpointed would be logged twice.
        (out / "log.csv").unlink(missing_ok=True)
    structures, species = load_training_structures(config)
    fingerprint = structures_fingerprint(structures)
    split_path = out / "split.json"
    # Only a run that checkpointed keeps its split: without a checkpoint nothing was
    # trained, and the split is made again from this config (the same one if its data,
    # fractions and seed are unchanged; a changed seed must not keep the old split).
    if checkpoint_exists and split_path.exists():
        split = json.loads(split_path.read_text())
        check_run_data(out, len(structures), fingerprint, split, "a run cannot resume on "
                       "changed data (start a new output_dir, with init_from to build on "
                       "this one)")
    elif start is not None:
        split = start.extend_split(config.data, structures, config)
        write_text_atomic(split_path, json.dumps(split))
    else:
        split = split_indices(len(structures), config.val_fraction, config.test_fraction,
                              config.data_split_seed)
        write_text_atomic(split_path, json.dumps(split))
    write_text_atomic(out / "config.json", json.dumps(
        {"train": config.to_dict(), "versions": _versions()}, indent=2))
    # A run from before the record existed gets it at its next resume (checked by count).
    record_run_data(out, len(structures), fingerprint)
    trainer = Trainer(config, structures, split, species,
                      initial_model=start.model if start is not None else None,
                      n_earlier=start.n_structures if start is not None else 0)
    if resume and checkpoint_exists:
        trainer.load_checkpoint()
    elif start is not None:
        trainer.score_starting_point(start.run_dir)
    if not trainer.run(show_progress=progress):
        return {}
    return _finish(trainer, split)


def _finish(trainer: Trainer, split: dict[str, list[int]]) -> dict:
    """Score the best model on the test split (with the loss of the config's last stage, as
    :mod:`~freecg_md.train.export` does) and write ``test_metrics.json`` and ``model.pt``.
    Without a test split (``test_fraction=0``) the errors are None, not zeros."""
    out = trainer.out
    best = load_model(out / "best_model.pt").to(device=trainer.device, dtype=trainer.dtype)
    if trainer.test_set:
        metrics = _evaluate(best, trainer.test_set, trainer.config, trainer.device,
                            trainer.dtype)
    else:
        metrics = dict.fromkeys(ErrorMetrics().summary())
    metrics.update(n_train=len(split["train"]), n_val=len(split["val"]),
                   n_test=len(split["test"]), best_epoch=trainer.progress.best_epoch,
                   epochs=trainer.progress.epoch, training_time_s=trainer.progress.elapsed_s)
    write_text_atomic(out / "test_metrics.json", json.dumps(metrics, indent=2))
    save_model(best, out / "model.pt", metadata={
        "test_metrics": metrics, "train_config": trainer.config.to_dict(), "split": split})
    return metrics
