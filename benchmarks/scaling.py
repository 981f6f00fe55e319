"""Time and peak memory of energy + forces against system size: periodic water-like boxes.

Each box is a cubic lattice of water molecules at liquid water's number density (0.0334
molecules per Å^3, so 0.100 atoms per Å^3), every molecule turned at random and nudged by a
small random displacement (seeded), in a periodic cell. Sizes are targets in atoms; the box
is the nearest cube of molecules (166 -> 192, 1,000 -> 1,029, 5,000 -> 5,184,
50,000 -> 52,728 atoms). Every (size, model) is measured in a fresh process
(benchmarks/peers_models.py, the worker of peers.py), so each peak memory is its own; the
measurements are interleaved over ``--rounds``. FreeCG runs with ``--python``, the peers with
``--peers-python`` (.venv-peers, from ``bash benchmarks/peers/install.sh``).

Writes benchmarks/scaling.csv (one row per size and model) and benchmarks/scaling.png (time
per call and peak memory against atoms, log-log), and prints the time per atom.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/scaling.py --threads 2
    .venv/bin/python benchmarks/scaling.py --quick        # 166 and 1,000 atoms, 1 call
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # inherited by every worker

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import default_peers_python, hardware, run_worker, write_geometry  # noqa: E402
from peers_models import DTYPES, MODELS, PEERS  # noqa: E402

WATER_DENSITY = 0.0334  # molecules per Å^3: liquid water at 300 K, 0.997 g/cm^3
OH_BOND = 0.9572  # Å, TIP3P geometry
HOH_ANGLE = np.deg2rad(104.52)


def water_box(target_atoms: int, seed: int = 0,
              jitter: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A periodic cubic box of water molecules near ``target_atoms`` atoms.

    Parameters
    ----------
    target_atoms:
        Wanted number of atoms; the box holds ``3 k^3`` with ``k`` the nearest integer to
        ``(target_atoms / 3) ** (1/3)``.
    seed:
        Seed of the orientations and displacements.
    jitter:
        Standard deviation of each molecule's random displacement per axis, Å.

    Returns
    -------
    numbers : (N,) int
        8 (O) and 1 (H), three per molecule.
    positions : (N, 3) float
        Å, wrapped into the cell.
    cell : (3, 3) float
        Å, a cube of side ``k / WATER_DENSITY ** (1/3)``.
    """
    k = max(1, round((target_atoms / 3) ** (1 / 3)))
    spacing = WATER_DENSITY ** (-1 / 3)  # Å between lattice sites, 3.10
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(k),) * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = (grid + 0.5) * spacing + rng.normal(scale=jitter, size=grid.shape)
    half = HOH_ANGLE / 2
    local = np.array([[0.0, 0.0, 0.0],
                      [OH_BOND * np.sin(half), 0.0, OH_BOND * np.cos(half)],
                      [-OH_BOND * np.sin(half), 0.0, OH_BOND * np.cos(half)]])
    # Random rotations from random unit quaternions (uniform over SO(3)).
    q = rng.normal(size=(len(grid), 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    rotations = np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], 1)
    positions = centres[:, None, :] + np.einsum("mij,aj->mai", rotations, local)
    side = k * spacing
    positions = np.mod(positions.reshape(-1, 3), side)
    numbers = np.tile([8, 1, 1], len(grid))
    return numbers, positions, np.eye(3) * side


