"""Throughput of 8 replicas of chignolin (166 atoms) under the default FreeCG, and the
engine's overhead.

Prints, from one interleaved run:

* ms per force evaluation of all 8 replicas: FreeCGPotential with all replicas in one pass,
  with one replica per pass one after another in this process (``workers=1``), and with its
  defaults (on a CPU one replica per pass, in as many worker processes as intra-op threads,
  each with a contiguous block of the replicas and one thread),
  against 8 sequential FreeCGCalculator calls (one calculator per replica), with the
  speed-ups;
* the engine overhead: the wall time of a BAOAB step, and of a step of the full run loop
  (guards; reports and exchanges every 5 steps; one checkpoint, at the last step), minus the
  time spent in the force evaluation, in ms and as a share of the step.

Every configuration is timed in turn within each repeat, so load from other jobs on a shared
machine hits them alike. Positions move by an MD step's worth (0.005 Å rms) between calls, so
neighbour lists are reused as they are in MD.

On CPUs with glibc, tensors above malloc's mmap threshold (at most 32 MiB) are mapped afresh
and page-faulted on every call. The worker processes of the default configuration serve
them from the heap instead (:func:`freecg_md.keep_freed_memory`);
``--no-mmap`` does the same in this process (the batched, in-process and calculator rows).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_replicas.py --threads 2
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_replicas.py --threads 2 --no-mmap
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402

from freecg_md import FreeCG, FreeCGCalculator, keep_freed_memory, load_model  # noqa: E402
from freecg_md.md import (  # noqa: E402
    FreeCGPotential,
    ReplicaState,
    RunConfig,
    baoab_step,
    replica_generators,
    run_replicas,
    temperature_ladder,
)


def chignolin_or_stand_in(seed: int) -> Atoms:
    """Chignolin when the data module is there, else 166 random atoms at protein density."""
    try:
        from freecg_md.data.molecules import load_chignolin
    except ImportError:
        rng = np.random.default_rng(seed)
        numbers = rng.choice([1, 6, 7, 8], size=166, p=[0.44, 0.37, 0.07, 0.12])
        box = (166 / 0.1) ** (1 / 3)  # ~0.1 atoms/Å^3, a protein's density
        positions = []
        while len(positions) < 166:
            trial = rng.uniform(0, box, 3)
            if all(np.linalg.norm(trial - p) > 1.0 for p in positions):
                positions.append(trial)
        return Atoms(numbers=numbers, positions=np.array(positions))
    return load_chignolin().atoms


class TimedPotential:
    """Wraps a potential and records the seconds of every ``evaluate`` call."""

    def __init__(self, inner: FreeCGPotential) -> None:
        self.inner = inner
        self.calls: list[float] = []
        self.dtype, self.device = inner.dtype, inner.device

    def evaluate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        try:
            return self.inner.evaluate(positions)
        finally:
            self.calls.append(time.perf_counter() - start)


def time_evaluations(model: FreeCG, atoms: Atoms, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    positions = np.stack([atoms.positions + rng.normal(scale=0.02, size=atoms.positions.shape)
                          for _ in range(args.replicas)])
    batched = FreeCGPotential(model, atoms.numbers, device=args.device, replicas_per_pass=None)
    whole = copy.deepcopy(model)
    whole.edge_chunk_size = None
    batched_whole = FreeCGPotential(whole, atoms.numbers, device=args.device,
                                    replicas_per_pass=None)
    one_per_pass = FreeCGPotential(model, atoms.numbers, device=args.device,
                                   replicas_per_pass=1, workers=1)
    default = FreeCGPotential(model, atoms.numbers, device=args.device)
    walkers = [atoms.copy() for _ in range(args.replicas)]
    for walker in walkers:
        walker.calc = FreeCGCalculator(model, device=args.device)
    samples: dict[str, list[float]] = {"batched": [], "batched_whole": [], "one_per_pass": [],
                                       "default": [], "sequential": []}
    for repeat in range(args.warmup + args.repeats):
        positions += rng.normal(scale=args.step / np.sqrt(3), size=positions.shape)
        seconds = {}
        for name, potential in (("batched", batched), ("batched_whole", batched_whole),
                                ("one_per_pass", one_per_pass), ("default", default)):
            start = time.perf_counter()
            potential.evaluate(torch.from_numpy(positions))  # CPU results: synchronised
            seconds[name] = time.perf_counter() - start
        start = time.perf_counter()
        for walker, replica_positions in zip(walkers, positions, strict=True):
            walker.positions = replica_positions
            walker.get_forces()
        seconds["sequential"] = time.perf_counter() - start
        if repeat >= args.warmup:
            for name, value in seconds.items():
                samples[name].append(value)
    default.close()
    return {key: statistics.median(values) * 1e3 for key, values in samples.items()}


def default_label(args: argparse.Namespace) -> str:
    potential = FreeCGPotential(FreeCG(hidden=8, num_layers=1, num_heads=1, num_groups=1),
                                [1], device=args.device)
    return f"{potential.replicas_per_pass} per pass, {potential.workers} worker processes"


def time_engine(model: FreeCG, atoms: Atoms, args: argparse.Namespace) -> dict:
    """Per-step wall time and time outside the force evaluation: a bare BAOAB step, and a
    step of the full run loop (guards, reports, exchanges, checkpoints)."""
    # One replica is plain Langevin dynamics at one temperature.
    temperatures = temperature_ladder(300.0, 450.0 if args.replicas > 1 else 300.0,
                                      args.replicas)
    potential = TimedPotential(FreeCGPotential(model, atoms.numbers, device=args.device))
    state = ReplicaState.from_atoms(atoms, args.replicas)
    generators = replica_generators(args.seed, range(args.replicas))
    # Two calls before timing: the second starts the worker processes (seconds).
    for _ in range(2):
        _, forces = potential.evaluate(state.positions)
    potential.calls.clear()
    start = time.perf_counter()
    for _ in range(args.engine_steps):
        _, forces = baoab_step(state, forces, potential, torch.tensor(temperatures), 1.0, 1.0,
                               generators, remove_com=True)
    bare = (time.perf_counter() - start) / args.engine_steps
    bare_eval = sum(potential.calls) / args.engine_steps

    potential.calls.clear()
    with tempfile.TemporaryDirectory() as directory:
        config = RunConfig(temperatures=temperatures.tolist(), n_steps=args.engine_steps,
                           output_dir=directory, exchange_interval=5, report_interval=5,
                           checkpoint_interval=args.engine_steps, seed=args.seed,
                           device=args.device)
        result = run_replicas(potential, ReplicaState.from_atoms(atoms, args.replicas),
                              config, progress=False)
    potential.inner.close()
    loop = result.wall_seconds / args.engine_steps  # the loop only: set-up excluded
    loop_eval = sum(potential.calls[1:]) / args.engine_steps  # calls[0] is the set-up's
    return {"bare_ms": bare * 1e3, "bare_overhead_ms": (bare - bare_eval) * 1e3,
            "loop_ms": loop * 1e3, "loop_overhead_ms": (loop - loop_eval) * 1e3,
            "ns_per_day": result.ns_per_day}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per configuration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--engine-steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--step", type=float, default=0.005,
                        help="rms displacement per call, Å (an MD step's worth)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", help="model file (e.g. models/chignolin.pt); default: "
                                        "FreeCG() with random weights")
    parser.add_argument("--no-mmap", action="store_true",
                        help="glibc mallopt: no mmap for large tensors (see the docstring)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.no_mmap and not keep_freed_memory():
        raise RuntimeError("--no-mmap: mallopt refused the settings (glibc only)")

    torch.manual_seed(args.seed)
    model = load_model(args.model).to(torch.float32) if args.model else FreeCG()
    atoms = chignolin_or_stand_in(args.seed)
    evaluations = time_evaluations(model, atoms, args)
    engine = time_engine(model, atoms, args)

    name = args.model or "FreeCG() default"
    print(f"{name}, float32, {args.device}; {args.replicas} replicas x {len(atoms)} "
          f"atoms; torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, malloc mmap "
          f"{'off' if args.no_mmap else 'default'}, {args.repeats} interleaved repeats")
    labels = {"batched": f"FreeCGPotential, one pass (edge chunks {model.edge_chunk_size})",
              "batched_whole": "FreeCGPotential, one pass, edges not chunked",
              "one_per_pass": "FreeCGPotential, one per pass, 1 worker",
              "default": f"FreeCGPotential default ({default_label(args)})",
              "sequential": f"{args.replicas} sequential FreeCGCalculator calls"}
    print("ms per evaluation of all replicas (median):")
    for name, label in labels.items():
        print(f"  {label:48s} {evaluations[name]:9.1f}")
    for name in ("batched", "batched_whole", "one_per_pass", "default"):
        print(f"speed-up over sequential calculator calls, {name}: "
              f"{evaluations['sequential'] / evaluations[name]:.2f}x")
    for name, label in (("bare", "BAOAB step"),
                        ("loop", "run-loop step (guards; reports, exchanges every 5 steps)")):
        total, overhead = engine[f"{name}_ms"], engine[f"{name}_overhead_ms"]
        print(f"{label}: {total:.1f} ms, of which {overhead:.2f} ms outside the force "
              f"evaluation ({overhead / total:.2%})")
    print(f"run loop: {engine['ns_per_day']:.3g} ns/day per replica at 1 fs")

if __name__ == "__main__":
    main()
