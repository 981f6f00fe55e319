"""Replica-exchange MD of chignolin (CLN025, 166 atoms) with the shipped FreeCG model.

    freecg-md remd                      # the short default run
    freecg-md remd --steps 200000 --output runs/remd_long
    freecg-md remd --output runs/remd_long --resume   # continue it
    freecg-md remd --initial starts.extxyz  # replicas from conformations

All replicas are evaluated by one FreeCGPotential per step (one forward pass on a GPU, one
replica per pass on a CPU, which is faster there). Every ``--exchange-interval`` steps
neighbouring temperatures of the geometric ladder try to swap (Metropolis on the potential
energies; temperatures move, coordinates stay). The run directory holds the topology, one
DCD per replica (mdtraj reads them), ``frames.csv`` to demultiplex them by temperature,
``log.csv``, ``exchange.csv``, ``remd_stats.json``, ``config.json`` and a checkpoint; at the
end the run is assessed (``convergence.json``) and the landscape, melting curve and exchange
diagnostics are drawn into ``plots/``, with basin depths only for a converged run.

Defaults: 8 replicas from 300 to 450 K starting from the shipped start states (equilibrated
with the shipped model at those temperatures), hydrogens of 3.024 amu (the mass taken from
each hydrogen's heavy atom, every atom's kinetic energy kept), 200 steps of equilibration
without exchanges, then 1,000 steps of 2 fs with exchanges every 10 steps: about 5 minutes
on 2 CPU cores. ``--timestep 1 --hydrogen-mass 1.008`` runs natural masses at 1 fs. Pass
``--resume`` to continue a run from whichever stage it was in (or to extend it with a larger
``--steps``); without a checkpoint it starts a new one.

Launched by torchrun, the replicas are spread over the processes (gloo on CPUs, nccl and one
GPU per process on GPUs) with the same results as one process for the same seed::

    torchrun --nproc-per-node 4 simulations/remd_chignolin.py --replicas 16 --steps 100000
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from ..analysis.reports import basin_summary, landscape_report, remd_report
from ..analysis.rundir import read_run
from ..data.molecules import load_chignolin
from ..io import shipped_model
from ..md import (
    FreeCGPotential,
    SerialComm,
    init_distributed,
    local_device,
    temperature_ladder,
)
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
from ..md.remd import check_ladder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Replica-exchange MD of chignolin with a FreeCG model (ASE units).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_options(parser, str(shipped_model("chignolin")))
    parser.add_argument("--replicas", type=int, default=8, help="replicas = temperatures")
    parser.add_argument("--t-min", type=float, default=300.0, help="lowest temperature, K")
    parser.add_argument("--t-max", type=float, default=450.0, help="highest temperature, K")
    parser.add_argument("--temperatures", type=float, nargs="+",
                        help="explicit ladder in K (overrides --replicas/--t-min/--t-max)")
    parser.add_argument("--exchange-interval", type=int, default=10, help="steps")
    # 2 fs with hydrogens of 3.024 amu: twice the simulated time per step of 1 fs with
    # natural masses; the same configurations sampled (mass repartitioning changes only the
    # dynamics), the time step checked against 1 fs in studies/chignolin_remd_hmr/.
    add_engine_options(parser, steps=1000, output=str(Path("runs") / "remd_chignolin"),
                       timestep=2.0)
    add_start_options(parser, initial="shipped", equilibration_steps=200, hydrogen_mass=3.024,
                      initial_help=(
        "'shipped': the shipped start states, equilibrated with the shipped model at each "
        "temperature of the default ladder, half folded, half unfolded (velocities used "
        "when the ladder matches); 'native': the crystal structure for all; a start-state "
        ".npz; or any file ASE reads (extxyz, pdb, traj...): replica r starts from frame "
        "r mod n_frames"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    problem = model_error(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    model = model_argument(args)
    # Under torchrun each process takes a block of the replicas.
    comm = init_distributed() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else SerialComm()
    device = device_argument(args.device)
    if device == "cuda" and comm.world_size > 1:
        device = local_device(comm)
    say = print if comm.is_writer else (lambda *_, **__: None)
    chignolin = load_chignolin()
    output = Path(args.output)
    try:
        # The ladder and the run's settings are checked before any start is prepared.
        ladder = (args.temperatures if args.temperatures
                  else temperature_ladder(args.t_min, args.t_max, args.replicas).tolist())
        check_ladder(ladder)
    except ValueError as error:
        print(f"error: the temperature ladder (--temperatures, or --t-min, --t-max and "
              f"--replicas): {error}", file=sys.stderr)
        return 2
    resume = resuming(args, output)
    try:
        state, draw, start = initial_state(args, chignolin.atoms, ladder)
    except (OSError, ValueError) as error:
        print(f"error: --initial {args.initial}: {error}", file=sys.stderr)
        return 2
    try:
        config = engine_config(args, ladder, output, device, draw,
                               exchange_interval=args.exchange_interval)
    except (TypeError, ValueError) as error:  # RunConfig names the field
        print(f"error: {error}", file=sys.stderr)
        return 2
    potential = FreeCGPotential(model, chignolin.atoms.numbers, device=device,
                                dtype=args.dtype, compile=args.compile,
                                matmul_precision=args.matmul_precision)
    execution = potential.execution(state.positions[0], config.n_replicas)
    say(f"REMD of chignolin: {config.n_replicas} replicas at "
        f"{', '.join(f'{t:.0f}' for t in ladder)} K from {start}; "
        f"{args.equilibration_steps} steps of equilibration, then {args.steps} steps of "
        f"{args.timestep} fs on {device} ({args.dtype}); model {model}; "
        f"{'resuming' if resume else 'writing'} {output}"
        + (f"; {comm.world_size} processes" if comm.world_size > 1 else "")
        + f"\nexecution: {execution['description']}")
    started = time.perf_counter()
    result = run_reporting_errors(potential, state, config, chignolin.topology,
                                  chignolin.native_positions, resume,
                                  {**model_metadata(args), "initial": start,
                                   "hydrogen_mass": args.hydrogen_mass, "execution": execution},
                                  comm=comm)
    if isinstance(result, int):
        return result
    say(f"ran {result.steps_run} steps in {result.wall_seconds:.0f} s: "
        f"{result.ns_per_day:.3g} ns/day per replica "
        f"({result.ns_per_day * config.n_replicas:.3g} ns/day summed over replicas)")
    if result.exchange is not None:
        rates = result.exchange.acceptance_rates()
        say("exchange acceptance per pair: "
            + ", ".join(f"{a:.0f}-{b:.0f} K {r:.2f}"
                        for a, b, r in zip(ladder[:-1], ladder[1:], rates, strict=True)))
        say(f"round trips per replica: {result.exchange.round_trips.tolist()}")
    say(f"neighbour lists: {result.neighbor_stats}")
    say(f"outputs: {output}/ (topology.pdb, replica_*.dcd, frames.csv, log.csv, "
        "exchange.csv, remd_stats.json, config.json, checkpoint.pt)")

    if not args.no_plots and comm.is_writer:
        run = read_run(output)
        plots = output / "plots"
        landscape = landscape_report(run, plots)
        remd = remd_report(run, plots)
        (output / "convergence.json").write_text((plots / "convergence.json").read_text())
        say(f"landscape at {ladder[0]:.0f} K: {landscape['verdict']}")
        for method, basins in landscape["basins"].items():
            say(f"landscape ({method}): {basin_summary(basins)}")
        say(f"plots: {landscape['png']}, {remd['png']} (numbers beside them as CSV)")
    say(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
