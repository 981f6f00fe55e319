"""ASE calculator for FreeCG models: ASE Atoms in, eV and eV/Å out."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.data import chemical_symbols

from .committee import Committee
from .domain import DomainWatcher, domain_of_model
from .io import load_model
from .neighbors import NeighborListCache
from .nn import FreeCG
from .nn.precision import check_matmul_precision

__all__ = ["FreeCGCalculator", "resolve_device", "resolve_dtype"]

# Closer than this, two atoms are taken as overlapping: the input is broken (or a
# simulation has blown up), and the model's answer would be meaningless.
MIN_DISTANCE = 0.1  # Å

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"float32"``/``"float64"`` or the torch dtypes -> the torch dtype; else ValueError."""
    if isinstance(dtype, torch.dtype) and dtype in _DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f"dtype={dtype!r}: expected 'float32' or 'float64'")


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device that exists on this machine; ValueError naming it otherwise."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device={device!r} is not a torch device: {error}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA devices exist"
            )
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r}: MPS is not available on this machine")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device={device!r}: expected 'cpu', 'cuda[:N]' or 'mps'")
    return resolved


ModelLike = FreeCG | Committee | str | os.PathLike
"""A model, a committee, or a model file path."""


def prepare_model(model: ModelLike | Sequence[FreeCG | str | os.PathLike],
                  device: torch.device, dtype: torch.dtype,
                  compile: bool = False,  # noqa: A002
                  matmul_precision: str = "float32") -> FreeCG | Committee:
    """``model`` (a FreeCG, a :class:`~freecg_md.committee.Committee`, a model file path,
    or a list of models or paths, which makes a committee) in eval mode on ``device`` in
    ``dtype``, compiled if asked, with no parameter needing a gradient and its products in
    ``matmul_precision`` (:mod:`freecg_md.nn.precision`).

    Conversions and compilation happen on a copy: the caller's model (perhaps shared with
    another calculator in another dtype, or being trained) must not change under it.
    Frozen parameters let large inputs share their edge runs among threads (see
    :class:`~freecg_md.nn.cpu.layer_runs.RunsInParallel`).
    """
    check_matmul_precision(matmul_precision, device)
    if matmul_precision != "float32" and dtype != torch.float32:
        raise ValueError(f"matmul_precision={matmul_precision!r} with dtype={dtype}: "
                         "reduced-precision products need dtype='float32'")
    if isinstance(model, (list, tuple)):
        model = Committee(model) if len(model) != 1 else model[0]
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    elif not isinstance(model, (FreeCG, Committee)):
        raise TypeError(
            f"model is a {type(model).__name__}; expected a FreeCG, a Committee, a model "
            "file path or a list of them"
        )
    parameter = next(model.parameters())
    trainable = any(p.requires_grad for p in model.parameters())
    networks = model.members if isinstance(model, Committee) else [model]
    precision_differs = any(getattr(n, "matmul_precision", "float32") != matmul_precision
                            for n in networks)
    if (parameter.dtype != dtype or parameter.device != device or compile or trainable
            or precision_differs):
        model = copy.deepcopy(model).to(device=device, dtype=dtype).requires_grad_(False)
    for network in (model.members if isinstance(model, Committee) else [model]):
        network.matmul_precision = matmul_precision
        if compile:
            network.compile_network()
    return model.eval()


