"""Training FreeCG models on labelled structures (energies and forces)."""

from .config import TrainConfig
from .loop import train
from .loss import fit_energy_standardisation

__all__ = ["TrainConfig", "fit_energy_standardisation", "train"]
