"""A training pass of energies and forces compiled as one graph (``TrainConfig.compile``).

A force loss needs the forces' own graph. The reference path
(:meth:`freecg_md.nn.FreeCG.energy_and_forces` with ``create_graph=True``) gets it from
eager autograd: the backward pass is recorded op by op and differentiated again, and
``torch.compile`` cannot compile that (a compiled backward is not differentiable). Here the
forces come from :func:`torch.func.grad_and_value` inside a function that
``torch.compile`` traces, so the forward pass and its derivative by the edge vectors are one
traced graph, and the loss's backward pass is that graph's ordinary (first-order) backward,
compiled with it. The mathematics is the model's own network (``FreeCG._network``); only the
spherical harmonics are written out (:func:`spherical_harmonics_l12`), since e3nn's
``Irreps`` objects cannot be traced. ``tests/train/test_compiled.py`` checks energies,
forces and the loss's parameter gradients against the reference path.

Inductor's code is checked against the reference path while it trains: on the first batch
and every ``check_every`` batches after, the reference forces and energies of the same
batch are computed too, and the parameter gradients of a probe loss of both. Where they
differ beyond float rounding the pass warns and is compiled again without kernel fusion
(inductor's ``max_fusion_size=1``) and checked again on the same batch; where that
disagrees too, it uses the reference path from then on. So a miscompiled pass never trains
a model on wrong forces or gradients for more than ``check_every`` steps.
torch 2.13.0's inductor fuses the ablation without group CG wrongly on chignolin (forces and
parameter gradients off, energies right); without fusion both agree with the reference, at
a small cost per step against the fused pass.

Positions enter through the edge vectors ``r_ij = r_j - r_i + s_ij`` only, so with
``g_ij = dE/dr_ij`` the forces are ``F_i = sum_{e: centre i} g_e - sum_{e: neighbour i} g_e``
(two index-adds outside the compiled function, where autograd differentiates them).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch

from ..nn.chunks import keeps_graphs
from ..nn.model import structure_energies

if TYPE_CHECKING:
    from ..nn.model import FreeCG

__all__ = ["CompiledForces", "CompiledPassWarning", "spherical_harmonics_l12"]

_SQRT3 = math.sqrt(3.0)
# Agreement asked of the compiled pass with the reference, by dtype: absolute eV/Å (eV per
# atom for energies) plus relative to the largest reference force. Float32 passes that
# differ only in the order of their sums agree to about 1e-5 eV/Å at these sizes.
_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-9}
# Agreement asked of the parameter gradients of a probe loss, relative to the largest
# reference gradient: float32 passes that differ in the order of their sums agree to about
# 1e-6, the miscompiled fused pass of the ablation differed by 1e-1.
_GRADIENT_TOLERANCE = {torch.float32: 1e-3, torch.float64: 1e-8}


class CompiledPassWarning(UserWarning):
    """The compiled training pass disagreed with the reference path: it is compiled again
    without kernel fusion, or, where that disagrees too, set aside."""


def spherical_harmonics_l12(vectors: torch.Tensor) -> torch.Tensor:
    """The l = 1 and l = 2 real spherical harmonics of the directions of ``vectors``.

    Same basis, order and normalisation as ``e3nn.o3.spherical_harmonics("1x1o+1x2e",
    vectors, normalize=True, normalization="norm")`` (each l has unit norm): with
    ``(x, y, z) = r / |r|``,

    ``Y1 = (x, y, z)``,
    ``Y2 = (sqrt3 x z, sqrt3 x y, y^2 - (x^2 + z^2) / 2, sqrt3 y z, sqrt3 (z^2 - x^2) / 2)``.

    ``vectors`` (E, 3), none of length zero; returns (E, 8).
    """
    unit = vectors / torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    x, y, z = unit.unbind(-1)
    return torch.stack([
        x, y, z,
        _SQRT3 * x * z, _SQRT3 * x * y, y * y - 0.5 * (x * x + z * z), _SQRT3 * y * z,
        0.5 * _SQRT3 * (z * z - x * x),
    ], dim=-1)


class CompiledForces:
    """Energies and forces of ``model`` for a force loss, through one compiled graph.

    Parameters
    ----------
    model:
        The trainable :class:`~freecg_md.nn.FreeCG`; its parameters are read at every
        call (the optimiser's updates apply), nothing is copied.
    check_every:
        Compare the compiled pass with the reference path on the first batch and every
        this many batches after (0: never); on a disagreement it is compiled again without
        kernel fusion (:attr:`fused` becomes False) and, where that disagrees too, the
        reference path takes over (:attr:`failed` says why).
    options:
        Passed to ``torch.compile`` (``dynamic=True`` is set: edge counts differ between
        batches).

    Notes
    -----
    The compiled graph keeps every intermediate of the pass whole, like the reference path
    below the kept-graph limit (:func:`~freecg_md.nn.chunks.keeps_graphs`); passes above it,
    and models with self loops (a zero edge vector has no direction), take the reference
    path (:meth:`supports`). The first call compiles (minutes on a CPU, seconds with
    inductor's on-disk cache); the atom and edge counts are dynamic, so batches of other
    sizes reuse it.
    """

    def __init__(self, model: FreeCG, check_every: int = 500, **options: Any) -> None:
        if check_every < 0:
            raise ValueError(f"check_every={check_every}: expected 0 (never) or a positive "
                             "number of batches")
        self.model = model
        self.check_every = check_every
        self.failed: str | None = None
        self.fused = True
        self._calls = 0
        options.setdefault("dynamic", True)
        self._options = options
        self._edge_terms = self._compile(fused=True)

    def _compile(self, fused: bool) -> Any:
        """The compiled edge terms; ``fused=False`` turns inductor's kernel fusion off."""
        options = dict(self._options)
        if not fused:
            options["options"] = {**options.get("options", {}), "max_fusion_size": 1}
        return torch.compile(self._edge_terms_eager, **options)

    def supports(self, n_edges: int) -> bool:
        """Whether a pass of ``n_edges`` edges goes through the compiled graph (never once
        it has disagreed with the reference)."""
        config = self.model.config
        return (self.failed is None and not config.self_loops
                and keeps_graphs(n_edges, config.hidden, config.num_layers))

    def _edge_terms_eager(self, vectors: torch.Tensor, species: torch.Tensor,
                          centers: torch.Tensor,
                          neighbors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised atom energies (N,) and their sum's gradient by ``vectors`` (E, 3)."""
        model = self.model

        def total(edge_vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            distances = torch.linalg.vector_norm(edge_vectors, dim=-1)
            out = model._network(species, centers, neighbors, distances,
                                 spherical_harmonics_l12(edge_vectors))
            return out.sum(), out

        gradient, (_, out) = torch.func.grad_and_value(total, has_aux=True)(vectors)
        return out, gradient

    def energy_and_forces(self, numbers: torch.Tensor, positions: torch.Tensor,
                          edge_index: torch.Tensor, shifts: torch.Tensor | None = None,
                          batch: torch.Tensor | None = None,
                          num_graphs: int = 1) -> dict[str, torch.Tensor]:
        """As :meth:`FreeCG.energy_and_forces` with ``create_graph=True``: ``energy`` (B,)
        eV, ``energies`` (N,) eV per atom, ``forces`` (N, 3) eV/Å, all differentiable by
        the model's parameters. Pairs at or beyond the cutoff are dropped first, as there.
        """
        checked = self.check_every and self._calls % self.check_every == 0
        self._calls += 1
        arguments = (numbers, positions, edge_index, shifts, batch, num_graphs)
        out = self._compiled_pass(*arguments)
        if not checked:
            return out
        # With its graph: the check compares parameter gradients too.
        reference = self.model.energy_and_forces(*arguments, create_graph=True)
        if not all(torch.isfinite(reference[key]).all() for key in ("energy", "forces")):
            # The model itself has blown up, not the compiler: the training step's own
            # check stops the run.
            return reference
        disagreement = self._disagreement(out, reference, arguments)
        if disagreement is not None and self.fused:
            warnings.warn(f"the compiled training pass disagrees with the reference path "
                          f"({disagreement}); compiling it again without kernel fusion",
                          CompiledPassWarning, stacklevel=2)
            self.fused = False
            self._edge_terms = self._compile(fused=False)
            out = self._compiled_pass(*arguments)
            disagreement = self._disagreement(out, reference, arguments)
        self.failed = disagreement
        if disagreement is not None:
            warnings.warn(f"the compiled training pass disagrees with the reference path "
                          f"({disagreement}) without kernel fusion too; training goes on on "
                          "the reference path (TrainConfig.compile has no effect from here)",
                          CompiledPassWarning, stacklevel=2)
            return reference  # with the forces' graph, for this batch's loss
        return out

    def _disagreement(self, out: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                      arguments: tuple) -> str | None:
        """Why ``out`` differs from ``reference`` (with its graph) in forces and energies,
        or a pass of its own through the compiled graph in the parameter gradients of a
        probe loss, or None. (The probe takes a pass of its own: a compiled graph's backward
        runs once, and ``out``'s is the training loss's.)"""
        parameters = [p for p in self.model.parameters() if p.requires_grad]
        return (_disagreement(out, reference, arguments[0].shape[0])
                or _gradient_disagreement(self._compiled_pass(*arguments), reference,
                                          parameters))

    def _compiled_pass(self, numbers: torch.Tensor, positions: torch.Tensor,
                       edge_index: torch.Tensor, shifts: torch.Tensor | None,
                       batch: torch.Tensor | None, num_graphs: int
                       ) -> dict[str, torch.Tensor]:
        model = self.model
        centers, neighbors, vectors, _ = model.edges_within_cutoff(positions, edge_index, shifts)
        species = model.species_index[numbers]
        out, gradient = self._edge_terms(vectors, species, centers, neighbors)
        atom_energy = model.unstandardise(species, out)
        energy = structure_energies(atom_energy, batch, num_graphs)
        # F_i = -dE/dr_i: dE/dr is +g on an edge's neighbour and -g on its centre, so the
        # force is +g on the centre and -g on the neighbour; scaled like the energy.
        scale = model.energy_scale.to(gradient.dtype)
        forces = (torch.zeros_like(positions).index_add_(0, centers, gradient)
                  .index_add_(0, neighbors, -gradient)) * scale
        return {"energy": energy, "energies": atom_energy, "forces": forces}


def _gradient_disagreement(out: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                           parameters: list[torch.Tensor]) -> str | None:
    """Why the parameter gradients of the probe loss ``mean(F^2) + mean(e^2)`` (forces and
    atom energies) differ between ``out`` and ``reference`` beyond rounding, or None.
    ``reference``'s graph is kept (a failed check trains this batch on it); ``out``'s is
    used up."""
    def gradients(result: dict[str, torch.Tensor], keep: bool) -> list[torch.Tensor | None]:
        probe = (result["forces"] ** 2).mean() + (result["energies"] ** 2).mean()
        return list(torch.autograd.grad(probe, parameters, retain_graph=keep,
                                        allow_unused=True))

    if not parameters or not reference["forces"].requires_grad:
        return None
    got, expected = gradients(out, keep=False), gradients(reference, keep=True)
    pairs = [(g, e) for g, e in zip(got, expected, strict=True) if e is not None]
    if not pairs:
        return None
    scale = max(float(e.abs().max()) for _, e in pairs)
    error = max(float(((g if g is not None else torch.zeros_like(e)) - e).abs().max())
                for g, e in pairs)
    allowed = _GRADIENT_TOLERANCE.get(pairs[0][1].dtype, _GRADIENT_TOLERANCE[torch.float32])
    allowed *= max(scale, 1e-12)
    if error > allowed or not math.isfinite(error):
        return (f"parameter gradients differ by up to {error:.3g}, allowed {allowed:.3g} "
                f"(largest {scale:.3g})")
    return None


def _disagreement(out: dict[str, torch.Tensor], reference: dict[str, torch.Tensor],
                  n_atoms: int) -> str | None:
    """Why the compiled pass's ``out`` differs from the ``reference`` beyond rounding, or
    None where they agree (forces within ``_TOLERANCE`` plus as much relative to the largest
    reference force; energies within it per atom)."""
    forces, expected = out["forces"].detach(), reference["forces"].detach()
    tolerance = _TOLERANCE.get(expected.dtype, _TOLERANCE[torch.float32])
    if expected.numel():
        force_error = float((forces - expected).abs().max())
        allowed = tolerance * (1.0 + float(expected.abs().max()))
    else:  # no atoms
        force_error, allowed = 0.0, tolerance
    energy_error = float((out["energy"].detach() - reference["energy"].detach()).abs().max())
    if force_error > allowed or not math.isfinite(force_error):
        return f"forces differ by up to {force_error:.3g} eV/Å, allowed {allowed:.3g}"
    if energy_error > tolerance * n_atoms or not math.isfinite(energy_error):
        return (f"energies differ by up to {energy_error:.3g} eV, allowed "
                f"{tolerance * n_atoms:.3g}")
    return None
