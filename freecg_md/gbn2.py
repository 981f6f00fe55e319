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
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

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
            raise ValueError(f"radius indices {int(index.min())}..{int(index.max())} outside the "
                             f"{tuple(tables['getm0'].shape)} neck tables")
        return cls(*per_atom[:, :6].T.contiguous(), radius_index=index,
                   m0=tables["getm0"], d0=tables["getd0"], solute_dielectric=solute,
                   solvent_dielectric=solvent)


class _Pairs(NamedTuple):
    """What GBn2 needs of every pair i < j that does not depend on the positions, computed
    once: the atoms, their radii, the neck tables' entries in both directions, the neck's
    reach, and the product of the charges; and per atom what the Born radii need."""

    first: torch.Tensor            # (P,) i
    second: torch.Tensor           # (P,) j
    or_first: torch.Tensor         # (P,) or_i, nm
    or_second: torch.Tensor        # (P,) or_j
    sr_first: torch.Tensor         # (P,) sr_i
    sr_second: torch.Tensor        # (P,) sr_j
    m0_ij: torch.Tensor            # (P,) m0 for I_i: getm0(radindex_i, radindex_j)
    d0_ij: torch.Tensor            # (P,) d0 for I_i, nm
    m0_ji: torch.Tensor            # (P,) m0 for I_j
    d0_ji: torch.Tensor            # (P,) d0 for I_j
    neck_reach: torch.Tensor       # (P,) rho_i + rho_j + 0.68, nm
    charge_product: torch.Tensor   # (P,) q_i q_j, e^2
    charge: torch.Tensor           # (N,) e
    offset_radius: torch.Tensor    # (N,) or, nm
    alpha: torch.Tensor            # (N,)
    beta: torch.Tensor             # (N,)
    gamma: torch.Tensor            # (N,)


def _pairs(parameters: GBn2Parameters) -> _Pairs:
    p = parameters
    n = p.n_atoms
    i, j = torch.triu_indices(n, n, 1)
    index_i, index_j = p.radius_index[i], p.radius_index[j]
    rho = p.offset_radius + OFFSET
    # getm0(radindex1, radindex2) is m0[radindex2, radindex1] (Discrete2DFunction's order).
    return _Pairs(i, j, p.offset_radius[i], p.offset_radius[j], p.scaled_radius[i],
                  p.scaled_radius[j], p.m0[index_j, index_i], p.d0[index_j, index_i],
                  p.m0[index_i, index_j], p.d0[index_i, index_j], rho[i] + rho[j] + NECK_CUT,
                  p.charge[i] * p.charge[j], p.charge, p.offset_radius, p.alpha, p.beta,
                  p.gamma)


def gbn2_energy(positions: torch.Tensor, parameters: GBn2Parameters) -> torch.Tensor:
    """GBn2's energy (kJ/mol, a 0-d tensor) at ``positions`` ((N, 3), nm): the terms of the
    module docstring, differentiable."""
    p = parameters
    if positions.shape != (p.n_atoms, 3):
        raise ValueError(f"positions has shape {tuple(positions.shape)}; expected "
                         f"({p.n_atoms}, 3)")
    return _energy(positions, _pairs(p), _coulomb(p))


def _coulomb(parameters: GBn2Parameters) -> float:
    """k = 138.935485 (1/eps_in - 1/eps_out), kJ nm / (mol e^2)."""
    return COULOMB * (1 / parameters.solute_dielectric - 1 / parameters.solvent_dielectric)


def _descreening(r: torch.Tensor, own_radius: torch.Tensor, other_scaled: torch.Tensor
                 ) -> torch.Tensor:
    """Ivdw(r; or_i, sr_j): atom j's share of atom i's descreening integral."""
    upper = r + other_scaled
    lower = torch.maximum(own_radius, torch.abs(r - other_scaled))
    value = 0.5 * (1 / lower - 1 / upper
                   + 0.25 * (r - other_scaled ** 2 / r) * (1 / upper ** 2 - 1 / lower ** 2)
                   + 0.5 * torch.log(lower / upper) / r)
    return torch.where(r + other_scaled >= own_radius, value, torch.zeros_like(value))


def _neck(r: torch.Tensor, m0: torch.Tensor, d0: torch.Tensor, near: torch.Tensor
          ) -> torch.Tensor:
    """Ineck within the neck's reach (``near``), 0 beyond."""
    gap = r - d0
    value = m0 / (1 + 100 * gap ** 2 + 3e5 * gap ** 6)
    return torch.where(near, value, torch.zeros_like(value))


def _energy(positions: torch.Tensor, pairs: _Pairs, k: float) -> torch.Tensor:
    # Tensors in, tensor out: torch.compile guards on shapes and dtypes only, so one compiled
    # function serves every replica's Context and every System of the same size. Each
    # distance is computed once, for i < j, and serves both directions of the integral.
    a = pairs
    delta = positions[a.first] - positions[a.second]
    r = torch.sqrt((delta * delta).sum(-1))
    near = r <= a.neck_reach
    to_first = _descreening(r, a.or_first, a.sr_second) + NECK_SCALE * _neck(r, a.m0_ij,
                                                                             a.d0_ij, near)
    to_second = _descreening(r, a.or_second, a.sr_first) + NECK_SCALE * _neck(r, a.m0_ji,
                                                                              a.d0_ji, near)
    integral = torch.zeros_like(a.charge).index_add(0, a.first, to_first).index_add(
        0, a.second, to_second)
    psi = integral * a.offset_radius
    rho = a.offset_radius + OFFSET
    born = 1 / (1 / a.offset_radius
                - torch.tanh(a.alpha * psi - a.beta * psi ** 2 + a.gamma * psi ** 3) / rho)
    self_energy = (-0.5 * k * a.charge ** 2 / born).sum()
    surface = (28.3919551 * (rho + 0.14) ** 2 * (rho / born) ** 6).sum()
    bb = born[a.first] * born[a.second]
    f = torch.sqrt(r ** 2 + bb * torch.exp(-r ** 2 / (4 * bb)))
    pair = (-k * a.charge_product / f).sum()
    return self_energy + surface + pair


# (gradient with respect to the positions, energy) of _energy, eager; and its compiled form,
# built once per process at first use.
_energy_and_gradient = torch.func.grad_and_value(_energy)
_compiled: list[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = []
_compiled_lock = threading.Lock()


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
        self._pairs = _pairs(parameters)
        self._k = _coulomb(parameters)

    def energy_and_forces(self, positions_nm: np.ndarray) -> tuple[float, np.ndarray]:
        """(kJ/mol, (N, 3) kJ/mol/nm) at ``positions_nm`` ((N, 3) nm)."""
        p = self.parameters
        positions = torch.as_tensor(np.asarray(positions_nm, np.float64))
        if positions.shape != (p.n_atoms, 3):
            raise ValueError(f"positions has shape {tuple(positions.shape)}; expected "
                             f"({p.n_atoms}, 3)")
        arguments = (positions, self._pairs, self._k)
        if self.compile:
            with _compiled_lock:  # replicas may be stepped from several threads
                if not _compiled:
                    # One thread: inductor's parallel loops add the gradient's scattered
                    # terms in a varying order, and a run must resume bit for bit; the term
                    # is small. The C++ wrapper releases the interpreter lock while the
                    # compiled code runs (inductor's Python wrapper holds it), so replicas
                    # stepped from several threads compute their GBn2 at the same time.
                    _compiled.append(torch.compile(
                        _energy_and_gradient, dynamic=False,
                        options={"cpp.threads": 1, "cpp_wrapper": True}))
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
