"""Energy + forces on chignolin (166 atoms): FreeCG against MACE, TorchMD-NET and NequIP.

One run times every (model, dtype) pair of ``--models`` x ``--dtypes``. Each measurement is a
fresh process (benchmarks/peers_models.py) that builds the model with random weights, makes
``--warmup`` untimed calls and ``--calls`` timed ones, and reports its own peak memory. The
measurements are interleaved: round after round, every pair runs once per round, in an order
rotated each round, so load from other jobs on a shared machine falls on all of them alike.
Printed per pair: the median time per call over all rounds (ms), its ratio to MACE's in the
same dtype, the parameter count, the peak resident memory of the process and that memory
less the resident memory right after the imports (MiB), and for FreeCG in float32 a roofline:
the call's counted FLOPs (torch's FlopCounterMode: matrix products and the einsums made of
them), the rate they imply, and that rate as a share of the best float32 matrix-product
rate at the models' shapes measured in the same run ("roof").

``--system water`` runs the same table on a droplet of 334 waters (1,002 atoms) instead of
chignolin.

FreeCG runs with ``--python`` (default: this interpreter, e.g. .venv/bin/python) and the peers
with ``--peers-python`` (default: .venv-peers/bin/python, made by
``bash benchmarks/peers/install.sh``); a peer whose interpreter is missing is skipped with a
note. Every model gets the same full 5 Å neighbour list, built once here, except TorchMD-NET's,
which search for neighbours inside their forward pass (that search is then in their time).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/peers.py --threads 2
    .venv/bin/python benchmarks/peers.py --quick          # a smoke test: 1 round, 1 call
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by every worker

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKER = HERE / "peers_models.py"
sys.path.insert(0, str(HERE))
from peers_models import CUTOFF, DTYPES, MODELS, PEERS  # noqa: E402


def default_peers_python() -> Path:
    return REPO / ".venv-peers" / "bin" / "python"


def write_geometry(path: Path, numbers: np.ndarray, positions: np.ndarray,
                   cell: np.ndarray | None = None, pbc=False) -> int:  # noqa: ANN001
    """Write the worker's geometry file with a full neighbour list within 5 Å.

    Parameters
    ----------
    path:
        The .npz to write.
    numbers:
        (N,) atomic numbers.
    positions:
        (N, 3) Å.
    cell:
        (3, 3) Å, rows the lattice vectors; None for a molecule.
    pbc:
        Periodic directions, a bool or three bools.

    Returns
    -------
    int
        The number of directed edges (pairs i != j, or periodic images, within 5 Å).
    """
    from freecg_md import build_neighbor_list

    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    nl = build_neighbor_list(positions, CUTOFF, cell, pbc)
    np.savez(path, numbers=np.asarray(numbers, np.int64),
             positions=np.asarray(positions, np.float64), cell=cell, pbc=pbc,
             edge_index=nl.edge_index, cell_shifts=nl.cell_shifts)
    return nl.num_edges


def run_worker(python: Path, model: str, dtype: str, geometry: Path, warmup: int, calls: int,
               threads: int, seed: int, timeout: float, max_gib: float | None = None,
               count_flops: bool = False) -> dict:
    """Run one measurement in a fresh process; its JSON record, or ``{"error": ...}``.

    ``max_gib`` caps the worker's address space (GiB): past it an allocation fails inside
    the worker, which then reports an error, instead of the machine running out of memory
    and its OOM killer choosing a victim, perhaps another user's job.
    """
    limit = None if not max_gib else int(max_gib * 2**30)

    def cap_memory() -> None:
        if limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    command = [str(python), str(WORKER), model, dtype, str(geometry), "--warmup", str(warmup),
               "--calls", str(calls), "--threads", str(threads), "--seed", str(seed)]
    if count_flops:
        command.append("--count-flops")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    # The worker imports freecg_md from the work tree even where it is not installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=timeout, check=False, preexec_fn=cap_memory)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {done.returncode}: " + " | ".join(tail)}


def water_cluster(n_molecules: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A droplet of ``n_molecules`` waters, (3n,) atomic numbers and (3n, 3) Å positions:
    oxygens on a cubic lattice of 3.1 Å (about liquid water's density) nearest the centre,
    each with two hydrogens at 0.96 Å and 104.5 degrees in a random orientation."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil((2 * n_molecules) ** (1 / 3))) + 2
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)
    grid = (grid - (side - 1) / 2) * 3.1
    oxygens = grid[np.argsort(np.linalg.norm(grid, axis=1), kind="stable")[:n_molecules]]
    half = np.radians(104.5) / 2
    local = 0.96 * np.array([[np.sin(half), np.cos(half), 0.0],
                             [-np.sin(half), np.cos(half), 0.0]])
    positions, numbers = [], []
    for oxygen in oxygens:
        rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        positions.extend([oxygen, *(oxygen + local @ rotation.T)])
        numbers.extend([8, 1, 1])
    return np.array(numbers), np.array(positions)


def matmul_throughput(widths: list[int], n_rows: int, threads: int, repeats: int = 10) -> float:
    """The best float32 matrix-product rate (GFLOP/s) at the models' shapes, (n_rows, F)
    times (F, 2F) for each F in ``widths``, with ``threads`` threads: the roofline's
    ceiling (median of ``repeats`` products per shape)."""
    import time

    import torch

    torch.set_num_threads(threads)
    best = 0.0
    for width in widths:
        a, b = torch.randn(n_rows, width), torch.randn(width, 2 * width)
        a @ b
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n_rows * width * 2 * width / statistics.median(times) / 1e9)
    return best


def hardware() -> str:
    """CPU model and count, for the results table."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} logical CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES)
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved rounds; each runs every (model, dtype) once")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per process")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per process")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads in every worker")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 round, 1 warm-up call, 1 timed call")
    parser.add_argument("--python", type=Path, default=Path(sys.executable),
                        help="interpreter for FreeCG")
    parser.add_argument("--peers-python", type=Path, default=default_peers_python(),
                        help="interpreter with mace-torch, torchmd-net and nequip")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="s allowed for one measurement")
    parser.add_argument("--max-gib", type=float, default=None,
                        help="address-space cap of each measurement, GiB (default: none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--system", choices=("chignolin", "water"), default="chignolin",
                        help="chignolin (166 atoms) or a droplet of 334 waters (1,002 atoms)")
    parser.add_argument("--json", type=Path, help="also write every record here")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.calls = 1, 1, 1

    pairs = [(m, d) for m in args.models for d in args.dtypes]
    interpreters = {m: args.peers_python if m in PEERS else args.python for m in args.models}
    for model, python in sorted(interpreters.items()):
        if not python.exists():
            print(f"skipping {model}: {python} does not exist "
                  f"(run: bash benchmarks/peers/install.sh)")
    pairs = [(m, d) for m, d in pairs if interpreters[m].exists()]

    from freecg_md.data.molecules import load_chignolin

    if args.system == "water":
        numbers, positions = water_cluster(334)
    else:
        atoms = load_chignolin().atoms
        numbers, positions = atoms.numbers, atoms.positions
    # The roofline's ceiling, measured before and after the rounds (the better of the two:
    # load from other jobs only lowers it).
    ceiling = [matmul_throughput([64, 128, 256], 2048, args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        geometry = Path(tmp) / f"{args.system}.npz"
        n_edges = write_geometry(geometry, numbers, positions)
        print(f"{args.system}: {len(numbers)} atoms, {n_edges} directed pairs within {CUTOFF} Å; "
              f"{args.rounds} rounds x {args.calls} calls (+{args.warmup} warm-up), "
              f"{args.threads} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
        records: dict[tuple[str, str], list[dict]] = {pair: [] for pair in pairs}
        for round_index in range(args.rounds):
            shift = round_index % max(len(pairs), 1)
            for model, dtype in pairs[shift:] + pairs[:shift]:
                record = run_worker(interpreters[model], model, dtype, geometry, args.warmup,
                                    args.calls, args.threads, args.seed, args.timeout,
                                    args.max_gib, count_flops=round_index == 0)
                records[model, dtype].append(record)
                status = record.get("error") or (
                    f"{statistics.median(record['times_s']) * 1e3:.1f} ms")
                print(f"  round {round_index + 1}/{args.rounds} {model:12} {dtype}: {status}",
                      flush=True)

    ceiling.append(matmul_throughput([64, 128, 256], 2048, args.threads))
    summary = summarise(records)
    print()
    print(f"{datetime.date.today()}; {hardware()}; {args.threads} threads; {args.system}")
    print(f"float32 matrix products at the models' shapes (2048 x F times F x 2F, "
          f"F = 64-256): {max(ceiling):.0f} GFLOP/s (the roofline column's ceiling)")
    print(f"{'model':12} {'dtype':8} {'ms/call':>9} {'/ MACE':>7} {'params':>11} "
          f"{'peak MiB':>9} {'-import':>8} {'GFLOP':>6} {'GFLOP/s':>7} {'roof':>5}  versions")
    for (model, dtype), row in summary.items():
        if "error" in row:
            print(f"{model:12} {dtype:8} FAILED: {row['error']}")
            continue
        mace = summary.get(("mace", dtype), {}).get("median_ms")
        ratio = f"{row['median_ms'] / mace:7.2f}" if mace else f"{'-':>7}"
        versions = " ".join(f"{k} {v}" for k, v in row["versions"].items())
        if row["flops"] and dtype == "float32":
            rate = row["flops"] / (row["median_ms"] * 1e-3) / 1e9
            roof = (f"{row['flops'] / 1e9:6.1f} {rate:7.0f} "
                    f"{100 * rate / max(ceiling):4.0f}%")
        else:
            roof = f"{'-':>6} {'-':>7} {'-':>5}"
        print(f"{model:12} {dtype:8} {row['median_ms']:9.1f} {ratio} {row['n_params']:11,d} "
              f"{row['peak_rss_mib']:9.0f} {row['peak_rss_mib'] - row['baseline_rss_mib']:8.0f}"
              f" {roof}  {versions}")
    if args.json:
        args.json.write_text(json.dumps(
            {"date": str(datetime.date.today()), "hardware": hardware(),
             "threads": args.threads, "system": args.system,
             "matmul_float32_gflops": max(ceiling),
             "records": [r for rs in records.values() for r in rs]},
            indent=1))


def summarise(records: dict[tuple[str, str], list[dict]]) -> dict[tuple[str, str], dict]:
    """Pool the timed calls of all rounds of each pair: median ms, max peak memory."""
    summary = {}
    for pair, runs in records.items():
        good = [r for r in runs if "error" not in r]
        if not good:
            summary[pair] = {"error": runs[0]["error"] if runs else "not run"}
            continue
        times = [t for r in good for t in r["times_s"]]
        summary[pair] = {
            "median_ms": statistics.median(times) * 1e3,
            "n_params": good[0]["n_params"],
            "peak_rss_mib": max(r["peak_rss_mib"] for r in good),
            "baseline_rss_mib": min(r["baseline_rss_mib"] for r in good),
            "versions": good[0]["versions"],
            "flops": next((r["flops"] for r in good if r.get("flops")), None),
        }
    return summary


if __name__ == "__main__":
    main()