class FreeCGCalculator(Calculator):
    """ASE calculator running a FreeCG model.

    >>> atoms.calc = FreeCGCalculator("models/chignolin.pt")  # doctest: +SKIP
    >>> atoms.get_potential_energy(), atoms.get_forces()       # doctest: +SKIP

    Parameters
    ----------
    model:
        A :class:`freecg_md.FreeCG` or the path of a model file; or several (a list of
        models or paths, or a :class:`~freecg_md.committee.Committee`), whose mean is the
        potential and whose spread is reported (see Notes).
    device:
        Torch device to evaluate on, e.g. ``"cpu"`` or ``"cuda"``.
    dtype:
        ``"float32"`` (default, as trained) or ``"float64"``.
    skin:
        Verlet skin in Å for the neighbour-list cache; 0 builds a list every call.
    compile:
        Run the network through ``torch.compile`` (see :meth:`FreeCG.compile_network`):
        faster calls after a first call that compiles for minutes on a CPU.
    matmul_precision:
        ``"float32"`` (default), ``"bfloat16"`` (CPUs with bfloat16 units: the interaction
        layers' products take bfloat16 operands) or ``"tf32"`` (CUDA): faster products
        for a small force error, measured in benchmarks/README.md (reduced precision);
        see :mod:`freecg_md.nn.precision`. Only with ``dtype="float32"``.

    Notes
    -----
    Results follow ASE's conventions: ``energy`` and ``free_energy`` in eV (equal: the
    model has no electronic entropy), ``energies`` per atom (N,) eV and ``forces`` (N, 3)
    eV/Å, all float64. ``reset()`` clears results as usual but keeps the neighbour list,
    which checks its own validity (atoms moved more than skin/2, or numbers, cell or pbc
    changed); ``neighbor_stats`` reports its builds and reuses.

    A committee of K models adds ``energy_comm`` (K,) eV and ``forces_comm`` (K, N, 3) eV/Å,
    the members' predictions; ``energy_var`` eV² and ``energy_std`` eV, their spread;
    ``forces_std`` (N,) eV/Å, each atom's force spread, and ``max_force_std`` eV/Å, its
    largest value (the definitions are in :mod:`freecg_md.committee`). ``energy``,
    ``energies`` and ``forces`` are the means. ``forces_comm`` and ``energy_var`` are the
    names MACE's calculator gives the same quantities; the others are this package's.
    MACE's committee puts the members' energies under ``energies``; here ``energies`` keeps
    ASE's meaning (per atom, (N,)) and the members' energies are ``energy_comm``.
    """

    implemented_properties = ("energy", "free_energy", "energies", "forces")
    committee_properties = ("energy_comm", "forces_comm", "energy_var", "energy_std",
                            "forces_std", "max_force_std")

    def __init__(
        self,
        model: ModelLike | Sequence[FreeCG | str | os.PathLike],
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype = "float32",
        skin: float = 1.0,
        compile: bool = False,  # noqa: A002 - torch's name for it
        matmul_precision: str = "float32",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype)
        self.model = prepare_model(model, self.device, self.dtype, compile, matmul_precision)
        if isinstance(self.model, Committee):
            # An instance attribute: a single model's calculator keeps ASE's usual list.
            self.implemented_properties = (*type(self).implemented_properties,
                                           *self.committee_properties)
        self.neighbors = NeighborListCache(self.model.cutoff, skin)
        self.domain = DomainWatcher(domain_of_model(getattr(self.model, "metadata", {})), [])
        self._known = np.zeros(max(max(self.model.species) + 1, 119), dtype=bool)
        self._known[list(self.model.species)] = True

    @property
    def neighbor_stats(self) -> dict[str, int]:
        """``{"builds": ..., "reuses": ...}`` of the neighbour-list cache."""
        return self.neighbors.stats

    def _check_atoms(self, atoms: Atoms) -> None:
        if len(atoms) == 0:
            raise ValueError("atoms is empty; expected at least one atom")
        numbers = atoms.numbers
        unknown = sorted({int(z) for z in numbers if z >= len(self._known) or not self._known[z]})
        if unknown:
            names = ", ".join(
                chemical_symbols[z] if z < len(chemical_symbols) else str(z) for z in unknown
            )
            known = ", ".join(chemical_symbols[z] for z in self.model.species)
            raise ValueError(
                f"atoms contains element(s) {names} that the model was not trained on; "
                f"it knows {known}"
            )
        if not np.all(np.isfinite(atoms.positions)):
            bad = np.unique(np.nonzero(~np.isfinite(atoms.positions))[0])
            raise ValueError(
                f"atoms has NaN or infinite positions (atom indices {bad[:10].tolist()})"
            )

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: list[str] | None = None,
        system_changes: list[str] = all_changes,
    ) -> None:
        Calculator.calculate(self, atoms, properties or ["energy"], system_changes)
        atoms = self.atoms
        self._check_atoms(atoms)
        if not np.array_equal(self.domain.numbers, atoms.numbers):
            self.domain.set_numbers(atoms.numbers)
        # The net charge a user states (ASE's convention: atoms.info["charge"]) cannot reach
        # the model; it is only checked against the charges of the training data.
        self.domain.check_charge(atoms.info.get("charge"))
        positions = atoms.positions
        neighbors = self.neighbors.get(positions, atoms.numbers, atoms.cell.array, atoms.pbc)
        shifts = neighbors.shift_vectors(atoms.cell.array)
        self._check_overlaps(positions, neighbors.edge_index, shifts)

        def tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.as_tensor(array, dtype=dtype, device=self.device)

        with torch.enable_grad():
            out = self.model.energy_and_forces(
                tensor(atoms.numbers, torch.long),
                tensor(positions, self.dtype),
                tensor(neighbors.edge_index, torch.long),
                tensor(shifts, self.dtype) if atoms.pbc.any() else None,
            )
        def array(name: str) -> np.ndarray:
            return out[name].detach().cpu().numpy().astype(np.float64)

        energy = float(out["energy"].detach().sum().cpu())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": array("energies"),
            "forces": array("forces"),
        }
        if "member_energy" in out:
            energy_std = float(array("energy_std")[0])
            forces_std = array("forces_std")
            self.results.update(
                energy_comm=array("member_energy")[:, 0], forces_comm=array("member_forces"),
                energy_std=energy_std, energy_var=energy_std**2, forces_std=forces_std,
                max_force_std=float(forces_std.max()))

    def _check_overlaps(
        self, positions: np.ndarray, edge_index: np.ndarray, shifts: np.ndarray
    ) -> None:
        if edge_index.shape[1] == 0:
            return
        vectors = positions[edge_index[1]] - positions[edge_index[0]] + shifts
        squared = np.einsum("ij,ij->i", vectors, vectors)
        self.domain.check_distances(edge_index, np.sqrt(squared))
        closest = int(np.argmin(squared))
        if squared[closest] < MIN_DISTANCE**2:
            i, j = edge_index[:, closest]
            raise ValueError(
                f"atoms {i} and {j} overlap ({np.sqrt(squared[closest]):.3g} Å apart, "
                f"less than {MIN_DISTANCE} Å); the structure is broken"
            )
