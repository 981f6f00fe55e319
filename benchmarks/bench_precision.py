"""The bfloat16 mode (``matmul_precision="bfloat16"``): its cost and its gain, side by side.

The mode is worth using only where its forces stay close to float32's: the bar here is a
force error against float32 of at most 5 % of the model's own force error against its
labels. This script measures, for the shipped model on structures of its held-out test
split:

* on the model's reference path, each kind of the interaction layers' projections
  (``qks_proj``, ``dkdv_proj``, ...) with bfloat16 operands (oneDNN's mode: float32
  accumulation and result), one kind at a time and all at once, and
  ``torch.autocast("cpu", torch.bfloat16)`` over the whole pass (bfloat16 results too):
  where the error comes from;
* the mode itself on the frozen model's fused CPU path (the runs' products, forward and
  backward, in bfloat16; the per-atom terms in float32);

each as force MAE against float32 (eV/Å), its share of the model's own force MAE, and the
energy change (meV/atom: mean, mean absolute, and its spread over the structures). The gain
side: float32 and bfloat16 matrix-product throughput at the projections' shapes on
chignolin (F = 64, 128, 256); the share of a float32 call spent in matrix products for the
shipped model, FreeCG() and the paper's size (one thread, torch's profiler), with the most
any bfloat16 mode could gain (Amdahl's bound); and the mode against float32, call by call
in turns, for those three models on chignolin and on a 1,002-atom water droplet.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_precision.py --threads 2
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from freecg_md import FreeCG, shipped_model  # noqa: E402
from freecg_md.data import load_chignolin  # noqa: E402
from freecg_md.io import load_model  # noqa: E402
from freecg_md.neighbors import build_neighbor_list  # noqa: E402
from freecg_md.nn.precision import cpu_has_bfloat16, matmul_precision  # noqa: E402
from freecg_md.train.config import TrainConfig  # noqa: E402
from freecg_md.train.data import collate  # noqa: E402
from freecg_md.train.dataset_cache import load_training_structures  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# The shipped model's training config: its data in the order its split indexes.
CONFIG = ROOT / "configs" / "active" / "round2_m0.json"
SPECIES = (1, 6, 7, 8)
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::linear", "aten::matmul", "aten::bmm")


def _bf16_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``self(x)`` with bfloat16 operands, accumulated and returned in float32 (oneDNN's
    mode, as the model's bfloat16 mode computes its products)."""
    with matmul_precision("bfloat16", x.device):
        return F.linear(x, self.weight, self.bias)


