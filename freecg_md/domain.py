"""What a model was trained on, and warnings when a system lies outside it.

A model file's metadata holds its :class:`TrainingDomain` (``metadata["training_domain"]``):
the elements and compositions of the training structures, the shortest distance seen
between each pair of elements, and, where known, the temperatures the structures were
sampled at and the reference method. A machine-learned potential has no physics to fall
back on outside that domain: for a composition it never saw its numbers are guesses, and
closer than the shortest distance it saw there is no repulsive wall (the forces may pull
atoms together). :class:`DomainWatcher` warns, once per problem, with an
:class:`OutOfDomainWarning`; the calculator and the MD potentials use it.

    freecg-md domain models/chignolin.pt data/chignolin/labelled ...   # record it
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
from ase.data import chemical_symbols, covalent_radii
from ase.formula import Formula

__all__ = ["DomainWatcher", "OutOfDomainWarning", "TrainingDomain", "composition",
           "domain_from_structures", "labels_provenance", "pair_name"]

DOMAIN_KEY = "training_domain"
BOND_SCALE = 1.2  # bonded: closer than this times the sum of covalent radii (find_bonds)


class OutOfDomainWarning(UserWarning):
    """A system, or a distance in it, lies outside what the model was trained on."""


def composition(numbers: Iterable[int]) -> str:
    """The Hill formula of a set of atoms, e.g. ``C62H73N11O20``."""
    symbols = "".join(chemical_symbols[int(z)] for z in numbers)
    return Formula(symbols).format("hill")


def pair_name(z1: int, z2: int) -> str:
    """``"C-H"``: the two element symbols of a pair, in increasing atomic number reversed
    to the usual heavier-first order."""
    a, b = sorted((int(z1), int(z2)), reverse=True)
    return f"{chemical_symbols[a]}-{chemical_symbols[b]}"


@dataclass(frozen=True)
class TrainingDomain:
    """The region a model was trained on (JSON-serialisable through :meth:`to_dict`).

    Attributes
    ----------
    elements:
        Atomic numbers in the training data.
    compositions:
        Hill formulas of the training structures.
    min_distances:
        Å, the shortest distance seen between each pair of elements (``"C-H"``), over all
        training structures, up to ``distance_cutoff``.
    distance_cutoff:
        Å, pairs farther apart were not looked at.
    temperatures_K:
        Temperatures the training structures were sampled at, if known.
    reference:
        The reference method of the labels, if known.
    description:
        Free text: what the systems are.
    n_structures:
        How many structures the numbers come from.
    min_nonbonded_ratio:
        The closest approach of two atoms not bonded to each other, as a multiple of the
        sum of their covalent radii (bonds: the first structure of each composition's pairs
        within 1.2 times that sum); None if not recorded. Below it, something the data never
        showed is happening (a hydrogen pulled onto an oxygen it is not bonded to).
    charges:
        Net charges (e) of the training structures, if known. The model has no charge
        input: whatever charge a system has, it answers as for these.
    """

    elements: list[int]
    compositions: list[str]
    min_distances: dict[str, float]
    distance_cutoff: float
    temperatures_K: list[float] = field(default_factory=list)
    reference: str = ""
    description: str = ""
    n_structures: int = 0
    min_nonbonded_ratio: float | None = None
    charges: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingDomain:
        """The domain a model file records. Fields this version does not know (written by
        a later one) are left out, so that the checks it knows still run."""
        known = {f.name for f in fields(cls)}
        domain = cls(**{key: value for key, value in data.items() if key in known})
        return replace(domain, charges=[int(round(float(q))) for q in domain.charges])


def domain_from_structures(structures: Iterable[tuple[np.ndarray, np.ndarray]],
                           distance_cutoff: float = 3.0, **info: object) -> TrainingDomain:
    """The domain of ``(numbers (N,), positions (N, 3) Å)`` pairs (molecules, no cell).

    ``info`` fills the other fields (``temperatures_K``, ``reference``, ``description``).
    """
    elements: set[int] = set()
    compositions: set[str] = set()
    shortest: dict[str, float] = {}
    bonded_of: dict[str, np.ndarray] = {}  # per composition, over np.triu_indices pairs
    nonbonded = np.inf
    count = 0
    for numbers, positions in structures:
        numbers = np.asarray(numbers, np.int64)
        positions = np.asarray(positions, np.float64)
        count += 1
        elements.update(numbers.tolist())
        formula = composition(numbers)
        compositions.add(formula)
        i, j = np.triu_indices(len(numbers), k=1)
        distance = np.linalg.norm(positions[i] - positions[j], axis=1)
        ratio = distance / (covalent_radii[numbers[i]] + covalent_radii[numbers[j]])
        bonded = bonded_of.setdefault(formula, ratio < BOND_SCALE)
        if (~bonded).any():
            nonbonded = min(nonbonded, float(ratio[~bonded].min()))
        near = distance < distance_cutoff
        pairs = np.sort(np.stack([numbers[i[near]], numbers[j[near]]], axis=1), axis=1)
        for (z1, z2) in {tuple(p) for p in pairs.tolist()}:
            mask = (pairs[:, 0] == z1) & (pairs[:, 1] == z2)
            name = pair_name(z1, z2)
            shortest[name] = min(shortest.get(name, np.inf), float(distance[near][mask].min()))
    if count == 0:
        raise ValueError("structures is empty; expected at least one (numbers, positions)")
    return TrainingDomain(sorted(elements), sorted(compositions),
                          {k: round(v, 4) for k, v in sorted(shortest.items())},
                          float(distance_cutoff), n_structures=count,
                          min_nonbonded_ratio=(round(nonbonded, 4) if np.isfinite(nonbonded)
                                               else None), **info)


def labels_provenance(infos: Iterable[dict]) -> dict[str, object]:
    """What labelled frames say about themselves, as :class:`TrainingDomain` fields.

    ``infos`` are the frames' ``atoms.info`` dicts: ``temperature`` (K) gives
    ``temperatures_K``, ``method`` gives ``reference`` (distinct methods joined by "; "),
    and ``charge`` (e), or a method naming its charge ("..., charge -2 (tblite)", as
    :func:`freecg_md.data.labelling.reference_method` writes it), gives ``charges``. Fields
    no frame speaks to are left out.
    """
    temperatures: set[float] = set()
    methods: set[str] = set()
    charges: set[int] = set()
    for info in infos:
        if "temperature" in info:
            temperatures.add(float(info["temperature"]))
        method = info.get("method")
        if method:
            methods.add(str(method))
        if "charge" in info:
            charges.add(int(round(float(info["charge"]))))
        elif method and (named := re.search(r"charge\s+([+-]?\d+)", str(method))):
            charges.add(int(named.group(1)))
    out: dict[str, object] = {}
    if temperatures:
        out["temperatures_K"] = sorted(temperatures)
    if methods:
        out["reference"] = "; ".join(sorted(methods))
    if charges:
        out["charges"] = sorted(charges)
    return out


class DomainWatcher:
    """Warns (once per problem) when a system leaves a model's training domain.

    Parameters
    ----------
    domain:
        The model's domain; None (a model file without one) turns the checks off.
    numbers:
        The system's atomic numbers; a composition the model never saw warns at once.
    """

    def __init__(self, domain: TrainingDomain | None, numbers: Sequence[int] | np.ndarray
                 ) -> None:
        self.domain = domain
        self.warned: set[str] = set()
        self.bonds: np.ndarray | None = None  # i * N + j of the first structure's bonds
        self.set_numbers(numbers)

    def set_numbers(self, numbers: Sequence[int] | np.ndarray) -> None:
        """Check a (new) system's composition."""
        self.numbers = np.asarray(numbers, np.int64)
        self.bonds = None  # a new system: its bonds come from its first structure
        if self.domain is None or self.numbers.size == 0:  # no system yet
            return
        formula = composition(self.numbers)
        if formula not in self.domain.compositions:
            known = ", ".join(self.domain.compositions[:5])
            self._warn(f"composition:{formula}",
                       f"the model was trained on {known}"
                       + (f" ({self.domain.description})" if self.domain.description else "")
                       + f", not on {formula}: its energies and forces for this system are "
                       "extrapolations")

    def check_charge(self, charge: object) -> None:
        """Warn if ``charge`` (e, e.g. ``atoms.info.get("charge")``; None: not stated) is
        not a net charge of the training data: the model cannot see it."""
        if self.domain is None or not self.domain.charges or charge is None:
            return
        try:
            value = float(np.asarray(charge, dtype=float).reshape(()))
        except (TypeError, ValueError):
            value = float("nan")
        # Charges are whole numbers of e; a float that rounds to a known one is that one.
        if np.isfinite(value) and abs(value - round(value)) < 1e-6 \
                and int(round(value)) in self.domain.charges:
            return
        known = ", ".join(f"{int(q):+d}" for q in self.domain.charges)
        self._warn(f"charge:{value if np.isfinite(value) else charge!s}",
                   f"the system's net charge is {charge} but the model was trained on net "
                   f"charge {known} only and has no charge input: its energies and forces "
                   f"are those of a system at charge {known}")

    def check_distances(self, edge_index: np.ndarray, lengths: np.ndarray) -> None:
        """Warn for element pairs closer than any the model saw in training.

        ``edge_index`` (2, E) atom pairs, ``lengths`` (E,) Å their distances.
        """
        if self.domain is None or len(lengths) == 0:
            return
        self._check_contacts(np.asarray(edge_index), np.asarray(lengths))
        z = self.numbers[np.asarray(edge_index)]
        # The closest approach of each element pair in array operations: this runs at every
        # MD step, and a Python loop over the edges cost several per cent of a step.
        code = np.maximum(z[0], z[1]) * 256 + np.minimum(z[0], z[1])
        pairs, inverse = np.unique(code, return_inverse=True)
        closest_of = np.full(len(pairs), np.inf)
        np.minimum.at(closest_of, inverse, lengths)
        for pair, closest in zip(pairs.tolist(), closest_of.tolist(), strict=True):
            name = pair_name(*divmod(pair, 256))
            if name in self.warned:
                continue
            limit = self.domain.min_distances.get(name, self.domain.distance_cutoff)
            if closest < limit:
                self._warn(name, f"two atoms ({name}) are {closest:.3f} Å apart, closer than "
                                 f"any {name} pair in the model's training data ({limit:.3f} "
                                 "Å): the model has no repulsive wall there and its forces "
                                 "may pull them together")

    def _check_contacts(self, edge_index: np.ndarray, lengths: np.ndarray) -> None:
        """Warn for two atoms, not bonded in the first structure seen, closer (relative to
        their covalent radii) than any non-bonded pair of the training data."""
        limit = self.domain.min_nonbonded_ratio
        if limit is None or "contact" in self.warned:
            return
        i, j = edge_index
        ratio = lengths / (covalent_radii[self.numbers[i]] + covalent_radii[self.numbers[j]])
        code = np.minimum(i, j) * len(self.numbers) + np.maximum(i, j)
        if self.bonds is None:
            self.bonds = np.unique(code[ratio < BOND_SCALE])
        close = (ratio < limit) & ~np.isin(code, self.bonds)
        if close.any():
            k = int(np.argmin(np.where(close, ratio, np.inf)))
            a, b = int(i[k]), int(j[k])
            name = pair_name(self.numbers[a], self.numbers[b])
            self._warn("contact", f"atoms {a} and {b} ({name}), not bonded in the first "
                                  f"structure, are {lengths[k]:.3f} Å apart, {ratio[k]:.2f} "
                                  "times their covalent radii: no two non-bonded atoms of the "
                                  f"training data came closer than {limit:.2f} times (a new "
                                  "bond the model was never shown)")

    def _warn(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, OutOfDomainWarning, stacklevel=4)


