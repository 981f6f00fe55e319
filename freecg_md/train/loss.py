"""Loss, energy standardisation and error metrics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from ase.data import chemical_symbols

from ..units import KCAL_MOL_PER_EV
from .data import Batch, Structure


def fit_energy_standardisation(
    structures: list[Structure], species: tuple[int, ...]
) -> tuple[dict[int, float], float, float]:
    """Per-element reference energies by least squares, and the scale of the rest.

    Solves ``E_s ~ sum_z n_{s,z} E0_z`` over the structures. For data of one composition
    (one molecule) the system is rank-deficient and the minimum-norm solution splits the
    mean energy over the elements, which is all that matters for such data. The scale is
    the RMS force component (eV/Å), so the network's outputs start at order one.

    Returns ``(E0 by atomic number in eV, scale in eV/Å, shift in eV per atom)``; the shift is
    always 0 (the reference energies carry the mean), kept for the model's
    ``set_energy_standardisation`` signature.
    """
    index = {z: i for i, z in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    for row, s in enumerate(structures):
        for z, n in zip(*np.unique(s.numbers.numpy(), return_counts=True), strict=True):
            counts[row, index[int(z)]] = n
    unseen = [z for z in species if not counts[:, index[z]].any()]
    if unseen:
        # lstsq gives an element without a structure the minimum-norm reference energy, 0
        # eV: its atoms' energies would be off by their whole atomic energy.
        warnings.warn(f"element(s) {', '.join(chemical_symbols[z] for z in unseen)} of the "
                      "model's species appear in no training structure: their reference "
                      "energies are set to 0 eV and the model has not learnt them",
                      UserWarning, stacklevel=2)
    energies = np.array([float(s.energy) for s in structures])
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    forces = torch.cat([s.forces.reshape(-1) for s in structures])
    scale = float(torch.sqrt((forces**2).mean())) or 1.0
    return {z: float(solution[index[z]]) for z in species}, scale, 0.0


def loss_fn(
    energy: torch.Tensor, forces: torch.Tensor, batch: Batch, energy_weight: float,
    force_weight: float,
) -> torch.Tensor:
    """``w_E mean((dE / N)^2) + w_F mean(dF^2)``: per-atom energy error (eV) and force
    component error (eV/Å), so that molecules of different sizes weigh alike."""
    energy_error = (energy - batch.energy) / batch.num_atoms
    force_error = forces - batch.forces
    return energy_weight * (energy_error**2).mean() + force_weight * (force_error**2).mean()


@dataclass
class ErrorMetrics:
    """Accumulates absolute and squared errors over batches.

    With ``weights`` (energy, force) the summary's ``loss`` is :func:`loss_fn` over all the
    structures at once, ``w_E mean_s((dE_s / N_s)^2) + w_F mean(dF^2)``, whatever the
    batches; without, it is the mean of the batches' losses (where the last, partial batch
    weighs as much as a full one: how runs begun before the exact loss keep scoring).
    """

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("energy_abs", "energy_per_atom_abs", "energy_per_atom_signed", "energy_sq",
         "energy_per_atom_sq", "force_abs", "force_sq", "loss"), 0.0))
    n_structures: int = 0
    n_components: int = 0
    n_batches: int = 0
    weights: tuple[float, float] | None = None

    def update(self, energy: torch.Tensor, forces: torch.Tensor, batch: Batch,
               loss: float) -> None:
        de = (energy.detach() - batch.energy).double()
        df = (forces.detach() - batch.forces).double()
        self.sums["energy_abs"] += float(de.abs().sum())
        self.sums["energy_per_atom_abs"] += float((de.abs() / batch.num_atoms).sum())
        self.sums["energy_per_atom_signed"] += float((de / batch.num_atoms).sum())
        self.sums["energy_sq"] += float((de**2).sum())
        self.sums["energy_per_atom_sq"] += float(((de / batch.num_atoms) ** 2).sum())
        self.sums["force_abs"] += float(df.abs().sum())
        self.sums["force_sq"] += float((df**2).sum())
        self.sums["loss"] += loss
        self.n_structures += batch.num_graphs
        self.n_components += df.numel()
        self.n_batches += 1

    def merged(self, other: ErrorMetrics) -> ErrorMetrics:
        """The metrics of both sets of structures together (scored with the same weights).
        The error sums are exact; so is the loss with weights, without them it is the mean
        over all batches of both."""
        # An empty side (the start of a sum) takes the other's weights.
        weights = other.weights if not self.n_batches else self.weights
        if other.n_batches and other.weights != weights:
            raise ValueError(f"merging metrics of loss weights {self.weights} and "
                             f"{other.weights}; expected the same")
        return ErrorMetrics(
            {key: value + other.sums[key] for key, value in self.sums.items()},
            self.n_structures + other.n_structures, self.n_components + other.n_components,
            self.n_batches + other.n_batches, weights)

    def summary(self) -> dict[str, float]:
        """MAE/RMSE in eV (energy), eV/atom, eV/Å (forces), and the same in kcal/mol; the
        bias is the mean signed energy error per atom (model minus reference)."""
        n, m = max(self.n_structures, 1), max(self.n_components, 1)
        out = {
            "energy_mae_eV": self.sums["energy_abs"] / n,
            "energy_rmse_eV": (self.sums["energy_sq"] / n) ** 0.5,
            "energy_mae_per_atom_eV": self.sums["energy_per_atom_abs"] / n,
            "energy_bias_per_atom_eV": self.sums["energy_per_atom_signed"] / n,
            "force_mae_eV_per_A": self.sums["force_abs"] / m,
            "force_rmse_eV_per_A": (self.sums["force_sq"] / m) ** 0.5,
            "loss": self.sums["loss"] / max(self.n_batches, 1),
        }
        if self.weights is not None:
            energy_weight, force_weight = self.weights
            out["loss"] = (energy_weight * self.sums["energy_per_atom_sq"] / n
                           + force_weight * self.sums["force_sq"] / m)
        for key in list(out):
            if key.endswith("_eV") or key.endswith("_eV_per_A"):
                converted = key.replace("_eV", "_kcal_mol")
                out[converted] = out[key] * KCAL_MOL_PER_EV
        return out
