"""Analysis of trajectories as pure functions: RMSD, collective variables,
replica-exchange demultiplexing and diagnostics, free-energy landscapes."""

from .landscape import KB_KCAL, Landscape, free_energy_2d, mbar_free_energy_2d, mbar_weights
from .remd_stats import acceptance_per_pair, frames_at_temperature, round_trips
from .structure import (
    CHIGNOLIN_CV_ATOMS,
    atom_index,
    chignolin_cvs,
    distances,
    rmsd,
    selection,
)

__all__ = [
    "CHIGNOLIN_CV_ATOMS",
    "KB_KCAL",
    "Landscape",
    "acceptance_per_pair",
    "atom_index",
    "chignolin_cvs",
    "distances",
    "frames_at_temperature",
    "free_energy_2d",
    "mbar_free_energy_2d",
    "mbar_weights",
    "rmsd",
    "round_trips",
    "selection",
]