@contextlib.contextmanager
def bf16_projections(modules: list[nn.Linear]) -> Iterator[None]:
    """Within the block, ``modules`` compute in bfloat16 (instance attributes shadow the
    class's forward; deleting them restores it)."""
    for module in modules:
        module.forward = types.MethodType(_bf16_linear, module)
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def held_out(model: nn.Module, count: int) -> list:
    """``count`` structures spread over the model's held-out test split."""
    config = TrainConfig.from_json(CONFIG)
    structures, _ = load_training_structures(config)
    test = model.metadata["split"]["test"]
    step = max(1, len(test) // count)
    return [structures[i] for i in test[::step][:count]]


def accuracy(model: nn.Module, structures: list, variants: dict) -> None:
    reference, own = [], []
    for structure in structures:
        batch = collate([structure]).to(torch.device("cpu"), torch.float32)
        call = (batch.numbers, batch.positions, batch.edge_index, batch.shifts, batch.batch,
                batch.num_graphs)
        out = model.energy_and_forces(*call)
        reference.append((call, float(out["energy"].detach()), out["forces"].detach(),
                          len(structure.numbers)))
        own.append((out["forces"].detach() - batch.forces).abs().mean().item())
    own_error = statistics.mean(own)
    print(f"{len(structures)} held-out structures; the model's own force MAE against the "
          f"labels: {own_error:.4f} eV/Å (5 % of it: {0.05 * own_error:.5f})\n")
    print("| bfloat16 in | force MAE vs float32 (eV/Å) | / own force MAE | energy change "
          "(meV/atom, mean) | |energy change| (meV/atom) | its spread (meV/atom, sd) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, context in variants.items():
        df, de = [], []
        for call, energy, forces, n_atoms in reference:
            with context():
                out = model.energy_and_forces(*call)
            df.append((out["forces"].detach().float() - forces).abs().mean().item())
            de.append((float(out["energy"].detach()) - energy) / n_atoms)
        force = statistics.mean(df)
        print(f"| {name} | {force:.5f} | {100 * force / own_error:.2f} % | "
              f"{1000 * statistics.mean(de):+.3f} | {1000 * statistics.mean(map(abs, de)):.3f} "
              f"| {1000 * statistics.stdev(de):.3f} |")


@contextlib.contextmanager
def mode(model: nn.Module, precision: str) -> Iterator[None]:
    """Within the block, ``model.matmul_precision`` is ``precision``."""
    model.matmul_precision = precision
    try:
        yield
    finally:
        model.matmul_precision = "float32"


def mode_speed(sizes: dict[str, nn.Module], systems: dict[str, tuple], rounds: int,
               calls: int) -> None:
    """ms per energy + forces call of each frozen model, float32 and the bfloat16 mode taking
    turns call by call (the first of each pair alternating), median over ``rounds`` x
    ``calls`` calls each."""
    print("\n| model | system | float32 ms | bfloat16 mode ms | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    for name, network in sizes.items():
        frozen = copy.deepcopy(network).to(torch.float32).requires_grad_(False)
        for system, (numbers, positions) in systems.items():
            neighbors = build_neighbor_list(positions, frozen.cutoff)
            call = (torch.as_tensor(numbers), torch.tensor(positions, dtype=torch.float32),
                    torch.as_tensor(neighbors.edge_index, dtype=torch.long))
            times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
            for precision in times:  # warm-up: kernels, thread pools, oneDNN's primitives
                with mode(frozen, precision):
                    frozen.energy_and_forces(*call)
            for k in range(rounds * calls):
                for precision in (("float32", "bfloat16") if k % 2 == 0
                                  else ("bfloat16", "float32")):
                    with mode(frozen, precision):
                        start = time.perf_counter()
                        frozen.energy_and_forces(*call)
                        times[precision].append(time.perf_counter() - start)
            a, b = (statistics.median(times[p]) for p in ("float32", "bfloat16"))
            print(f"| {name} | {system} | {1e3 * a:.1f} | {1e3 * b:.1f} | {a / b:.2f}x |",
                  flush=True)


def _median_time(function: object, repeats: int) -> float:
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def throughput(hidden: int, n_atoms: int, n_edges: int, repeats: int) -> None:
    """GFLOP/s of float32 and bfloat16 products at the projections' shapes: atoms x F
    times F x 3F (qks, o, vec) and edges x F times F x 2F (the edge-wise maps)."""
    print(f"\n| shape (F = {hidden}) | float32 GFLOP/s | bfloat16 GFLOP/s | ratio |")
    print("| --- | --- | --- | --- |")
    for rows, width in ((n_atoms, 3 * hidden), (n_edges, 2 * hidden), (n_edges, hidden)):
        a, b = torch.randn(rows, hidden), torch.randn(hidden, width)
        a16, b16 = a.to(torch.bfloat16), b.to(torch.bfloat16)
        flops = 2 * rows * hidden * width
        t32 = _median_time(lambda a=a, b=b: a @ b, repeats)
        t16 = _median_time(lambda a=a16, b=b16: a @ b, repeats)
        print(f"| {rows} x {hidden} @ {hidden} x {width} | {flops / t32 / 1e9:.0f} | "
              f"{flops / t16 / 1e9:.0f} | {t32 / t16:.1f}x |")


def matmul_share(model: nn.Module, repeats: int) -> float:
    """Share of a frozen (fast-path) float32 energy-and-forces call of ``model`` on
    chignolin spent in matrix products, from torch's profiler (self CPU time), with one
    thread: with more, the runs of edges go to threads whose operations the profiler does
    not record, and the share would count the calling thread's products only."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _matmul_share(model, repeats)
    finally:
        torch.set_num_threads(threads)


def _matmul_share(model: nn.Module, repeats: int) -> float:
    chignolin = load_chignolin()
    # A frozen copy (the fast path): the caller's model stays trainable, on the path whose
    # projections bf16_projections can swap.
    model = copy.deepcopy(model).to(torch.float32).requires_grad_(False)
    neighbors = build_neighbor_list(chignolin.atoms.positions, model.cutoff)
    call = (torch.tensor(chignolin.atoms.numbers),
            torch.tensor(chignolin.atoms.positions, dtype=torch.float32),
            torch.as_tensor(neighbors.edge_index, dtype=torch.long))
    model.energy_and_forces(*call)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(repeats):
            model.energy_and_forces(*call)
    events = profile.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    return sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS) / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--structures", type=int, default=40,
                        help="held-out structures for the accuracy part")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="speed: rounds of --calls")
    parser.add_argument("--calls", type=int, default=5, help="speed: calls per round")
    parser.add_argument("--skip-accuracy", action="store_true",
                        help="speed only (the accuracy tables take minutes)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    model = load_model(shipped_model("chignolin")).to(torch.float32)

    kinds: dict[str, list[nn.Linear]] = {}
    for name, module in model.layers.named_modules():
        if isinstance(module, nn.Linear):
            kinds.setdefault(name.rsplit(".", 1)[-1], []).append(module)
    variants = {f"`{kind}` only": (lambda m=modules: bf16_projections(m))
                for kind, modules in sorted(kinds.items())}
    every = [m for modules in kinds.values() for m in modules]
    variants["every projection of the interaction layers"] = lambda: bf16_projections(every)
    variants["the whole pass (torch.autocast)"] = lambda: torch.autocast(
        "cpu", dtype=torch.bfloat16)
    if not args.skip_accuracy:
        structures = held_out(model, args.structures)
        accuracy(model, structures, variants)
        # The mode itself, as a user gets it: the frozen model's fused CPU path with
        # matmul_precision="bfloat16" (the runs' products, forward and backward).
        print("\nThe bfloat16 mode (matmul_precision='bfloat16': a frozen model, the fused "
              "CPU path):\n")
        frozen = copy.deepcopy(model).requires_grad_(False)
        accuracy(frozen, structures, {"the mode": lambda: mode(frozen, "bfloat16")})

    chignolin = load_chignolin()
    n_edges = build_neighbor_list(chignolin.atoms.positions,
                                  model.cutoff).edge_index.shape[1]
    for hidden in (model.config.hidden, 128, 256):
        throughput(hidden, len(chignolin.atoms), n_edges, args.repeats)
    print("\n| model | matrix products' share of a float32 call (fast path, 1 thread) | most "
          "a bfloat16 mode could gain |")
    print("| --- | --- | --- |")
    sizes = {"shipped (F = 64, 3 layers)": model,
             "FreeCG() (F = 128, 4 layers)": FreeCG(species=SPECIES),
             "paper size (F = 256, 9 layers, G = 32)": FreeCG(
                 species=SPECIES, hidden=256, num_layers=9, num_groups=32)}
    for name, network in sizes.items():
        share = matmul_share(network, max(3, args.repeats // 4))
        print(f"| {name} | {100 * share:.0f} % | {1 / (1 - share):.2f}x |")
    if cpu_has_bfloat16():
        sys.path.insert(0, str(Path(__file__).parent))
        from peers import water_cluster

        water = water_cluster(334)
        mode_speed(sizes, {"chignolin (166 atoms)": (chignolin.atoms.numbers,
                                                      chignolin.atoms.positions),
                           "water droplet (1,002 atoms)": water},
                   args.rounds, args.calls)
    else:
        print("\nThis CPU has no bfloat16 units: the mode is not offered here.")


if __name__ == "__main__":
    main()
