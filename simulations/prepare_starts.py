"""Thermalised start states for REMD of chignolin: half folded, half unfolded, one per rung.

    python simulations/prepare_starts.py                      # the shipped start states
    python simulations/prepare_starts.py --resume             # continue an interrupted run
    python simulations/prepare_starts.py --from-starts old.npz --steps 4000   # a new model


Picks folded and unfolded conformations (by the Asp3 O - Gly7 N and Glu5 O - Thr8 N
distances, :mod:`simulations.pick_starts`) from the classical sampling in
``data/chignolin/frames_flexible.npz`` (unconstrained amber14/GBn2 frames), puts them on the
rungs of the default ladder alternately (rung 0 folded, rung 1 unfolded, ...), and runs
Langevin dynamics of every replica at its own rung's temperature with the model, without
exchanges, for ``--steps`` steps. The final positions and velocities, with the model's
fingerprint (:func:`freecg_md.io.model_fingerprint`), the temperatures and the diagnostics of
each replica (mean kinetic temperature over the last half of the run, the drift of its
potential energy over the last half, and where pymbar's equilibration detection puts the
start of its stationary part) go to ``--out`` (an ``.npz``; see
:func:`freecg_md.data.load_chignolin_starts`). The run directory keeps the frames and logs.

``--from-starts`` re-equilibrates an earlier start-state file (positions and velocities, on
the same ladder) with ``--model`` instead of picking classical frames: the way to move the
start states to a new model, whose landscape differs from the old one's in detail but not
in its basins. The earlier file's record is kept under ``equilibration["previous"]``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # libgomp spin-waiting stalls shared CPUs

import numpy as np  # noqa: E402
import torch  # noqa: E402

from freecg_md.analysis.rundir import read_run  # noqa: E402
from freecg_md.analysis.statistics import detect_equilibration  # noqa: E402
from freecg_md.analysis.structure import chignolin_cvs  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402
from freecg_md.data.starts import load_start_states, save_start_states  # noqa: E402
from freecg_md.io import model_fingerprint  # noqa: E402
from freecg_md.md import (  # noqa: E402
    FreeCGPotential,
    ReplicaState,
    RunConfig,
    SimulationError,
    run_replicas,
    temperature_ladder,
)
from freecg_md.md.checkpoint import CHECKPOINT_NAME, load_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pick_starts import pick, read_positions  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Equilibrate folded and unfolded chignolin start states, one per rung.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "chignolin.pt"))
    parser.add_argument("--frames", type=Path,
                        default=REPO / "data" / "chignolin" / "frames_flexible.npz")
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--t-min", type=float, default=300.0, help="K")
    parser.add_argument("--t-max", type=float, default=450.0, help="K")
    parser.add_argument("--steps", type=int, default=12000, help="equilibration steps")
    parser.add_argument("--timestep", type=float, default=1.0, help="fs")
    parser.add_argument("--friction", type=float, default=1.0, help="Langevin gamma, 1/ps")
    parser.add_argument("--report-interval", type=int, default=50, help="steps")
    parser.add_argument("--checkpoint-interval", type=int, default=500, help="steps")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=REPO / "runs" / "starts_equilibration")
    parser.add_argument("--from-starts", type=Path, default=None,
                        help="re-equilibrate this start-state file (.npz, same ladder) instead "
                             "of picking frames of --frames")
    parser.add_argument("--out", type=Path,
                        default=REPO / "freecg_md" / "data" / "chignolin_starts.npz")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--no-bond-guard", action="store_true",
                        help="do not stop when a bond is pulled apart or pushed together (for "
                             "models that do not hold the molecule together)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chignolin = load_chignolin()
    ladder = temperature_ladder(args.t_min, args.t_max, args.replicas).tolist()
    native = chignolin_cvs(chignolin.atoms.positions[None], chignolin.topology)[0]
    state = ReplicaState.from_atoms(chignolin.atoms, args.replicas)
    previous: dict | None = None
    if args.from_starts is not None:
        earlier = load_start_states(args.from_starts)
        positions, velocities = earlier.for_temperatures(ladder)
        if earlier.n_states != args.replicas or velocities is None:
            raise SystemExit(
                f"error: --from-starts {args.from_starts} holds {earlier.n_states} states at "
                f"{np.round(earlier.temperatures, 1).tolist()} K; expected {args.replicas} "
                f"at the ladder {np.round(ladder, 1).tolist()} K")
        state.positions = torch.tensor(positions)
        state.velocities = torch.tensor(velocities)
        started_unfolded = earlier.started_unfolded
        order = list(earlier.info.get("source_frames", range(args.replicas)))
        previous = {"file": args.from_starts.name,
                    "model_fingerprint": earlier.model_fingerprint, **earlier.info}
        initial = (f"the states of {args.from_starts} (equilibrated with the model of "
                   f"fingerprint {earlier.model_fingerprint[:12]}...)")
    else:
        positions = read_positions(args.frames)
        cvs = chignolin_cvs(positions, chignolin.topology)
        n_unfolded = args.replicas // 2
        chosen = pick(cvs, native, args.replicas - n_unfolded, n_unfolded, 1.0, 4.0, args.seed)
        folded = chosen[: args.replicas - n_unfolded]
        unfolded = chosen[args.replicas - n_unfolded:]
        # Alternate along the ladder, so that both basins start at low and at high temperature.
        order = [folded[k // 2] if k % 2 == 0 else unfolded[k // 2]
                 for k in range(args.replicas)]
        state.positions = torch.tensor(positions[order], dtype=torch.float64)
        started_unfolded = np.arange(args.replicas) % 2 == 1
        initial = f"frames {order} of {args.frames}"

    config = RunConfig(temperatures=ladder, n_steps=args.steps, output_dir=str(args.output),
                       friction_per_ps=args.friction, timestep_fs=args.timestep,
                       report_interval=args.report_interval,
                       checkpoint_interval=args.checkpoint_interval, seed=args.seed,
                       draw_velocities=args.from_starts is None,
                       **({"max_bond_stretch": None, "min_bond_compression": None}
                          if args.no_bond_guard else {}))
    resume = args.resume and (args.output / CHECKPOINT_NAME).is_file()
    potential = FreeCGPotential(args.model, chignolin.atoms.numbers)
    metadata = {"model": str(args.model), "model_fingerprint": model_fingerprint(args.model),
                "initial": initial}
    print(f"equilibrating {args.replicas} start states at {', '.join(f'{t:.1f}' for t in ladder)}"
          f" K for {args.steps} steps of {args.timestep} fs from {initial}")
    try:
        run_replicas(potential, state, config, topology=chignolin.topology,
                     bond_reference=chignolin.native_positions, resume=resume,
                     metadata=metadata)
    except SimulationError as error:
        print(f"error: the run stopped: {error}", file=sys.stderr)
        return 1
    finally:
        potential.close()

    checkpoint = load_checkpoint(args.output / CHECKPOINT_NAME)
    run = read_run(args.output)
    half = run.steps > run.steps.max() / 2
    # eV/ps: a replica still relaxing in the model's landscape drifts downhill.
    drift = np.array([np.polyfit(run.time_ps[half], run.energies[half, k], 1)[0]
                      for k in range(args.replicas)])
    stationary_from = np.array([run.time_ps[detect_equilibration(run.energies[:, k]).start]
                                for k in range(args.replicas)])
    final_cvs = chignolin_cvs(checkpoint.positions.numpy(), chignolin.topology)
    save_start_states(
        args.out, positions=checkpoint.positions.numpy(),
        velocities=checkpoint.velocities.numpy(), temperatures=np.asarray(ladder),
        cvs=final_cvs, started_unfolded=started_unfolded,
        source_frames=np.asarray(order), model_fingerprint=model_fingerprint(args.model),
        equilibration={"steps": checkpoint.step, "timestep_fs": args.timestep,
                       "friction_per_ps": args.friction, "seed": args.seed,
                       **({"previous": previous} if previous else {"frames": str(
                           args.frames.relative_to(REPO) if args.frames.is_relative_to(REPO)
                           else args.frames)})},
        mean_temperature_last_half=run.kinetic_temperature[half].mean(axis=0),
        energy_drift_last_half_eV_per_ps=drift, energy_stationary_from_ps=stationary_from)
    for k, kelvin in enumerate(ladder):
        basin = "unfolded" if started_unfolded[k] else "folded"
        print(f"rung {k} ({kelvin:.1f} K): started {basin} "
              f"(frame {order[k]}), now at ({final_cvs[k, 0]:.2f}, {final_cvs[k, 1]:.2f}) Å; "
              f"mean T over the last half {run.kinetic_temperature[half, k].mean():.1f} K, "
              f"energy drift {drift[k]:+.3f} eV/ps, stationary from {stationary_from[k]:.1f} "
              "ps")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
