"""Command-line options shared by the simulation scripts: where a run starts, its
equilibration stage and the bond guard, and what they set in a :class:`RunConfig`."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_start_options", "start_config"]


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
