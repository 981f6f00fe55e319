"""Reading labelled data for training, with a tensor cache beside the run, and the record of
which data a run's split refers to."""

from __future__ import annotations

import json
from pathlib import Path

from ..data.dataset import DatasetError, check_elements, read_dataset
from ..nn import FreeCGConfig
from .config import TrainConfig
from .data import (
    Structure,
    dataset_fingerprint,
    load_structures,
    save_structures,
    split_size,
    structures_from_atoms,
)

# Beside a run's split.json: how many structures it splits and their content's fingerprint.
DATA_RECORD = "data.json"


def data_files(paths: list[str]) -> list[Path]:
    """The extxyz files of data entries, in order: a file as it is, a folder's ``*.extxyz``
    then ``*.extxyz.gz`` sorted by name, hidden files left out (the labeller writes each
    chunk as ``.chunk_*.tmp.extxyz.gz`` first: a killed one leaves that half-written file);
    FileNotFoundError for a missing entry or none."""
    files: list[Path] = []
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(entry.glob("*.extxyz")) + sorted(entry.glob("*.extxyz.gz"))
            files.extend(file for file in found if not file.name.startswith("."))
        elif entry.exists():
            files.append(entry)
        else:
            raise FileNotFoundError(f"data path {str(entry)!r} does not exist")
    if not files:
        raise FileNotFoundError(f"no extxyz files found in data={paths}")
    return files


def load_training_structures(config: TrainConfig) -> tuple[list[Structure], tuple[int, ...]]:
    """Validated structures as tensors, and the elements the model will know.

    The first call reads the extxyz files (checking energies, forces, shapes and elements)
    and caches the tensors, neighbour lists included, in ``output_dir``; later calls (a
    resumed run) read the cache if the files are unchanged.
    """
    model_config = FreeCGConfig.from_dict(config.model) if config.model else FreeCGConfig()
    files = data_files(config.data)
    key = dataset_fingerprint(files, model_config.cutoff, config.energy_key, config.forces_key)
    cache = Path(config.output_dir) / f"data_cache_{key}.pt"
    if cache.exists():
        structures = load_structures(cache)
        if "species" in config.model:
            # The species may have changed while the files did not.
            _check_cached_species(structures, config.model["species"])
    else:
        atoms_list = read_dataset(files, energy_key=config.energy_key,
                                  forces_key=config.forces_key)
        if "species" in config.model:
            check_elements(atoms_list, config.model["species"])
        structures = structures_from_atoms(atoms_list, model_config.cutoff)
        save_structures(structures, cache)
    if config.max_structures is not None:
        structures = structures[: config.max_structures]
    species = tuple(sorted({int(z) for s in structures for z in s.numbers.unique()}))
    if "species" in config.model:
        species = tuple(config.model["species"])
    return structures, species


def _check_cached_species(structures: list[Structure], species: list[int]) -> None:
    """DatasetError naming the first structure with an element outside ``species``."""
    allowed = {int(z) for z in species}
    for index, structure in enumerate(structures):
        extra = {int(z) for z in structure.numbers.unique()} - allowed
        if extra:
            raise DatasetError(f"structure {index} holds atomic numbers {sorted(extra)}, "
                               f"outside the model's species {sorted(allowed)}")


def record_run_data(run_dir: Path, n_structures: int, fingerprint: str) -> None:
    """Write :data:`DATA_RECORD` for the ``n_structures`` a run splits, whose content has
    ``fingerprint`` (:func:`~freecg_md.train.data.structures_fingerprint`)."""
    record = {"structures": n_structures, "fingerprint": fingerprint}
    (Path(run_dir) / DATA_RECORD).write_text(json.dumps(record) + "\n")


def check_run_data(run_dir: Path, n_structures: int, fingerprint: str,
                   split: dict[str, list[int]], consequence: str) -> None:
    """ValueError unless the data (``n_structures`` whose content has ``fingerprint``) are
    those the run's split was made on: as many, and, where the run recorded them
    (:data:`DATA_RECORD`), the same in content and order. ``consequence`` ends the message
    (what the caller cannot do on other data)."""
    split_path = Path(run_dir) / "split.json"
    n_split = split_size(split)
    if n_split != n_structures:
        raise ValueError(f"{split_path} splits {n_split} structures but the data now hold "
                         f"{n_structures}; {consequence}")
    record_path = Path(run_dir) / DATA_RECORD
    if record_path.is_file():
        recorded = json.loads(record_path.read_text())["fingerprint"]
        if fingerprint != recorded:
            raise ValueError(f"the data differ from those {split_path} was made on "
                             f"(fingerprint {fingerprint}, recorded {recorded} in "
                             f"{record_path}): files changed, reordered or relabelled; "
                             f"{consequence}")
