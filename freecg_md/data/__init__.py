"""Reference data: the chignolin molecule, classical sampling, labelling, datasets."""

from .dataset import DatasetError, check_elements, merge_chunks, read_dataset, write_dataset
from .molecules import CHIGNOLIN_CHARGE, ChignolinSystem, load_chignolin

__all__ = [
    "CHIGNOLIN_CHARGE",
    "ChignolinSystem",
    "DatasetError",
    "check_elements",
    "load_chignolin",
    "merge_chunks",
    "read_dataset",
    "write_dataset",
]
