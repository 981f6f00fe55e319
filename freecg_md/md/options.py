"""Command-line options shared by the simulation scripts: the model (or committee), where a
run starts, its equilibration stage and the bond guard, and what they set in a
:class:`RunConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from ase import Atoms

from .guards import find_bonds
from .state import ReplicaState, repartition_hydrogen_masses

__all__ = ["add_model_options", "add_start_options", "apply_hydrogen_mass", "device_argument",
           "add_engine_options", "initial_state", "model_argument", "model_error",
           "model_metadata", "resuming", "run_reporting_errors", "start_config"]


def add_model_options(parser: argparse.ArgumentParser, default: str) -> None:
    """``--model`` (one file, or several for a committee) and ``--max-force-disagreement``."""
    parser.add_argument("--model", nargs="+", default=[default],
                        help="FreeCG model file; several make a committee, whose mean drives "
                             "the MD and whose force disagreement is logged per frame")
    parser.add_argument("--max-force-disagreement", type=float, default=None,
                        help="eV/Å: with a committee, stop the run when a replica's largest "
                             "per-atom force disagreement exceeds this (default: only log it)")


def add_engine_options(parser: argparse.ArgumentParser, steps: int, output: str,
                       timestep: float = 1.0) -> None:
    """The options every MD command shares: ``--steps`` (production steps, default
    ``steps``), ``--timestep`` (fs, default ``timestep``), the friction, reporting and
    checkpoint intervals, device, dtype, threads, torch.compile, ``--output`` (default
    ``output``), ``--seed``, ``--resume`` and ``--no-plots``."""
    parser.add_argument("--steps", type=int, default=steps, help="production MD steps")
    parser.add_argument("--timestep", type=float, default=timestep, help="fs")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin gamma, 1/ps")
    parser.add_argument("--report-interval", type=int, default=5,
                        help="steps between saved frames and log lines")
    parser.add_argument("--checkpoint-interval", type=int, default=100, help="steps")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'cuda:1'...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the model: minutes to compile, then faster steps")
    parser.add_argument("--matmul-precision", default="float32",
                        choices=["float32", "bfloat16", "tf32"],
                        help="reduced-precision products: bfloat16 on CPUs with bfloat16 "
                             "units, tf32 on CUDA (benchmarks/README.md, reduced precision)")
    parser.add_argument("--output", default=output, help="run directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --output from its checkpoint")
    parser.add_argument("--no-plots", action="store_true", help="skip the analysis at the end")


def model_error(args: argparse.Namespace) -> str | None:
    """Why ``--model`` cannot be used (a missing file, a limit without a committee), or
    None."""
    missing = [path for path in args.model if not Path(path).is_file()]
    if missing:
        return (f"no model file at {', '.join(missing)}; train one (see models/README.md) "
                "or pass --model")
    if args.max_force_disagreement is not None and len(args.model) < 2:
        return "--max-force-disagreement needs a committee: pass two or more --model files"
    return None


def model_argument(args: argparse.Namespace) -> str | list[str]:
    """What :class:`~freecg_md.md.FreeCGPotential` takes: the path, or the committee's."""
    return args.model[0] if len(args.model) == 1 else list(args.model)


def model_metadata(args: argparse.Namespace) -> dict[str, Any]:
    """The model file(s) and fingerprint(s) a run records in its ``config.json``."""
    from ..io import model_fingerprint

    if len(args.model) == 1:
        return {"model": str(args.model[0]), "model_fingerprint": model_fingerprint(args.model[0])}
    return {"model": [str(p) for p in args.model],
            "model_fingerprint": [model_fingerprint(p) for p in args.model]}


