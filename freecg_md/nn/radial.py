"""Radial features of an edge: the cosine cutoff and the ExpNormal basis."""

from __future__ import annotations

import math

import torch
from torch import nn


class CosineCutoff(nn.Module):
    """Smooth cutoff ``phi(d) = 0.5 (cos(pi d / r_c) + 1)`` for ``d < r_c``, else 0.

    Both ``phi`` and its first derivative vanish at ``r_c``, so anything multiplied by it
    enters and leaves the neighbourhood smoothly.

    Parameters
    ----------
    cutoff:
        ``r_c`` in Å.
    """

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """``distances``: (E,) Å -> (E,) dimensionless weights in [0, 1]."""
        phi = 0.5 * (torch.cos(distances * (math.pi / self.cutoff)) + 1.0)
        return phi * (distances < self.cutoff).to(distances.dtype)

    def derivative(self, distances: torch.Tensor) -> torch.Tensor:
        """``d phi / d d`` (E,) 1/Å, for backward passes written out."""
        scale = math.pi / self.cutoff
        slope = -0.5 * scale * torch.sin(distances * scale)
        return slope * (distances < self.cutoff).to(distances.dtype)


class ExpNormalBasis(nn.Module):
    """ExpNormal radial basis of PhysNet/TorchMD-NET, times the cosine cutoff.

    ``b_k(d) = exp(-beta_k (exp(-alpha d) - mu_k)^2) phi(d)`` with ``alpha = 5 / r_c``,
    ``mu_k`` evenly spaced in ``[exp(-r_c), 1]`` and
    ``beta_k = (2 / K (1 - exp(-r_c)))^-2``. The parameters are fixed buffers, not trained.

    Parameters
    ----------
    cutoff:
        ``r_c`` in Å.
    num_basis:
        ``K``, the number of functions.
    """

    def __init__(self, cutoff: float, num_basis: int = 32) -> None:
        super().__init__()
        self.cutoff_fn = CosineCutoff(cutoff)
        self.alpha = 5.0 / cutoff
        start = math.exp(-cutoff)
        self.register_buffer("means", torch.linspace(start, 1.0, num_basis))
        beta = (2.0 / num_basis * (1.0 - start)) ** -2
        self.register_buffer("betas", torch.full((num_basis,), beta))

    def forward(self, distances: torch.Tensor) -> torch.Tensor:
        """``distances``: (E,) Å -> (E, K) basis values."""
        d = distances.unsqueeze(-1)
        # The narrow Gaussians' far tails fall below the smallest normal number, and
        # denormal operands take a slow path through the next linear map on a CPU. Flushing
        # them to zero changes values by less than 1.2e-38 (float32), and _gaussian's floor
        # by less than 3.5e-35.
        values = self._gaussians(d)[2] * self.cutoff_fn(d)
        return values.masked_fill(values < torch.finfo(values.dtype).tiny, 0.0)

    def with_derivative(self, distances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The basis values (E, K) and their derivatives by the distance (E, K) 1/Å, without
        autograd (for backward passes written out); zero where the values are flushed."""
        d = distances.unsqueeze(-1)
        decay, offset, expanded = self._gaussians(d)
        cut = self.cutoff_fn(d)
        values = expanded * cut
        # d/dd exp(-beta (e^(-alpha d) - mu)^2) = expanded * 2 beta alpha e^(-alpha d) offset
        slope = expanded * (2 * self.alpha) * self.betas * offset * decay * cut
        slope = slope + expanded * self.cutoff_fn.derivative(d)
        flushed = values < torch.finfo(values.dtype).tiny
        return values.masked_fill(flushed, 0.0), slope.masked_fill(flushed, 0.0)

    def _gaussians(self, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``e^(-alpha d)``, its offsets from the means and the Gaussians, (E, K) each but
        the first, (E, 1), for ``d`` (E, 1) Å."""
        decay = torch.exp(-self.alpha * d)
        offset = decay - self.means
        return decay, offset, _gaussian(-self.betas * offset ** 2)


def _gaussian(exponent: torch.Tensor) -> torch.Tensor:
    """``exp(exponent)``, zero where that is below ``e^8`` times the dtype's smallest normal
    number (3.5e-35 in float32, 6.6e-305 in float64).

    The basis's narrow Gaussians reach exponents of -260, and exp whose result falls
    below the normal range takes a slow path on a CPU, and the radial basis is a visible
    part of a small model's call. The values changed are far below float32's resolution of
    the basis's values (order 1), as were those that the basis already flushed.
    """
    floor = math.log(torch.finfo(exponent.dtype).tiny) + 8.0
    return torch.exp(exponent.clamp_min(floor)).masked_fill(exponent < floor, 0.0)
