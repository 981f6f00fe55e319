"""Command-line options shared by the simulation scripts: where a run starts, its
equilibration stage and the bond guard, and what they set in a :class:`RunConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ase import Atoms

from .guards import find_bonds
from .state import ReplicaState, repartition_hydrogen_masses

__all__ = ["add_start_options", "apply_hydrogen_mass", "initial_state", "resuming",
           "start_config"]


def add_start_options(parser: argparse.ArgumentParser, initial: str,
                      equilibration_steps: int, initial_help: str) -> None:
    """``--initial``, ``--equilibration-steps``, ``--equilibration-friction`` and
    ``--no-bond-guard``, with this script's defaults."""
    parser.add_argument("--initial", default=initial, help=initial_help)
    parser.add_argument("--equilibration-steps", type=int, default=equilibration_steps,
                        help="steps of equilibration before production: each replica at its "
                             "own temperature, no exchanges, frames in OUTPUT/equilibration/")
    parser.add_argument("--equilibration-friction", type=float, default=5.0,
                        help="Langevin gamma of the equilibration stage, 1/ps")
    parser.add_argument("--hydrogen-mass", type=float, default=None,
                        help="amu: hydrogen mass repartitioning (e.g. 3.024), the mass taken "
                             "from each hydrogen's heavy atom; allows a longer --timestep "
                             "(samples the same configurations, changes the dynamics)")
    parser.add_argument("--no-bond-guard", action="store_true",
                        help="do not stop when a bond of the starting structure is pulled "
                             "apart or pushed together (for models that do not hold the "
                             "molecule together, e.g. untrained ones)")


def start_config(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~freecg_md.md.RunConfig` fields those options set."""
    guard = ({"max_bond_stretch": None, "min_bond_compression": None}
             if args.no_bond_guard else {})
    return {"equilibration_steps": args.equilibration_steps,
            "equilibration_friction_per_ps": args.equilibration_friction, **guard}


def apply_hydrogen_mass(state: ReplicaState, args: argparse.Namespace) -> ReplicaState:
    """``state`` with ``--hydrogen-mass`` repartitioned (bonds from replica 0's start), its
    velocities scaled to keep each atom's kinetic energy; unchanged without the option."""
    if args.hydrogen_mass is None:
        return state
    bonds, _, _ = find_bonds(state.positions[0].numpy(), state.numbers.numpy(),
                             state.cell.numpy(), state.pbc.numpy())
    masses = repartition_hydrogen_masses(state.masses, state.numbers.numpy(), bonds,
                                         args.hydrogen_mass)
    return state.with_masses(masses)


def resuming(args: argparse.Namespace, output: Path) -> bool:
    """``--resume`` was given and either stage of the run in ``output`` has a checkpoint."""
    from .checkpoint import CHECKPOINT_NAME
    from .simulation import EQUILIBRATION_DIR

    return args.resume and any((Path(output) / stage / CHECKPOINT_NAME).is_file()
                               for stage in ("", EQUILIBRATION_DIR))


def initial_state(args: argparse.Namespace, atoms: Atoms, temperatures: list[float]
                  ) -> tuple[ReplicaState, bool, str]:
    """The replicas ``--initial`` names, with ``--hydrogen-mass`` applied: the state,
    whether velocities must be drawn, and where they start (see
    :func:`freecg_md.data.initial_replicas`)."""
    from ..data.starts import initial_replicas

    state, draw, start = initial_replicas(args.initial, atoms, temperatures)
    return apply_hydrogen_mass(state, args), draw, start
