"""GBn2 implicit solvent (Amber ``igb=8``) in torch: OpenMM's ``implicit/gbn2.xml`` force,
computed faster on a CPU.

OpenMM builds GBn2 as a ``CustomGBForce`` whose expressions its CPU platform evaluates pair by
pair; for chignolin (166 atoms, every pair, no cutoff) that force costs several times the rest
of amber14 together. Here the same expressions are array operations over all pairs, compiled
by ``torch.compile`` with their gradient, and the force enters the System as an
``openmm.PythonForce`` in place of the ``CustomGBForce``: the same energy to float64 rounding
(tested against OpenMM's Reference platform), so a run keeps its force field.

The terms, with distances r in nm, energies in kJ/mol, ``or_i`` the offset radius, ``sr_i``
the scaled offset radius, ``rho_i = or_i + offset`` (offset = 0.0195141 nm), and the
per-atom ``alpha, beta, gamma`` of GBn2 (Nguyen, Roe and Simmerling, JCTC 2013):

* the descreening integral over every other atom j (not symmetric in i and j)::

      I_i = sum_{j != i} [ Ivdw(r_ij; or_i, sr_j) + s_neck * Ineck_ij ]
      Ivdw = 0 if r + sr_j < or_i, else
             1/2 [ 1/L - 1/U + (r - sr_j^2 / r)(1/U^2 - 1/L^2) / 4 + ln(L/U) / (2 r) ]
      U = r + sr_j,  L = max(or_i, |r - sr_j|)
      Ineck = m0(i, j) / (1 + 100 (r - d0(i, j))^2 + 3e5 (r - d0(i, j))^6)
              for r <= rho_i + rho_j + 0.68, else 0;  s_neck = 0.826836

  with ``m0, d0`` looked up in GBn2's tables by the two atoms' radius indices;
* the effective Born radius ``B_i = 1 / (1/or_i - tanh(alpha psi - beta psi^2 + gamma psi^3)
  / rho_i)`` with ``psi = I_i or_i``;
* the energy, with ``k = 138.935485 (1/eps_in - 1/eps_out)``::

      E = sum_i -k q_i^2 / (2 B_i)                                  (self)
        + sum_i 28.3919551 (rho_i + 0.14)^2 (rho_i / B_i)^6          (ACE surface area)
        + sum_{i<j} -k q_i q_j / f_ij,  f = sqrt(r^2 + B_i B_j exp(-r^2 / (4 B_i B_j)))

:class:`GBn2Parameters` reads them from the force OpenMM built (and refuses any other
``CustomGBForce``), :func:`gbn2_energy` is the reference, :func:`with_torch_gbn2` swaps the
force in a System.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["GBn2Parameters", "TorchGBn2", "gbn2_energy", "with_torch_gbn2"]

OFFSET = 0.0195141
NECK_SCALE = 0.826836
NECK_CUT = 0.68
COULOMB = 138.935485  # kJ nm / (mol e^2)
PARAMETERS = ("charge", "or", "sr", "alpha", "beta", "gamma", "radindex")
# The expressions OpenMM's GBSAGBn2Force writes (openmm/app/internal/customgbforces.py) for
# SA="ACE", no cutoff, no salt: anything else is another force, which this module refuses
# rather than compute the wrong one. {dielectrics} stands for the constants OpenMM appends.
_COMPUTED = (
    ("I", "Ivdw+neckScale*Ineck;Ineck=step(radius1+radius2+neckCut-r)*getm0(radindex1,radindex2)"
          "/(1+100*(r-getd0(radindex1,radindex2))^2+0.3*1000000*(r-getd0(radindex1,radindex2))^6);"
          "Ivdw=select(step(r+sr2-or1), 0.5*(1/L-1/U+0.25*(r-sr2^2/r)*(1/(U^2)-1/(L^2))+0.5*"
          "log(L/U)/r), 0);U=r+sr2;L=max(or1, D);D=abs(r-sr2);radius1=or1+offset; "
          "radius2=or2+offset;neckScale=0.826836; neckCut=0.68; offset=0.0195141", "pair"),
    ("B", "1/(1/or-tanh(alpha*psi-beta*psi^2+gamma*psi^3)/radius);psi=I*or; radius=or+offset; "
          "offset=0.0195141", "single"),
)
_ENERGY = (
    ("-0.5*138.935485*(1/soluteDielectric-1/solventDielectric)*charge^2/B{dielectrics}",
     "single"),
    ("28.3919551*(radius+0.14)^2*(radius/B)^6; radius=or+offset{dielectrics}", "single"),
    ("-138.935485*(1/soluteDielectric-1/solventDielectric)*charge1*charge2/f;"
     "f=sqrt(r^2+B1*B2*exp(-r^2/(4*B1*B2))){dielectrics}", "pair"),
)
_DIELECTRICS = re.compile(r"; solventDielectric=([^;]+); soluteDielectric=([^;]+); kappa=0; "
                          r"offset=0\.0195141$")


@dataclass(frozen=True)
class GBn2Parameters:
    """GBn2's per-atom parameters and tables, as OpenMM's force holds them.

    Attributes
    ----------
    charge:
        (N,) e.
    offset_radius, scaled_radius:
        (N,) nm: ``or`` and ``sr``.
    alpha, beta, gamma:
        (N,) GBn2's rescaling coefficients.
    radius_index:
        (N,) int64: each atom's row and column in the neck tables.
    m0, d0:
        (R, R) the neck tables (``m0``; ``d0`` in nm), indexed ``[index_j, index_i]`` as
        OpenMM's ``Discrete2DFunction`` stores ``getm0(radindex1, radindex2)``.
    solute_dielectric, solvent_dielectric:
        Dielectric constants inside and outside the molecule.
    """

    charge: torch.Tensor
    offset_radius: torch.Tensor
    scaled_radius: torch.Tensor
    alpha: torch.Tensor
    beta: torch.Tensor
    gamma: torch.Tensor
    radius_index: torch.Tensor
    m0: torch.Tensor
    d0: torch.Tensor
    solute_dielectric: float
    solvent_dielectric: float

    @property
    def n_atoms(self) -> int:
        return int(self.charge.numel())

    @classmethod
    def from_force(cls, force: Any) -> GBn2Parameters:
        """The parameters of ``force``, an ``openmm.CustomGBForce`` built by OpenMM's
        ``implicit/gbn2.xml`` (no cutoff, ACE surface term, no salt); ValueError naming what
        differs for any other force."""
        import openmm

        if not isinstance(force, openmm.CustomGBForce):
            raise ValueError(f"force is a {type(force).__name__}; expected the CustomGBForce "
                             "of OpenMM's implicit/gbn2.xml")
        names = tuple(force.getPerParticleParameterName(k)
                      for k in range(force.getNumPerParticleParameters()))
        if names != PARAMETERS:
            raise ValueError(f"force has per-particle parameters {names}; expected GBn2's "
                             f"{PARAMETERS}")
        if force.getNonbondedMethod() != openmm.CustomGBForce.NoCutoff:
            raise ValueError("force uses a cutoff; only GBn2 without a cutoff is implemented")
        if force.getNumGlobalParameters() or force.getNumExclusions():
            raise ValueError("force has global parameters or exclusions; GBn2 as OpenMM builds "
                             "it has neither")
        kinds = {openmm.CustomGBForce.SingleParticle: "single",
                 openmm.CustomGBForce.ParticlePairNoExclusions: "pair"}
        computed = tuple((name, expression, kinds.get(kind)) for name, expression, kind in
                         (force.getComputedValueParameters(k)
                          for k in range(force.getNumComputedValues())))
        if computed != _COMPUTED:
            raise ValueError(f"force computes {[c[0] for c in computed]} with other "
                             "expressions than OpenMM's GBn2 (I, B)")
        terms = [force.getEnergyTermParameters(k) for k in range(force.getNumEnergyTerms())]
        match = _DIELECTRICS.search(terms[0][0]) if terms else None
        if match is None:
            raise ValueError("force's energy terms are not OpenMM's GBn2 without salt")
        solvent, solute = (float(value) for value in match.groups())
        suffix = match.group(0)
        expected = tuple((text.format(dielectrics=suffix), kind) for text, kind in _ENERGY)
        if tuple((expression, kinds.get(kind)) for expression, kind in terms) != expected:
            raise ValueError("force's energy terms are not OpenMM's GBn2 with the ACE surface "
                             "term, no cutoff and no salt")
        tables = {}
        for k in range(force.getNumTabulatedFunctions()):
            table = force.getTabulatedFunction(k)
            if not isinstance(table, openmm.Discrete2DFunction):
                raise ValueError(f"force's table {force.getTabulatedFunctionName(k)!r} is a "
                                 f"{type(table).__name__}; expected a Discrete2DFunction")
            xsize, ysize, values = table.getFunctionParameters()
            tables[force.getTabulatedFunctionName(k)] = torch.tensor(
                np.asarray(values, np.float64).reshape(ysize, xsize))
        if set(tables) != {"getm0", "getd0"}:
            raise ValueError(f"force has tables {sorted(tables)}; expected getd0 and getm0")
        per_atom = torch.tensor(np.array([force.getParticleParameters(i)
                                          for i in range(force.getNumParticles())],
                                         np.float64).reshape(-1, len(PARAMETERS)))
        index = per_atom[:, 6].round().long()
        if index.min() < 0 or index.max() >= min(tables["getm0"].shape):
            raise ValueError(f"radius indices {index.min()}..{index.max()} outside the "
                             f"{tuple(tables['getm0'].shape)} neck tables")
        return cls(*per_atom[:, :6].T.contiguous(), radius_index=index,
                   m0=tables["getm0"], d0=tables["getd0"], solute_dielectric=solute,
                   solvent_dielectric=solvent)


def gbn2_energy(positions: torch.Tensor, parameters: GBn2Parameters) -> torch.Tensor:
    """GBn2's energy (kJ/mol, a 0-d tensor) at ``positions`` ((N, 3), nm): the reference
    implementation of the terms in the module docstring, differentiable."""
    p = parameters
    if positions.shape != (p.n_atoms, 3):
        raise ValueError(f"positions has shape {tuple(positions.shape)}; expected "
                         f"({p.n_atoms}, 3)")
    return _energy(positions, p.charge, p.offset_radius, p.scaled_radius, p.alpha, p.beta,
                   p.gamma, p.radius_index, p.m0, p.d0, p.solute_dielectric,
                   p.solvent_dielectric)


def _energy(positions: torch.Tensor, charge: torch.Tensor, offset_radius: torch.Tensor,
            scaled_radius: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
            gamma: torch.Tensor, radius_index: torch.Tensor, m0: torch.Tensor,
            d0: torch.Tensor, solute_dielectric: float, solvent_dielectric: float
            ) -> torch.Tensor:
    # Tensors in, tensor out: torch.compile guards on shapes and dtypes only, so one compiled
    # function serves every replica's Context and every System of the same size.
    n = charge.numel()
    first, second = torch.triu_indices(n, n, 1, device=positions.device)
    # Every ordered pair (i, j), i != j: the first half i < j, then the same pairs reversed.
    i, j = torch.cat([first, second]), torch.cat([second, first])
    delta = positions[i] - positions[j]
    r = torch.sqrt((delta * delta).sum(-1))
    or_i, sr_j = offset_radius[i], scaled_radius[j]
    upper = r + sr_j
    lower = torch.maximum(or_i, torch.abs(r - sr_j))
    vdw = 0.5 * (1 / lower - 1 / upper + 0.25 * (r - sr_j ** 2 / r) * (1 / upper ** 2
                                                                       - 1 / lower ** 2)
                 + 0.5 * torch.log(lower / upper) / r)
    vdw = torch.where(r + sr_j >= or_i, vdw, torch.zeros_like(vdw))
    rho = offset_radius + OFFSET
    gap = r - d0[radius_index[j], radius_index[i]]
    neck = m0[radius_index[j], radius_index[i]] / (1 + 100 * gap ** 2 + 3e5 * gap ** 6)
    neck = torch.where(r <= rho[i] + rho[j] + NECK_CUT, neck, torch.zeros_like(neck))
    integral = torch.zeros(n, dtype=positions.dtype, device=positions.device).index_add(
        0, i, vdw + NECK_SCALE * neck)
    psi = integral * offset_radius
    born = 1 / (1 / offset_radius
                - torch.tanh(alpha * psi - beta * psi ** 2 + gamma * psi ** 3) / rho)
    k = COULOMB * (1 / solute_dielectric - 1 / solvent_dielectric)
    self_energy = (-0.5 * k * charge ** 2 / born).sum()
    surface = (28.3919551 * (rho + 0.14) ** 2 * (rho / born) ** 6).sum()
    r_pair = r[: first.numel()]
    bb = born[first] * born[second]
    f = torch.sqrt(r_pair ** 2 + bb * torch.exp(-r_pair ** 2 / (4 * bb)))
    pair = (-k * charge[first] * charge[second] / f).sum()
    return self_energy + surface + pair


# (gradient with respect to the positions, energy) of _energy, eager; and its compiled form,
# built once per process at first use.
_energy_and_gradient = torch.func.grad_and_value(_energy)
_compiled: list[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = []


class TorchGBn2:
    """``openmm.PythonForce``'s computation for GBn2: called with an OpenMM State, returns
    (energy in kJ/mol, forces (N, 3) in kJ/mol/nm), in float64.

    Parameters
    ----------
    parameters:
        From :meth:`GBn2Parameters.from_force`.
    compile:
        Evaluate energy and gradient through ``torch.compile`` (built at the first call);
        if compiling fails, a warning says so and the eager gradient is used.
    """

    def __init__(self, parameters: GBn2Parameters, compile: bool = True) -> None:
        self.parameters = parameters
        self.compile = compile

    def energy_and_forces(self, positions_nm: np.ndarray) -> tuple[float, np.ndarray]:
        """(kJ/mol, (N, 3) kJ/mol/nm) at ``positions_nm`` ((N, 3) nm)."""
        p = self.parameters
        positions = torch.as_tensor(np.asarray(positions_nm, np.float64))
        if positions.shape != (p.n_atoms, 3):
            raise ValueError(f"positions has shape {tuple(positions.shape)}; expected "
                             f"({p.n_atoms}, 3)")
        arguments = (positions, p.charge, p.offset_radius, p.scaled_radius, p.alpha, p.beta,
                     p.gamma, p.radius_index, p.m0, p.d0, p.solute_dielectric,
                     p.solvent_dielectric)
        if self.compile:
            if not _compiled:
                # One thread: inductor's parallel loops add the gradient's scattered terms in
                # a varying order, and a run must resume bit for bit; the term is small.
                _compiled.append(torch.compile(_energy_and_gradient, dynamic=False,
                                               options={"cpp.threads": 1}))
            try:
                gradient, energy = _compiled[0](*arguments)
            except Exception as error:  # no C++ compiler, or an inductor limitation
                warnings.warn(f"GBn2 runs uncompiled: torch.compile failed ({error})",
                              RuntimeWarning, stacklevel=2)
                self.compile = False
            else:
                return float(energy), -gradient.numpy()
        gradient, energy = _energy_and_gradient(*arguments)
        return float(energy), -gradient.numpy()

    def __call__(self, state: Any) -> tuple[float, np.ndarray]:
        from openmm import unit

        return self.energy_and_forces(
            state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))


def with_torch_gbn2(system: Any, compile: bool = True) -> Any:
    """A copy of the ``openmm.System`` ``system`` with its GBn2 ``CustomGBForce`` replaced by
    an ``openmm.PythonForce`` computing the same terms with :class:`TorchGBn2` (in the same
    force group). ValueError unless ``system`` has exactly one CustomGBForce and it is
    OpenMM's GBn2 (:meth:`GBn2Parameters.from_force`)."""
    import openmm

    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    found = [k for k, force in enumerate(copy.getForces())
             if isinstance(force, openmm.CustomGBForce)]
    if len(found) != 1:
        raise ValueError(f"system has {len(found)} CustomGBForce(s); expected one (GBn2)")
    old = copy.getForce(found[0])
    parameters = GBn2Parameters.from_force(old)
    if parameters.n_atoms != copy.getNumParticles():
        raise ValueError(f"the GBn2 force covers {parameters.n_atoms} particles of "
                         f"{copy.getNumParticles()}")
    force = openmm.PythonForce(TorchGBn2(parameters, compile=compile))
    force.setForceGroup(old.getForceGroup())
    copy.removeForce(found[0])
    copy.addForce(force)
    return copy
