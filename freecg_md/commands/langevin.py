"""Independent Langevin trajectories of chignolin from the native structure, as one batch.

    freecg-md langevin                  # 10 trajectories at 300 K
    freecg-md langevin --steps 100000 --output runs/langevin_long

The FreeCG paper's RMSD study: N trajectories (default 10) start from the native structure
at one temperature, each with its own random stream (seeded from ``--seed`` and its index)
and its own Maxwell-Boltzmann velocities, and are advanced together by one FreeCGPotential.
The run directory has one DCD per trajectory; at the end ``plots/rmsd.png`` shows the mean
Cα RMSD to the native structure with a ±1 standard deviation band (numbers in rmsd.csv).

Defaults: 10 trajectories, 300 steps of 1 fs, no equilibration stage: a few minutes on 2
CPU cores. ``--initial`` and the equilibration options start them elsewhere (the shipped
start states, a file of conformations). ``--resume`` continues (or extends) a run from its
checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ..analysis.reports import rmsd_report
from ..analysis.rundir import read_run
from ..data.molecules import load_chignolin
from ..io import shipped_model
from ..md import FreeCGPotential
from ..md.options import (
    add_engine_options,
    add_model_options,
    add_start_options,
    device_argument,
    engine_config,
    initial_state,
    model_argument,
    model_error,
    model_metadata,
    resuming,
    run_reporting_errors,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Independent Langevin trajectories of chignolin with a FreeCG model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(parser, str(shipped_model("chignolin")))
    parser.add_argument("--trajectories", type=int, default=10)
    parser.add_argument("--temperature", type=float, default=300.0, help="K")
    add_engine_options(parser, steps=300, output=str(Path("runs") / "langevin_chignolin"))
    add_start_options(parser, initial="native", equilibration_steps=0, initial_help=(
        "'native': the crystal structure for all (the RMSD study); 'shipped': the shipped "
        "start states (trajectory r from state r mod 8); a start-state .npz; or any file "
        "ASE reads"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = model_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    device = device_argument(args.device)
    output = Path(args.output)
    resume = resuming(args, output)
    chignolin = load_chignolin()
    if args.trajectories < 1 or not args.temperature > 0:
        print(f"error: --trajectories {args.trajectories} --temperature {args.temperature}: "
              "expected at least one trajectory at a positive temperature", file=sys.stderr)
        return 2
    temperatures = [args.temperature] * args.trajectories
    try:
        state, draw, start = initial_state(args, chignolin.atoms, temperatures)
    except (OSError, ValueError) as error:
        print(f"error: --initial {args.initial}: {error}", file=sys.stderr)
        return 2
    try:
        config = engine_config(args, temperatures, output, device, draw)
    except (TypeError, ValueError) as error:  # RunConfig names the field
        print(f"error: {error}", file=sys.stderr)
        return 2
    potential = FreeCGPotential(model_argument(args), chignolin.atoms.numbers, device=device,
                                dtype=args.dtype, compile=args.compile,
                                matmul_precision=args.matmul_precision)
    execution = potential.execution(state.positions[0], config.n_replicas)
    print(f"Langevin MD of chignolin: {args.trajectories} trajectories at "
          f"{args.temperature:.0f} K from {start}, {args.equilibration_steps} steps of "
          f"equilibration, then {args.steps} of {args.timestep} fs on {device}; "
          f"{'resuming' if resume else 'writing'} {output}\nexecution: "
          f"{execution['description']}")
    result = run_reporting_errors(potential, state, config, chignolin.topology,
                                  chignolin.native_positions, resume,
                                  {**model_metadata(args), "initial": start,
                                   "hydrogen_mass": args.hydrogen_mass, "execution": execution})
    if isinstance(result, int):
        return result
    print(f"ran {result.steps_run} steps in {result.wall_seconds:.0f} s: "
          f"{result.ns_per_day:.3g} ns/day per trajectory")
    print(f"outputs: {output}/ (topology.pdb, replica_*.dcd, log.csv, config.json, "
          "checkpoint.pt)")
    if not args.no_plots:
        report = rmsd_report(read_run(output), output / "plots")
        print(f"Cα RMSD to native at the end: {report['final_mean_A']:.2f} ± "
              f"{report['final_std_A']:.2f} Å; plot {report['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
