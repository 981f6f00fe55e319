"""Analysis of trajectories as pure functions: RMSD, collective variables,
replica-exchange demultiplexing and diagnostics, free-energy landscapes.

Figures and their CSV files are made by :mod:`freecg_md.analysis.reports` (which needs
matplotlib); it is not imported here, so the pure functions load without it.
"""

from .landscape import (
    KB_KCAL,
    Basin,
    Landscape,
    folded_unfolded_basins,
    free_energy_2d,
    mbar_free_energy_2d,
    mbar_weights,
)
from .remd_stats import acceptance_per_pair, frames_at_temperature, round_trips
from .rundir import RunData, read_run
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
    "Basin",
    "Landscape",
    "RunData",
    "acceptance_per_pair",
    "atom_index",
    "chignolin_cvs",
    "distances",
    "folded_unfolded_basins",
    "frames_at_temperature",
    "free_energy_2d",
    "mbar_free_energy_2d",
    "mbar_weights",
    "read_run",
    "rmsd",
    "round_trips",
    "selection",
]
