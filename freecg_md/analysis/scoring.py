"""Scoring model files on labelled structures: the errors the accuracy targets are stated
in, the sets a training run's structures fall into, and the per-structure quantities the
reports group errors by.

The targets (force MAE <= 0.020 eV/Å, energy MAE <= 0.5 meV/atom, mean signed energy
error within ±0.1 meV/atom) are figures over a set of structures ``s`` with ``N_s`` atoms:

    force MAE   = mean over every force component of |F_model - F_ref|          (eV/Å)
    energy MAE  = mean_s |E_model,s - E_ref,s| / N_s                           (meV/atom)
    bias        = mean_s (E_model,s - E_ref,s) / N_s                           (meV/atom)

computed by the training code's own :func:`freecg_md.train.loop.evaluate_errors`, so a
report and a training log agree. Structures are :class:`freecg_md.train.data.Structure`
(their reference energy and forces attached); models are FreeCG modules or committees,
evaluated in float32 on the CPU. The analysis scripts (``analysis/*.py``) build their
reports from these functions.

This module needs the training code (torch); :mod:`freecg_md.analysis` does not import it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.data import atomic_masses, covalent_radii

from ..committee import load_committee
from ..md.guards import find_bonds
from ..train import TrainConfig
from ..train.data import Structure, structures_from_atoms
from ..train.dataset_cache import data_files, load_training_structures
from ..train.finetune import starting_point
from ..train.loop import evaluate_errors, predict_in_batches
from ..units import MEV_PER_EV
from .structure import radius_of_gyration

__all__ = ["RunStructures", "add_named_sets", "closest_unbonded_contact", "committee_points",
           "energy_errors", "held_out_sets", "mean_reference_force", "radii_of_gyration",
           "read_labelled", "round_sets", "run_structures", "target_errors"]


def read_labelled(path: str | Path) -> list[Atoms]:
    """The frames of an extxyz file, or of every extxyz file in a folder (read as training
    reads a data entry: :func:`freecg_md.train.dataset_cache.data_files`)."""
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
        (S,) whether each structure comes from an own-MD entry (index >= ``own_md_from``).
    added:
        (S,) whether the run added the structure to the data of the run it continues
        (``init_from``); all False for a run that continues none.
    """

    structures: list[Structure]
    entry: np.ndarray
    split: dict[str, np.ndarray]
    own_md: np.ndarray
    added: np.ndarray

    def pick(self, split: str, own_md: bool, added: bool = False) -> list[Structure]:
        """The structures of ``split`` from own-MD entries (``own_md``) or the others,
        among those the run added (``added``) or those it continued with."""
        return [self.structures[i] for i in self.split[split]
                if self.own_md[i] == own_md and self.added[i] == added]


def run_structures(config: TrainConfig, own_md_from: int) -> RunStructures:
    """The structures a run trained on (its cache) with their entries and split.

    ``own_md_from`` is the index of the config's first data entry of own-MD frames (the
    entries before it hold classical MD). ValueError if it is out of range or the config's
    files no longer hold the frames of the run's cache; FileNotFoundError if the run has no
    split yet.
    """
    if not 0 < own_md_from < len(config.data):
        raise ValueError(f"own_md_from={own_md_from}: expected 1 to {len(config.data) - 1} "
                         f"(the config has {len(config.data)} data entries)")
    split_path = Path(config.output_dir) / "split.json"
    if not split_path.is_file():
        raise FileNotFoundError(f"{split_path} is missing: has the run started?")
    # First: a fine-tune takes its model settings (the cutoff of the cached edges) from it.
    start = starting_point(config)
    structures, _ = load_training_structures(config)
    counts = [len(read_labelled(folder)) for folder in config.data]
    entry = np.repeat(np.arange(len(counts)), counts)
    if entry.size != len(structures):
        raise ValueError(f"the data hold {entry.size} frames but the run's cache "
                         f"{len(structures)}: expected the files the run trained on")
    split = {name: np.asarray(indices, dtype=int)
             for name, indices in json.loads(split_path.read_text()).items()}
    n_earlier = len(structures) if start is None else start.n_structures
    return RunStructures(structures, entry, split, entry >= own_md_from,
                         np.arange(len(structures)) >= n_earlier)


def add_named_sets(sets: dict[str, list[Structure]], named: Sequence[tuple[str, Path]],
                   cutoff: float) -> None:
    """Each ``(name, path)`` of labelled frames (:func:`read_labelled`) into ``sets`` as
    structures with edges within ``cutoff`` Å; ValueError if a name is taken."""
    for name, path in named:
        if name in sets:
            raise ValueError(f"set {name!r}: that name is taken; expected a new one")
        sets[name] = structures_from_atoms(read_labelled(path), cutoff)