def default_max_gib() -> float | None:
    """80% of the machine's memory, GiB: the largest boxes need more than any machine here
    has (FreeCG at 1,029 atoms already peaked at 7 GiB), and a worker that fails an
    allocation reports it, where the OOM killer might instead end somebody else's job."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(0.8 * int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=None,
                        help="target numbers of atoms (default: 166 1000 5000 50000)")
    parser.add_argument("--models", nargs="+", default=["freecg", "mace"], choices=MODELS)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=3, help="timed calls per process")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per process")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 round, 1 timed call, sizes 166 and 1000 unless given")
    parser.add_argument("--python", type=Path, default=Path(sys.executable),
                        help="interpreter for FreeCG")
    parser.add_argument("--peers-python", type=Path, default=default_peers_python())
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="s allowed for one measurement")
    parser.add_argument("--max-gib", type=float, default=default_max_gib(),
                        help="address-space cap of each measurement, GiB (default: 80%% of "
                        "MemTotal); a size that needs more is recorded as failed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "scaling",
                        help="writes OUT.csv and OUT.png")
    args = parser.parse_args()
    if args.quick:
        args.sizes = args.sizes or [166, 1000]
        args.rounds, args.warmup, args.calls = 1, 1, 1
    args.sizes = args.sizes or [166, 1000, 5000, 50000]

    interpreters = {m: args.peers_python if m in PEERS else args.python for m in args.models}
    models = []
    for model in args.models:
        if interpreters[model].exists():
            models.append(model)
        else:
            print(f"skipping {model}: {interpreters[model]} does not exist "
                  f"(run: bash benchmarks/peers/install.sh)")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        geometries = {}
        for size in args.sizes:
            numbers, positions, cell = water_box(size, seed=args.seed)
            path = Path(tmp) / f"water_{size}.npz"
            n_edges = write_geometry(path, numbers, positions, cell, pbc=True)
            geometries[size] = path
            print(f"target {size}: {len(numbers)} atoms, box {cell[0, 0]:.2f} Å, "
                  f"{n_edges / len(numbers):.1f} neighbours per atom within 5 Å")
        results: dict[tuple[int, str], list[dict]] = {
            (s, m): [] for s in args.sizes for m in models}
        for round_index in range(args.rounds):
            for size in args.sizes:
                order = models[round_index % len(models):] + models[:round_index % len(models)]
                for model in order:
                    record = run_worker(interpreters[model], model, args.dtype,
                                        geometries[size], args.warmup, args.calls,
                                        args.threads, args.seed, args.timeout,
                                        args.max_gib)
                    results[size, model].append(record)
                    status = record.get("error") or (
                        f"{statistics.median(record['times_s']) * 1e3:.1f} ms, "
                        f"peak {record['peak_rss_mib']:.0f} MiB")
                    print(f"  round {round_index + 1}/{args.rounds} {size:>6} {model:12} "
                          f"{status}", flush=True)

    for (size, model), runs in results.items():
        good = [r for r in runs if "error" not in r]
        if not good:
            rows.append({"model": model, "dtype": args.dtype, "target": size,
                         "error": runs[0]["error"] if runs else "not run"})
            continue
        median_ms = statistics.median(t for r in good for t in r["times_s"]) * 1e3
        rows.append({
            "model": model, "dtype": args.dtype, "target": size,
            "n_atoms": good[0]["n_atoms"], "n_edges": good[0]["n_edges"],
            "median_ms": round(median_ms, 3),
            "us_per_atom": round(median_ms * 1e3 / good[0]["n_atoms"], 3),
            "peak_rss_mib": round(max(r["peak_rss_mib"] for r in good), 1),
            "baseline_rss_mib": round(min(r["baseline_rss_mib"] for r in good), 1),
            "n_params": good[0]["n_params"], "threads": good[0]["threads"],
            "date": str(datetime.date.today()), "hardware": hardware(), "error": "",
        })

    fields = ["model", "dtype", "target", "n_atoms", "n_edges", "median_ms", "us_per_atom",
              "peak_rss_mib", "baseline_rss_mib", "n_params", "threads", "date", "hardware",
              "error"]
    csv_path = args.out.with_suffix(".csv")
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\n{datetime.date.today()}; {hardware()}; {args.threads} threads; {args.dtype}")
    print(f"{'model':12} {'atoms':>7} {'ms/call':>10} {'µs/atom':>9} {'peak MiB':>9}")
    for row in rows:
        if row["error"]:
            print(f"{row['model']:12} {row['target']:>7} FAILED: {row['error']}")
        else:
            print(f"{row['model']:12} {row['n_atoms']:>7} {row['median_ms']:10.1f} "
                  f"{row['us_per_atom']:9.1f} {row['peak_rss_mib']:9.0f}")
    plot(rows, args.out.with_suffix(".png"), f"{hardware()}, {args.threads} threads, "
         f"{args.dtype}, {datetime.date.today()}")
    print(f"wrote {csv_path} and {args.out.with_suffix('.png')}")


def plot(rows: list[dict], path: Path, subtitle: str) -> None:
    """Time per call (ms) and peak memory (MiB) against atoms, log-log, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, (ax_time, ax_mem) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for model in dict.fromkeys(r["model"] for r in rows):
        good = sorted((r for r in rows if r["model"] == model and not r["error"]),
                      key=lambda r: r["n_atoms"])
        if not good:
            continue
        atoms = [r["n_atoms"] for r in good]
        ax_time.plot(atoms, [r["median_ms"] for r in good], "o-", label=model)
        ax_mem.plot(atoms, [r["peak_rss_mib"] for r in good], "o-", label=model)
    for ax, label in ((ax_time, "energy + forces, ms per call"),
                      (ax_mem, "peak resident memory, MiB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("atoms (periodic water-like box)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        # Labelled minor ticks of a short log axis overlap into an unreadable row.
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.legend()
    fig.suptitle(f"Scaling with system size ({subtitle})", fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