def add_start_options(parser: argparse.ArgumentParser, initial: str,
                      equilibration_steps: int, initial_help: str,
                      hydrogen_mass: float | None = None) -> None:
    """``--initial``, ``--equilibration-steps``, ``--equilibration-friction``,
    ``--hydrogen-mass`` and ``--no-bond-guard``, with this script's defaults."""
    parser.add_argument("--initial", default=initial, help=initial_help)
    parser.add_argument("--equilibration-steps", type=int, default=equilibration_steps,
                        help="steps of equilibration before production: each replica at its "
                             "own temperature, no exchanges, frames in OUTPUT/equilibration/")
    parser.add_argument("--equilibration-friction", type=float, default=5.0,
                        help="Langevin gamma of the equilibration stage, 1/ps")
    parser.add_argument("--hydrogen-mass", type=float, default=hydrogen_mass,
                        help="amu: hydrogen mass repartitioning (e.g. 3.024), the mass taken "
                             "from each hydrogen's heavy atom; allows a longer --timestep "
                             "(samples the same configurations, changes the dynamics); "
                             "1.008 keeps the natural masses")
    parser.add_argument("--no-bond-guard", action="store_true",
                        help="do not stop when a bond of the starting structure is pulled "
                             "apart or pushed together (for models that do not hold the "
                             "molecule together, e.g. untrained ones)")


def start_config(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~freecg_md.md.RunConfig` fields those options set."""
    guard = ({"max_bond_stretch": None, "min_bond_compression": None}
             if args.no_bond_guard else {})
    return {"equilibration_steps": args.equilibration_steps,
            "equilibration_friction_per_ps": args.equilibration_friction,
            "max_force_disagreement": getattr(args, "max_force_disagreement", None), **guard}


def engine_config(args: argparse.Namespace, temperatures: list[float], output: Path,
                  device: str, draw_velocities: bool, **extra: Any) -> Any:
    """The :class:`~freecg_md.md.RunConfig` of a command's engine and start options, at
    ``temperatures`` (K) into ``output``; ``extra`` other fields (``exchange_interval``).
    ValueError or TypeError naming the field a value does not suit."""
    from .simulation import RunConfig

    return RunConfig(temperatures=temperatures, n_steps=args.steps, output_dir=str(output),
                     friction_per_ps=args.friction, timestep_fs=args.timestep,
                     report_interval=args.report_interval,
                     checkpoint_interval=args.checkpoint_interval, seed=args.seed,
                     device=device, dtype=args.dtype, draw_velocities=draw_velocities,
                     **start_config(args), **extra)


def apply_hydrogen_mass(state: ReplicaState, args: argparse.Namespace) -> ReplicaState:
    """``state`` with ``--hydrogen-mass`` repartitioned (bonds from replica 0's start), its
    velocities scaled to keep each atom's kinetic energy; unchanged without the option."""
    if args.hydrogen_mass is None:
        return state
    hydrogens = state.numbers == 1
    if bool(torch.all(state.masses[hydrogens] == args.hydrogen_mass)):
        return state  # e.g. 1.008 for natural masses: nothing to move, no bonds needed
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


def device_argument(name: str) -> str:
    """``--device``: ``"auto"`` is a CUDA GPU where torch sees one, else the CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_reporting_errors(potential: Any, state: ReplicaState, config: Any, topology: Any,
                         bond_reference: Any, resume: bool, metadata: dict[str, Any],
                         **options: Any) -> Any:
    """:func:`~freecg_md.md.run_replicas` as a command runs it: its result, or the exit code
    after one line on stderr (2 for a refused run: an existing run directory, a missing
    checkpoint, a configuration refused; 1 for a run the guards stopped, whose frames and
    checkpoint up to then are kept). The potential's worker processes, if it has any, are
    closed either way, before any plots."""
    import sys

    from .simulation import SimulationError, run_replicas

    try:
        return run_replicas(potential, state, config, topology=topology,
                            bond_reference=bond_reference, resume=resume, metadata=metadata,
                            **options)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        # An existing run, a missing checkpoint, a refused configuration (a time step too
        # long for the masses, atoms the potential was not built for...).
        print(f"error: {error}", file=sys.stderr)
        return 2
    except SimulationError as error:
        print(f"error: the run stopped: {error}\nEverything up to the last checkpoint is in "
              f"{config.output_dir}.", file=sys.stderr)
        return 1
    finally:
        close = getattr(potential, "close", None)  # FreeCGPotential's worker processes
        if close is not None:
            close()
