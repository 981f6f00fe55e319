"""Training throughput: conformations per second in a force-loss step, eager against compiled.

The shipped model (trainable, its weights as the start) on labelled chignolin structures
(166 atoms, batches of ``--batch-size``), one optimiser step of the training loop
(:meth:`freecg_md.train.loop.Trainer.train_step`: energies, forces with their graph, the
loss's backward pass, gradient clipping, AdamW, EMA) per call:

* ``eager``: the reference path, forces by eager autograd with ``create_graph=True``;
* ``compiled``: ``TrainConfig.compile`` (:mod:`freecg_md.train.compiled`);
* ``compiled + bf16 autocast``: the same under ``torch.autocast("cpu", torch.bfloat16)``,
  measured for its speed and for what it costs: its energies and forces against float32
  on ``--check`` other structures, next to the model's own error against the labels.

The configurations take turns within each of ``--rounds`` rounds of ``--steps`` steps (the
first going first in turn), so load from other jobs falls on all alike; each prints the
median step time and conformations per second, and its ratio to eager. Compile time (the
first call) is printed apart.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_training.py --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import torch  # noqa: E402

from freecg_md import load_model, shipped_model  # noqa: E402
from freecg_md.train import TrainConfig  # noqa: E402
from freecg_md.train.compiled import CompiledForces  # noqa: E402
from freecg_md.train.data import collate, structures_from_atoms  # noqa: E402
from freecg_md.train.loop import Trainer  # noqa: E402

DATA = "data/chignolin/labelled"


def _structures(model: torch.nn.Module, count: int) -> list:
    """The first ``count`` labelled chignolin structures of the shipped data."""
    from pathlib import Path

    from ase.io import read

    atoms = []
    for path in sorted(Path(DATA).glob("*.extxyz*")):
        atoms.extend(read(path, ":"))
        if len(atoms) >= count:
            break
    return structures_from_atoms(atoms[:count], model.config.cutoff)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--check", type=int, default=16,
                        help="structures for the bf16 accuracy check")
    parser.add_argument("--no-bf16", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start_model = load_model(shipped_model("chignolin"))
    start_model.requires_grad_(True)
    n_train = args.batch_size * args.steps
    structures = _structures(start_model, n_train + args.check)
    train, check = structures[:n_train], structures[n_train:]
    batches = [collate(train[i:i + args.batch_size]).to(torch.device("cpu"), torch.float32)
               for i in range(0, n_train, args.batch_size)]
    split = {"train": list(range(n_train)), "val": [], "test": []}

    names = ["eager", "compiled"] + ([] if args.no_bf16 else ["compiled + bf16 autocast"])
    trainers, contexts = {}, {}
    scratch = tempfile.TemporaryDirectory()
    for name in names:
        config = TrainConfig(data=[DATA], output_dir=scratch.name, batch_size=args.batch_size,
                             compile=name != "eager", ema_decay=0.99, lr=1e-5)
        trainers[name] = Trainer(config, train, split, tuple(start_model.species),
                                 initial_model=start_model)
        contexts[name] = ((lambda: torch.autocast("cpu", dtype=torch.bfloat16))
                          if "bf16" in name else contextlib.nullcontext)
    print(f"training step of the shipped model, batches of {args.batch_size} chignolin "
          f"structures ({batches[0].edge_index.shape[1]} edges), float32, "
          f"{args.threads} thread(s)")
    for name in names:  # the first call compiles
        start = time.perf_counter()
        with contexts[name]():
            trainers[name].train_step(batches[0])
        print(f"  first step, {name}: {time.perf_counter() - start:.1f} s")

    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        order = names[round_index % len(names):] + names[:round_index % len(names)]
        for name in order:
            for batch in batches:
                start = time.perf_counter()
                with contexts[name]():
                    trainers[name].train_step(batch)
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["eager"])
    print("| configuration | s per step | conformations/s | speed-up over eager |")
    print("| --- | --- | --- | --- |")
    for name in names:
        step = statistics.median(times[name])
        print(f"| {name} | {step:.2f} | {args.batch_size / step:.2f} | {base / step:.2f}x |")

    if args.no_bf16 or not check:
        return
    # What bf16 costs: the same weights, float32 against bf16 autocast, on other structures.
    model = trainers["eager"].model
    compiled = CompiledForces(model)
    de, df, own_df, n_atoms = [], [], [], []
    for structure in check:
        b = collate([structure]).to(torch.device("cpu"), torch.float32)
        call = (b.numbers, b.positions, b.edge_index, b.shifts, b.batch, b.num_graphs)
        exact = model.energy_and_forces(*call)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = compiled.energy_and_forces(*call)
        de.append(float(low["energy"].detach() - exact["energy"].detach()))
        df.append((low["forces"].detach() - exact["forces"].detach()).abs().mean().item())
        own_df.append((exact["forces"].detach() - b.forces).abs().mean().item())
        n_atoms.append(len(structure.numbers))
    force_error, own_error = statistics.mean(df), statistics.mean(own_df)
    per_atom = [e / n for e, n in zip(de, n_atoms, strict=True)]
    print(f"bf16 autocast against float32 on {len(check)} structures: force MAE "
          f"{force_error:.4f} eV/Å (the model's own force MAE against the labels "
          f"{own_error:.4f} eV/Å; ratio {force_error / own_error:.2f}); energy error "
          f"{1000 * statistics.mean(map(abs, per_atom)):.2f} meV/atom mean absolute, "
          f"{1000 * statistics.mean(per_atom):+.2f} meV/atom mean signed")

if __name__ == "__main__":
    main()