def held_out_sets(config: TrainConfig, own_md_from: int, probe: Path | None, cutoff: float,
                  training_own_md: bool = False,
                  named: Sequence[tuple[str, Path]] = ()) -> dict[str, list[Structure]]:
    """A run's held-out structures cut by origin (classical MD, own-MD frames), and the
    probe's conformations with their edges within ``cutoff`` Å; with ``training_own_md``
    also the own-MD frames of the training split (does the model fit what it trains on?);
    then each ``named`` labelled file under its name (:func:`add_named_sets`).

    For a run that continues another on more data (``init_from`` a run or model file whose
    data are this run's first structures), the own-MD frames it added are sets of their
    own ("added own-MD frames"): they may come from the same trajectories as frames it
    trains on, so they say how well it fits them, not how it does on MD it has not seen.
    """
    run = run_structures(config, own_md_from)
    sets = {"held-out, classical MD data": run.pick("test", own_md=False),
            "held-out, own-MD frames": run.pick("test", own_md=True),
            "held-out, added classical MD data": run.pick("test", own_md=False, added=True),
            "held-out, added own-MD frames": run.pick("test", own_md=True, added=True)}
    if training_own_md:
        sets["training, own-MD frames"] = run.pick("train", own_md=True)
        sets["training, added own-MD frames"] = run.pick("train", own_md=True, added=True)
    # A set with no structures has no errors to report.
    sets = {name: part for name, part in sets.items() if part}
    if probe is not None:
        sets["probe, own MD at 300 K"] = structures_from_atoms(ase.io.read(probe, index=":"),
                                                               cutoff)
    add_named_sets(sets, named, cutoff)
    return sets


def round_sets(config: TrainConfig, probe: Path | None) -> dict[str, list[Structure]]:
    """The sets of an active-learning round's fine-tune ``config`` (one with
    ``init_from``): the held-out test structures of the earlier data and of the added
    frames, and the probe's conformations. ValueError for a config that is no fine-tune;
    FileNotFoundError if its run has no split yet."""
    start = starting_point(config)
    if start is None:
        raise ValueError(f"{config.output_dir}: the config has no init_from; expected a "
                         "round's fine-tune config")
    split_path = Path(config.output_dir) / "split.json"
    if not split_path.is_file():
        raise FileNotFoundError(f"{split_path} is missing: has the round's training started?")
    structures, _ = load_training_structures(config)
    test = json.loads(split_path.read_text())["test"]
    n_old = start.n_structures
    sets = {"held-out, earlier data": [structures[i] for i in test if i < n_old],
            "held-out, added own-MD frames": [structures[i] for i in test if i >= n_old]}
    if probe is not None:
        sets["probe, own MD at 300 K"] = structures_from_atoms(
            ase.io.read(probe, index=":"), start.model.cutoff)
    return sets


def target_errors(model: torch.nn.Module, structures: list[Structure],
                  config: TrainConfig) -> dict[str, float]:
    """The target figures of ``model`` on ``structures`` (module docstring), in batches of
    ``config``'s size: ``n``, ``force_mae_eV_per_A``, ``energy_mae_meV_per_atom``,
    ``energy_bias_meV_per_atom``."""
    summary = evaluate_errors(model, structures, config, torch.device("cpu"),
                              torch.float32).summary()
    return {"n": len(structures),
            "force_mae_eV_per_A": summary["force_mae_eV_per_A"],
            "energy_mae_meV_per_atom": summary["energy_mae_per_atom_eV"] * MEV_PER_EV,
            "energy_bias_meV_per_atom": summary["energy_bias_per_atom_eV"] * MEV_PER_EV}


def energy_errors(model: torch.nn.Module, structures: list[Structure],
                  batch_size: int = 4) -> np.ndarray:
    """(S,) signed energy error per atom of each structure, model minus reference, meV."""
    errors = [((out["energy"].detach() - batch.energy) / batch.num_atoms).double()
              for batch, out in predict_in_batches(model, structures, batch_size, "cpu",
                                                   torch.float32)]
    return torch.cat(errors).numpy() * MEV_PER_EV


def committee_points(paths: Sequence[str | Path],
                     structures: list[Structure]) -> tuple[np.ndarray, np.ndarray]:
    """Per structure, (S,) each in eV/Å: the committee's largest per-atom force
    disagreement (standard deviation over the members of ``paths``) and its mean force's
    largest per-atom error."""
    committee = load_committee(list(paths)).requires_grad_(False).eval()
    spread, error = [], []
    for batch, out in predict_in_batches(committee, structures, 1, "cpu", torch.float32):
        spread.append(float(out["forces_std"].max()))
        error.append(float((out["forces"].detach() - batch.forces).norm(dim=-1).max()))
    return np.array(spread), np.array(error)


def radii_of_gyration(structures: list[Structure]) -> np.ndarray:
    """(S,) mass-weighted radius of gyration of each structure, Å."""
    return np.array([float(radius_of_gyration(s.positions.double().numpy(),
                                              atomic_masses[s.numbers.numpy()]))
                     for s in structures])


def mean_reference_force(structures: list[Structure]) -> np.ndarray:
    """(S,) mean absolute reference force component of each structure, eV/Å (grows as
    bonds and angles leave their minima: a measure of strain)."""
    return np.array([float(s.forces.double().abs().mean()) for s in structures])


def closest_unbonded_contact(positions: np.ndarray, numbers: np.ndarray,
                             native: np.ndarray) -> np.ndarray:
    """(F,) smallest distance between two atoms not bonded in ``native`` (N, 3) Å, over the
    sum of their covalent radii, for frames ``positions`` (F, N, 3) Å (bonds as the MD
    guards find them: :func:`freecg_md.md.guards.find_bonds`)."""
    pairs, _, _ = find_bonds(native, numbers)
    n = len(numbers)
    bonded = np.zeros((n, n), bool)
    bonded[pairs[:, 0], pairs[:, 1]] = bonded[pairs[:, 1], pairs[:, 0]] = True
    i, j = np.triu_indices(n, k=1)
    free = ~bonded[i, j]
    i, j = i[free], j[free]
    scale = covalent_radii[numbers[i]] + covalent_radii[numbers[j]]
    return (np.linalg.norm(positions[:, j] - positions[:, i], axis=-1) / scale).min(axis=1)
