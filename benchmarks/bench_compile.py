"""torch.compile of the FreeCG network against eager torch operations and the fused kernels.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_compile.py --threads 2
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_compile.py --model models/chignolin.pt
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_compile.py --paper-size --no-compile

Times energy + forces of ``FreeCG()`` (random weights, seeded) or of a model file on the
protonated chignolin, interleaved, three ways: eager torch operations, the same compiled
with :meth:`FreeCG.compile_network` (inductor, dynamic shapes; timed after a first call
that compiles, whose time is printed separately), both with ``fused_kernels = False``, and
eager with the fused CPU kernels (the default on a CPU, where they take precedence over
compiled code). Prints the largest energy and force differences of the other two from eager
torch operations over a few perturbed geometries, in the model's dtype. All models are
frozen, as the calculator and the MD engines hold them, so a chignolin's edges go in runs
shared by the threads and the compiled code is each layer's run update.
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
    parser.add_argument("--paper-size", action="store_true",
                        help="FreeCG(hidden=256, num_layers=9, num_groups=32) instead of FreeCG()")
    parser.add_argument("--no-compile", action="store_true",
                        help="time eager torch operations against the fused kernels only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    if args.model:
        fused = load_model(args.model)
    else:
        fused = FreeCG(hidden=256, num_layers=9, num_groups=32) if args.paper_size else FreeCG()
    fused = fused.to(dtype).eval().requires_grad_(False)
    eager = copy.deepcopy(fused)
    eager.fused_kernels = False
    compiled = None if args.no_compile else copy.deepcopy(eager).compile_network()
    atoms = load_chignolin().atoms
    rng = np.random.default_rng(args.seed)
    numbers = torch.as_tensor(atoms.numbers)

    def inputs(positions: np.ndarray) -> tuple:
        edges = build_neighbor_list(positions, eager.cutoff).edge_index
        return numbers, torch.as_tensor(positions, dtype=dtype), torch.as_tensor(edges)

    compile_s = float("nan")
    if compiled is not None:
        start = time.perf_counter()
        compiled.energy_and_forces(*inputs(atoms.positions))
        compile_s = time.perf_counter() - start
    fused.energy_and_forces(*inputs(atoms.positions))  # builds or loads the kernels
    eager.energy_and_forces(*inputs(atoms.positions))

    models = {"eager": eager, "compiled": compiled, "fused": fused}
    models = {name: model for name, model in models.items() if model is not None}
    worst = {name: [0.0, 0.0] for name in models if name != "eager"}
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats):
        # A new geometry (and edge count) each time: dynamic shapes must be reused.
        geometry = inputs(atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape))
        results = {}
        for name, model in models.items():
            start = time.perf_counter()
            results[name] = model.energy_and_forces(*geometry)
            samples[name].append(time.perf_counter() - start)
        for name, pair in worst.items():
            pair[0] = max(pair[0], float((results["eager"]["energy"].detach()
                                          - results[name]["energy"].detach()).abs().max()))
            pair[1] = max(pair[1], float((results["eager"]["forces"]
                                          - results[name]["forces"]).abs().max()))
    ms = {name: statistics.median(times) * 1e3 for name, times in samples.items()}
    name = args.model or ("FreeCG(hidden=256, num_layers=9, num_groups=32)" if args.paper_size
                          else "FreeCG()")
    print(f"{name} {args.dtype} on chignolin ({len(atoms)} atoms), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved repeats")
    line = f"energy + forces: eager torch ops {ms['eager']:.1f} ms, "
    if compiled is not None:
        print(f"compile (first call): {compile_s:.0f} s")
        line += f"compiled {ms['compiled']:.1f} ms ({ms['eager'] / ms['compiled']:.2f}x), "
    line += f"fused kernels {ms['fused']:.1f} ms ({ms['eager'] / ms['fused']:.2f}x"
    if compiled is not None:
        line += f"; {ms['compiled'] / ms['fused']:.2f}x compiled"
    print(line + ")")
    for other, (energy, force) in worst.items():
        print(f"largest difference of {other} from eager: energy {energy:.2e} eV, "
              f"force {force:.2e} eV/Å")

if __name__ == "__main__":
    main()
