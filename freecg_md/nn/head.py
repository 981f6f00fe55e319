"""Output head: gated equivariant blocks that turn node features into atomic energies."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# Keeps the gradient of the vector norm finite (and twice differentiable, for force
# training) when all vector features of an atom are zero.
NORM_EPSILON = 1e-8


class GatedEquivariantBlock(nn.Module):
    """PaiNN-style gated block: ``(x, v) -> (x', v')`` with ``F_in -> F_out`` channels.

    Parameters
    ----------
    in_channels, out_channels:
        Channel widths.
    scalar_activation:
        Apply SiLU to the output scalars.
    norm_epsilon:
        Added to the squared norms under the square root; 0 takes the plain norm (the
        authors' choice), with derivatives 0 at a zero vector.
    """

    def __init__(self, in_channels: int, out_channels: int, scalar_activation: bool,
                 norm_epsilon: float = NORM_EPSILON) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.norm_epsilon = norm_epsilon
        self.vec1_proj = nn.Linear(in_channels, in_channels, bias=False)
        self.vec2_proj = nn.Linear(in_channels, out_channels, bias=False)
        self.update_net = nn.Sequential(
            nn.Linear(2 * in_channels, in_channels),
            nn.SiLU(),
            nn.Linear(in_channels, 2 * out_channels),
        )
        self.scalar_activation = scalar_activation
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, F_in), ``v`` (N, 8, F_in) -> (N, F_out), (N, 8, F_out)."""
        squared = (self.vec1_proj(v) ** 2).sum(dim=1)
        if self.norm_epsilon:
            norms = torch.sqrt(squared + self.norm_epsilon)
        else:
            # sqrt's derivative at 0 is infinite, and an atom without neighbours keeps
            # v = 0: a NaN in every parameter's gradient (vector_norm's second derivative
            # at 0 is NaN too). Where the norm is 0 it is taken as a constant 0, so its
            # derivatives there are 0, as torch.norm's first one is in the authors' code.
            positive = squared > 0
            norms = torch.where(positive, torch.sqrt(torch.where(positive, squared, 1.0)),
                                0.0)
        x, gate = self.update_net(torch.cat([x, norms], dim=-1)).split(self.out_channels, -1)
        v = gate.unsqueeze(1) * self.vec2_proj(v)
        if self.scalar_activation:
            x = F.silu(x)
        return x, v


class EnergyHead(nn.Module):
    """Two gated blocks, ``F -> F/2 -> 1``; the scalar output is a (standardised) atomic
    energy, shape (N,). ``norm_epsilon`` as in :class:`GatedEquivariantBlock`."""

    def __init__(self, hidden: int, norm_epsilon: float = NORM_EPSILON) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                GatedEquivariantBlock(hidden, hidden // 2, True, norm_epsilon),
                GatedEquivariantBlock(hidden // 2, 1, False, norm_epsilon),
            ]
        )

    def forward(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x, v = block(x, v)
        return x.squeeze(-1)
