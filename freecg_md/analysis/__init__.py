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
from .remd_stats import acceptance_per_pair, exchange_counts, frames_at_temperature, round_trips
from .rundir import RunData, read_run
from .statistics import Trend, linear_trend, mean_and_standard_error
from .structure import (
    CHIGNOLIN_CV_ATOMS,
    atom_index,
    chignolin_cvs,
    distances,
    radius_of_gyration,
    rmsd,
    selection,
)

__all__ = [
    "CHIGNOLIN_CV_ATOMS",
    "KB_KCAL",
    "Basin",
    "Landscape",
    "RunData",
    "Trend",
    "acceptance_per_pair",
    "atom_index",
    "chignolin_cvs",
    "distances",
    "exchange_counts",
    "folded_unfolded_basins",
    "frames_at_temperature",
    "free_energy_2d",
    "linear_trend",
    "mbar_free_energy_2d",
    "mbar_weights",
    "mean_and_standard_error",
    "radius_of_gyration",
    "read_run",
    "rmsd",
    "round_trips",
    "selection",
]
