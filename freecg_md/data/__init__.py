"""Reference data: the chignolin molecule, classical sampling, labelling, datasets."""

from .dataset import DatasetError, check_elements, merge_chunks, read_dataset, write_dataset
from .molecules import CHIGNOLIN_CHARGE, ChignolinSystem, load_chignolin
from .starts import (
    StartStates,
    initial_replicas,
    load_chignolin_starts,
    load_start_states,
    save_start_states,
)

__all__ = [
    "CHIGNOLIN_CHARGE",
    "ChignolinSystem",
    "DatasetError",
    "StartStates",
    "check_elements",
    "initial_replicas",
    "load_chignolin",
    "load_chignolin_starts",
    "load_start_states",
    "merge_chunks",
    "read_dataset",
    "save_start_states",
    "write_dataset",
]
