"""A committee of FreeCG models: their mean as the potential, their spread as its uncertainty.

Models trained on the same data from different seeds agree where the data constrain them
and drift apart where they do not, so the spread of their predictions flags structures the
training has not covered (query by committee). With members k = 1..K predicting energies
E_k and forces F_k,i on atom i, the committee predicts

    E = (1/K) sum_k E_k,          F_i = (1/K) sum_k F_k,i

and reports

    sigma_E = sqrt((1/K) sum_k (E_k - E)^2)                      (eV)
    sigma_F,i = sqrt((1/K) sum_k |F_k,i - F_i|^2)                 (eV/Å, per atom)

with max_i sigma_F,i the usual single-number disagreement of a structure (the "maximal
force deviation" of active-learning codes). These are population standard deviations
(divide by K, not K - 1), so the figures do not depend on a bias correction that a
committee of four cannot estimate anyway.

The members run one after another on the same neighbour list: their weights differ, so
there is no shared work to fuse, and a committee of K costs K single-model calls.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from .io import load_model
from .nn import FreeCG

__all__ = ["Committee", "force_disagreement", "load_committee"]


def force_disagreement(member_forces: torch.Tensor) -> torch.Tensor:
    """Per-atom spread of the members' forces.

    Parameters
    ----------
    member_forces:
        (K, N, 3) eV/Å, member k's force on atom i.

    Returns
    -------
    torch.Tensor
        (N,) eV/Å, sqrt((1/K) sum_k |F_k,i - mean_k F_k,i|^2).
    """
    deviation = member_forces - member_forces.mean(dim=0, keepdim=True)
    return deviation.square().sum(dim=-1).mean(dim=0).sqrt()


class Committee(torch.nn.Module):
    """K FreeCG models with one cutoff and one set of elements, evaluated together.

    Has the parts of :class:`~freecg_md.FreeCG` that the calculator and the engines use
    (``cutoff``, ``species``, ``metadata``, :meth:`energy_and_forces`), so it stands in for
    a single model anywhere.

    Parameters
    ----------
    members:
        Two or more models, or model file paths.

    Raises
    ------
    ValueError
        Fewer than two members, or members with different cutoffs or elements.
    """

    def __init__(self, members: Sequence[FreeCG | str | os.PathLike]) -> None:
        super().__init__()
        models = [load_model(m) if isinstance(m, (str, os.PathLike)) else m for m in members]
        if len(models) < 2:
            raise ValueError(f"members has {len(models)} model(s); a committee needs at least 2")
        for index, model in enumerate(models):
            if not isinstance(model, FreeCG):
                raise TypeError(f"members[{index}] is a {type(model).__name__}; expected a "
                                "FreeCG or a model file path")
            if model.cutoff != models[0].cutoff or model.species != models[0].species:
                raise ValueError(
                    f"members[{index}] has cutoff {model.cutoff} Å and elements "
                    f"{model.species}; members[0] has {models[0].cutoff} Å and "
                    f"{models[0].species}: a committee shares one neighbour list")
        self.members = torch.nn.ModuleList(models)
        # The first member's metadata speaks for the committee (its training domain is the
        # one the watchers check); each member's own stays on the member.
        self.metadata = dict(getattr(models[0], "metadata", {}) or {})

    @property
    def cutoff(self) -> float:
        return float(self.members[0].cutoff)

    @property
    def species(self) -> tuple[int, ...]:
        return tuple(self.members[0].species)

    @property
    def size(self) -> int:
        """The number of members, K."""
        return len(self.members)

    def energy_and_forces(
        self,
        numbers: torch.Tensor,
        positions: torch.Tensor,
        edge_index: torch.Tensor,
        shifts: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
        num_graphs: int = 1,
        create_graph: bool = False,
    ) -> dict[str, torch.Tensor]:
        """The members' mean and spread; arguments as :meth:`FreeCG.energy_and_forces`.

        Returns
        -------
        dict of torch.Tensor
            ``energy`` (B,) eV, ``energies`` (N,) eV and ``forces`` (N, 3) eV/Å: the means;
            ``member_energy`` (K, B) eV and ``member_forces`` (K, N, 3) eV/Å; ``energy_std``
            (B,) eV and ``forces_std`` (N,) eV/Å, as in the module docstring.
        """
        outs = [member.energy_and_forces(numbers, positions, edge_index, shifts, batch,
                                         num_graphs, create_graph) for member in self.members]
        member_energy = torch.stack([out["energy"] for out in outs])
        member_forces = torch.stack([out["forces"] for out in outs])
        return {
            "energy": member_energy.mean(dim=0),
            "energies": torch.stack([out["energies"] for out in outs]).mean(dim=0),
            "forces": member_forces.mean(dim=0),
            "member_energy": member_energy,
            "member_forces": member_forces,
            "energy_std": member_energy.std(dim=0, correction=0),
            "forces_std": force_disagreement(member_forces),
        }


def load_committee(paths: Sequence[str | os.PathLike]) -> Committee:
    """A :class:`Committee` of the model files ``paths`` (two or more)."""
    return Committee([load_model(path) for path in paths])
