"""FreeCG on a GPU: correctness against CPU float64, one call, replica throughput, memory.

    python benchmarks/gpu_check.py --out gpu_check            # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --replicas 1 2 --steps 4 --quick   # a dry run

Run by ``benchmarks/gpu_check.sh`` (which also installs what the GPU machine lacks). With the
shipped model on chignolin (166 atoms):

1. **Correctness**: energy and forces on the device, float64, float32 and float32 with TF32
   matrix products (``FreeCGCalculator(matmul_precision="tf32")``; on a device without TF32,
   a dry run on a CPU, that row computes float32), against the CPU in float64, on the
   native structure and on perturbed copies (largest differences): what TF32 costs in
   accuracy.
2. **One call**: ``FreeCGCalculator(device=...)`` energy + forces, median wall time of
   ``--calls`` calls on geometries perturbed by 0.05 Å (so the calculator's neighbour list
   is reused, as in MD), float32 and TF32 products interleaved: what TF32 gains.
3. **Replicas in one pass**: Langevin MD with ``run_replicas`` for each of ``--replicas``
   (default 1, 8, 32, 64), ``--steps`` steps of 1 fs after ``--warmup`` steps: ns/day per
   replica and summed over replicas, peak device memory; with ``torch.compile`` on and off
   for 8 replicas (unless ``--quick``).

Everything goes to ``OUT/gpu_check.md`` (one table per part) and ``OUT/gpu_check.json``.
Timings synchronise the device before reading the clock. The path that ran is recorded:
on CUDA the potential runs every replica through one forward pass in this process (no
worker processes, no fused CPU kernels).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read when torch loads libgomp

import numpy as np  # noqa: E402
import torch  # noqa: E402

from freecg_md import FreeCGCalculator, shipped_model  # noqa: E402
from freecg_md.data import load_chignolin  # noqa: E402
from freecg_md.md import FreeCGPotential, ReplicaState, RunConfig, run_replicas  # noqa: E402


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()


def peak_mib(device: str) -> float | None:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def perturbed(positions: np.ndarray, count: int, seed: int, scale: float = 0.05) -> np.ndarray:
    """(count, N, 3) Å: copies moved by Gaussian noise of ``scale`` Å per coordinate."""
    rng = np.random.default_rng(seed)
    return positions[None] + scale * rng.standard_normal((count, *positions.shape))


def energy_forces(calculator: FreeCGCalculator, atoms, positions: np.ndarray
                  ) -> tuple[float, np.ndarray]:
    probe = atoms.copy()
    probe.positions = positions
    probe.calc = calculator
    return probe.get_potential_energy(), probe.get_forces()


def reduced(device: str) -> str:
    """The calculator's ``matmul_precision`` for the TF32 rows: ``"tf32"`` on CUDA; float32
    elsewhere (a dry run on a CPU exercises the same code)."""
    return "tf32" if torch.device(device).type == "cuda" else "float32"


# Each row of the correctness table: (label, dtype, TF32 products).
VARIANTS = (("float64", "float64", False), ("float32", "float32", False),
            ("float32 + TF32", "float32", True))


def correctness(model_path: Path, atoms, device: str, n_geometries: int) -> list[dict]:
    geometries = np.concatenate([atoms.positions[None],
                                 perturbed(atoms.positions, n_geometries - 1, seed=1)])
    reference = FreeCGCalculator(str(model_path), device="cpu", dtype="float64")
    expected = [energy_forces(reference, atoms, g) for g in geometries]
    rows = []
    for label, dtype, tf32 in VARIANTS:
        calculator = FreeCGCalculator(str(model_path), device=device, dtype=dtype,
                                      matmul_precision=reduced(device) if tf32 else "float32")
        got = [energy_forces(calculator, atoms, g) for g in geometries]
        rows.append({
            "dtype": label, "geometries": len(geometries),
            "max_energy_diff_eV": max(abs(g[0] - e[0]) for g, e in zip(got, expected, strict=True)),
            "max_force_diff_eV_A": max(float(np.abs(g[1] - e[1]).max())
                                       for g, e in zip(got, expected, strict=True)),
            "force_scale_eV_A": float(np.mean([np.abs(e[1]).mean() for e in expected])),
        })
    return rows


def one_call(model_path: Path, atoms, device: str, calls: int) -> dict:
    """Median and fastest float32 calculator call, with float32 matrix products and with
    TF32 ones: one calculator each (a calculator returns its stored results for positions
    it has seen), the two taking turns at every geometry, the first of a turn alternating."""
    # The products of each: "tf32" is float32 on a device without TF32 (a dry run).
    calculators = {kind: FreeCGCalculator(str(model_path), device=device, dtype="float32",
                                          matmul_precision=precision)
                   for kind, precision in (("float32", "float32"), ("tf32", reduced(device)))}
    geometries = perturbed(atoms.positions, calls + 3, seed=2)
    times: dict[str, list[float]] = {kind: [] for kind in calculators}
    for k, geometry in enumerate(geometries):
        for kind in (("float32", "tf32") if k % 2 == 0 else ("tf32", "float32")):
            synchronize(device)
            started = time.perf_counter()
            energy_forces(calculators[kind], atoms, geometry)
            synchronize(device)
            if k >= 3:  # the first calls build caches and pick kernels
                times[kind].append(time.perf_counter() - started)
    return {"calls": calls, "median_ms": 1e3 * statistics.median(times["float32"]),
            "min_ms": 1e3 * min(times["float32"]),
            "tf32_median_ms": 1e3 * statistics.median(times["tf32"])}


def md_throughput(model_path: Path, chignolin, device: str, replicas: int, steps: int,
                  warmup: int, compile_network: bool) -> dict:
    potential = FreeCGPotential(str(model_path), chignolin.atoms.numbers, device=device,
                                dtype="float32", compile=compile_network)
    row = {"replicas": replicas, "compile": compile_network, "steps": steps,
           "path": ("one pass, this process" if potential.replicas_per_pass is None
                    else f"{potential.replicas_per_pass} replica(s) per pass, "
                         f"{potential.workers} worker process(es)")}
    try:
        with tempfile.TemporaryDirectory() as scratch:
            state = ReplicaState.from_atoms(chignolin.atoms, replicas)
            # One interval for both parts (a resumed run keeps its config): frames and
            # checkpoints at the end of the warm-up and of the timed steps, few between.
            interval = math.gcd(warmup, steps)
            config = RunConfig(temperatures=[300.0] * replicas, n_steps=warmup,
                               output_dir=str(Path(scratch) / "run"), timestep_fs=1.0,
                               friction_per_ps=1.0, report_interval=interval,
                               checkpoint_interval=interval, seed=0, device=device,
                               dtype="float32")
            started = time.perf_counter()
            run_replicas(potential, state, config, topology=chignolin.topology, progress=False)
            row["warmup_s"] = time.perf_counter() - started
            reset_peak(device)
            config.n_steps = warmup + steps
            result = run_replicas(potential, state, config, topology=chignolin.topology,
                                  resume=True, progress=False)
    finally:
        potential.close()
    row["ms_per_step"] = 1e3 * result.wall_seconds / max(result.steps_run, 1)
    row["ns_per_day_per_replica"] = result.ns_per_day
    row["ns_per_day_summed"] = result.ns_per_day * replicas
    row["peak_MiB"] = peak_mib(device)
    return row


def markdown(report: dict) -> str:
    lines = [f"# FreeCG GPU check ({report['date']})", "",
             f"device: {report['device_name']}; torch {report['torch']}; model "
             f"{report['model']} (fingerprint {report['fingerprint'][:12]}); chignolin, "
             f"{report['atoms']} atoms", "",
             "| dtype | geometries | max energy diff, eV | max force diff, eV/Å | mean |F|, eV/Å |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['dtype']} | {r['geometries']} | {r['max_energy_diff_eV']:.2e} | "
              f"{r['max_force_diff_eV_A']:.2e} | {r['force_scale_eV_A']:.3f} |"
              for r in report["correctness"]]
    call = report["one_call"]
    lines += ["", f"One calculator call (float32, energy + forces): median "
              f"{call['median_ms']:.2f} ms, fastest {call['min_ms']:.2f} ms, of {call['calls']}; "
              f"with TF32 matrix products {call['tf32_median_ms']:.2f} ms (interleaved).",
              "", "| replicas | compile | path | ms per step | ns/day per replica | "
              "ns/day summed | peak MiB |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["md"]:
        peak = "n/a" if r.get("peak_MiB") is None else f"{r['peak_MiB']:.0f}"
        if "error" in r:
            lines.append(f"| {r['replicas']} | {r['compile']} | {r['path']} | failed: "
                         f"{r['error']} | | | |")
            continue
        lines.append(f"| {r['replicas']} | {r['compile']} | {r['path']} | "
                     f"{r['ms_per_step']:.2f} | {r['ns_per_day_per_replica']:.2f} | "
                     f"{r['ns_per_day_summed']:.2f} | {peak} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", type=Path, default=shipped_model("chignolin"))
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--steps", type=int, default=200, help="timed MD steps per size")
    parser.add_argument("--warmup", type=int, default=25, help="MD steps before timing")
    parser.add_argument("--calls", type=int, default=20, help="timed calculator calls")
    parser.add_argument("--geometries", type=int, default=4, help="correctness geometries")
    parser.add_argument("--quick", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--out", type=Path, default=Path("gpu_check"))
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device}: torch {torch.__version__} sees no CUDA GPU",
              file=sys.stderr)
        return 2
    from freecg_md.io import model_fingerprint

    chignolin = load_chignolin()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device_name": (torch.cuda.get_device_name() if args.device.startswith("cuda")
                        else platform.processor() or "cpu"),
        "torch": torch.__version__, "model": str(args.model),
        "fingerprint": model_fingerprint(args.model), "atoms": len(chignolin.atoms),
        "python": platform.python_version(),
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=1))
        if "md" in report:
            (args.out / "gpu_check.md").write_text(markdown(report))

    report["correctness"] = correctness(args.model, chignolin.atoms, args.device,
                                        args.geometries)
    print(json.dumps(report["correctness"], indent=1), flush=True)
    report["one_call"] = one_call(args.model, chignolin.atoms, args.device, args.calls)
    print(report["one_call"], flush=True)
    report["md"] = []
    sizes = [(r, False) for r in args.replicas]
    if not args.quick:
        sizes.append((8 if 8 in args.replicas else args.replicas[0], True))
    for replicas, compile_network in sizes:
        try:
            row = md_throughput(args.model, chignolin, args.device, replicas, args.steps,
                                args.warmup, compile_network)
        except Exception as error:  # one failed size must not lose the others' rows
            row = {"replicas": replicas, "compile": compile_network, "path": "",
                   "error": f"{type(error).__name__}: {str(error)[:200]}"}
        report["md"].append(row)
        print(row, flush=True)
        save()
    save()
    print((args.out / "gpu_check.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
