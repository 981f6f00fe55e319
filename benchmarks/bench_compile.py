"""torch.compile of the FreeCG network: speed-up and agreement on chignolin (166 atoms).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_compile.py --threads 2
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_compile.py --model models/chignolin.pt

Times energy + forces of ``FreeCG()`` (random weights, seeded) or of a model file on the
protonated chignolin, eager against :meth:`FreeCG.compile_network` (inductor, dynamic
shapes), interleaved, after the compiled model has been called once (the compile time is
printed separately), and prints the largest energy and force differences between the two
over a few perturbed geometries, in the model's dtype. Both models are frozen, as the
calculator and the MD engines hold them, so a chignolin's edges go in runs shared by the
threads and the compiled code is each layer's run update (see ``compile_network``).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402

from freecg_md import FreeCG, build_neighbor_list, load_model  # noqa: E402
from freecg_md.data.molecules import load_chignolin  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="model file (default: FreeCG() with random weights)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    eager = load_model(args.model) if args.model else FreeCG()
    eager = eager.to(dtype).eval().requires_grad_(False)
    compiled = copy.deepcopy(eager).compile_network()
    atoms = load_chignolin().atoms
    rng = np.random.default_rng(args.seed)
    numbers = torch.as_tensor(atoms.numbers)

    def inputs(positions: np.ndarray) -> tuple:
        edges = build_neighbor_list(positions, eager.cutoff).edge_index
        return numbers, torch.as_tensor(positions, dtype=dtype), torch.as_tensor(edges)

    start = time.perf_counter()
    compiled.energy_and_forces(*inputs(atoms.positions))
    compile_s = time.perf_counter() - start

    worst_e = worst_f = 0.0
    samples: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        # A new geometry (and edge count) each time: dynamic shapes must be reused.
        geometry = inputs(atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape))
        results = {}
        for name, model in (("eager", eager), ("compiled", compiled)):
            start = time.perf_counter()
            results[name] = model.energy_and_forces(*geometry)
            samples[name].append(time.perf_counter() - start)
        worst_e = max(worst_e, float((results["eager"]["energy"].detach()
                                      - results["compiled"]["energy"].detach()).abs().max()))
        worst_f = max(worst_f, float((results["eager"]["forces"]
                                      - results["compiled"]["forces"]).abs().max()))
    eager_ms = statistics.median(samples["eager"]) * 1e3
    compiled_ms = statistics.median(samples["compiled"]) * 1e3
    name = args.model or "FreeCG()"
    print(f"{name} {args.dtype} on chignolin ({len(atoms)} atoms), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    print(f"compile (first call): {compile_s:.0f} s")
    print(f"energy + forces: eager {eager_ms:.1f} ms, compiled {compiled_ms:.1f} ms, "
          f"speed-up {eager_ms / compiled_ms:.2f}x")
    print(f"largest difference: energy {worst_e:.2e} eV, force {worst_f:.2e} eV/Å")


if __name__ == "__main__":
    main()
