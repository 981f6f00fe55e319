"""The one thing the integrators and the run loop need of a potential.

Kept in a module of its own so that they do not import the model stack to name it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Potential"]


@runtime_checkable
class Potential(Protocol):
    """Energies and forces of R replicas of one N-atom system."""

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` (R, N, 3) float64 Å -> ``(energies (R,) eV, forces (R, N, 3) eV/Å)``,
        both float64 on the device of ``positions``."""
        ...