def domain_of_model(metadata: dict) -> TrainingDomain | None:
    """The domain recorded in a model's metadata, or None."""
    data = (metadata or {}).get(DOMAIN_KEY)
    return None if data is None else TrainingDomain.from_dict(data)


def main(argv: list[str] | None = None) -> int:
    """Record the training domain of labelled data in a model file's metadata."""
    from .data.dataset import read_dataset
    from .io import load_model, save_model

    parser = argparse.ArgumentParser(prog="freecg-md domain",
                                     description=main.__doc__)
    parser.add_argument("model", type=Path, help="model file to update (rewritten in place)")
    parser.add_argument("data", nargs="+", help="the labelled data it was trained on")
    parser.add_argument("--temperatures", type=float, nargs="*", default=[])
    parser.add_argument("--reference", default="")
    parser.add_argument("--charges", type=int, nargs="*", default=[],
                        help="net charges (e) of the data")
    parser.add_argument("--description", default="")
    args = parser.parse_args(argv)
    structures = read_dataset(args.data)
    # What the frames record (temperature, method, charge) fills what is not given.
    info = labels_provenance(a.info for a in structures)
    given = {"temperatures_K": args.temperatures, "reference": args.reference,
             "charges": args.charges}
    info.update({key: value for key, value in given.items() if value})
    domain = domain_from_structures(((a.numbers, a.positions) for a in structures),
                                    description=args.description, **info)
    model = load_model(args.model)
    save_model(model, args.model, metadata={**model.metadata, DOMAIN_KEY: domain.to_dict()})
    print(f"{args.model}: training domain of {domain.n_structures} structures: "
          f"{', '.join(domain.compositions)}; shortest distances {domain.min_distances}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
