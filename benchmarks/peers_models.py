"""One timed measurement of one force field in one process: the worker of peers.py and scaling.py.

    python benchmarks/peers_models.py MODEL DTYPE GEOMETRY.npz --warmup 2 --calls 5 --threads 2

prints one JSON line: the wall time of every timed energy + forces call (s), the parameter
count, the energy (eV, to check that the call did something), the peak resident memory of
this process (MiB) and the resident memory after the imports, before any model existed (MiB).

Each measurement runs in a process of its own so that its peak memory is its own, and so that
FreeCG (which needs e3nn >= 0.5 and runs in .venv/) and the peers (mace-torch pins
e3nn==0.4.4; they run in .venv-peers/) never share an interpreter. This file therefore
imports only the standard library and numpy at the top; torch and the model's package are
imported inside the builder of the model asked for.

Models (all with random weights from a fixed seed, 5 Å cutoff, energies + forces by autograd):

``freecg``        FreeCG() default: F = 128, 4 layers, G = 16.
``freecg-paper``  FreeCG(hidden=256, num_layers=9, num_groups=32), the paper's size.
``freecg-small``  FreeCG(hidden=64, num_layers=3, num_heads=4, num_groups=8): the size of
                  the shipped chignolin model ``models/chignolin.pt``.
``mace``          MACE: 64 channels, max L = 1 (hidden irreps 64x0e + 64x1o), spherical
                  harmonics to l = 3, correlation order 3, 2 interactions, r_max 5 Å,
                  8 Bessel functions, mace-torch's training defaults for the rest.
``et``            TorchMD-NET's equivariant transformer: 128 channels, 6 layers, 32 ExpNormal
                  functions, 8 heads (the sizes of its MD17 configuration).
``tensornet``     TorchMD-NET's TensorNet: 128 channels, 2 layers, 32 ExpNormal functions.
``nequip``        NequIP (the 0.6 series; see peers/README in benchmarks/README.md): 4 layers,
                  32 features, l_max 2, with parity, 8 Bessel functions.

With ``--count-flops`` the record of a FreeCG model also holds the floating-point operations
of one call as torch's FlopCounterMode counts them (``flops``; see :func:`count_flops`), for
peers.py's roofline column.

Geometry file (written by peers.py / scaling.py): ``numbers`` (N,) int, ``positions``
(N, 3) Å, ``cell`` (3, 3) Å, ``pbc`` (3,) bool, and a full neighbour list within 5 Å shared
by all models that take one: ``edge_index`` (2, E) int (row 0 centre i, row 1 neighbour j),
``cell_shifts`` (E, 3) int (the neighbour sits at r_j + S @ cell). TorchMD-NET's models take
no neighbour list: they search for neighbours inside their forward pass, so their timed call
includes that search.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads libgomp

import numpy as np  # noqa: E402

CUTOFF = 5.0  # Å, the same for every model
MODELS = ("freecg", "freecg-paper", "freecg-small", "mace", "et", "tensornet", "nequip")
PEERS = ("mace", "et", "tensornet", "nequip")
DTYPES = ("float32", "float64")


def rss_mib() -> tuple[float, float]:
    """Current and peak resident set size of this process, MiB (Linux /proc)."""
    current = peak = 0.0
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return current, peak


# A builder returns (call, n_params): ``call()`` computes energy (eV) and forces (eV/Å) of
# the geometry once and returns the energy as a float.
Builder = Callable[[dict, "object"], tuple[Callable[[], float], int]]


def _count(module) -> int:  # noqa: ANN001
    return sum(p.numel() for p in module.parameters())


def _allow_e3nn_044_constants() -> None:
    """Let e3nn 0.4.4 read the Wigner constants it ships, under torch >= 2.6.

    e3nn 0.4.4 (the version mace-torch pins) loads its own ``constants.pt`` with
    ``torch.load`` and no ``weights_only``; torch >= 2.6 defaults to ``weights_only=True``,
    which rejects the ``slice`` objects in that file. Allowing ``slice`` is enough and keeps
    the safe loader on (mace's own import instead switches it off for the whole process).
    """
    import torch

    torch.serialization.add_safe_globals([slice])


# The FreeCG sizes this worker builds (FreeCG() keyword arguments).
FREECG_SIZES = {
    "freecg": {},
    "freecg-paper": {"hidden": 256, "num_layers": 9, "num_groups": 32},
    "freecg-small": {"hidden": 64, "num_layers": 3, "num_heads": 4, "num_groups": 8},
}


def build_freecg(geometry: dict, dtype, trainable: bool = False,  # noqa: ANN001
                 **overrides) -> tuple[Callable[[], float], int]:
    import torch

    from freecg_md import FreeCG

    # Frozen, as FreeCGCalculator and the MD potentials hold it: inference needs no
    # parameter gradients, and large inputs then share their edge runs among threads.
    # Trainable: the same mathematics in torch operations (what the FLOP counter can see).
    model = FreeCG(cutoff=CUTOFF, **overrides).to(dtype).requires_grad_(trainable)
    model.eval()
    numbers = torch.as_tensor(geometry["numbers"], dtype=torch.long)
    positions = torch.as_tensor(geometry["positions"], dtype=dtype)
    edge_index = torch.as_tensor(geometry["edge_index"], dtype=torch.long)
    shifts = torch.as_tensor(geometry["cell_shifts"] @ geometry["cell"], dtype=dtype)

    def call() -> float:
        out = model.energy_and_forces(numbers, positions, edge_index, shifts)
        return float(out["energy"].detach().sum())

    return call, _count(model)


def build_mace(geometry: dict, dtype) -> tuple[Callable[[], float], int]:  # noqa: ANN001
    import torch

    _allow_e3nn_044_constants()
    from e3nn import o3
    from mace import modules

    species = sorted(set(geometry["numbers"].tolist()) | {1, 6, 7, 8, 16})
    n_atoms = len(geometry["numbers"])
    # MACE divides each message sum by the average neighbour count; take this geometry's.
    avg_neighbors = max(geometry["edge_index"].shape[1] / max(n_atoms, 1), 1.0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # e3nn makes its constant buffers in the default dtype
    try:
        model = modules.ScaleShiftMACE(
            r_max=CUTOFF,
            num_bessel=8,
            num_polynomial_cutoff=5,
            max_ell=3,
            interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
            interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
            num_interactions=2,
            num_elements=len(species),
            hidden_irreps=o3.Irreps("64x0e + 64x1o"),
            MLP_irreps=o3.Irreps("16x0e"),
            atomic_energies=np.zeros(len(species)),
            avg_num_neighbors=avg_neighbors,
            atomic_numbers=species,
            correlation=3,
            gate=modules.gate_dict["silu"],
            radial_MLP=[64, 64, 64],
            atomic_inter_scale=1.0,
            atomic_inter_shift=0.0,
        ).to(dtype)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    index = {z: i for i, z in enumerate(species)}
    one_hot = np.zeros((n_atoms, len(species)))
    one_hot[np.arange(n_atoms), [index[z] for z in geometry["numbers"].tolist()]] = 1.0
    cell = torch.as_tensor(geometry["cell"], dtype=dtype)
    unit_shifts = torch.as_tensor(geometry["cell_shifts"], dtype=dtype)
    base = {
        "node_attrs": torch.as_tensor(one_hot, dtype=dtype),
        # MACE's vector is r[edge_index[1]] - r[edge_index[0]] + shift: ours, row for row.
        "edge_index": torch.as_tensor(geometry["edge_index"], dtype=torch.long),
        "shifts": unit_shifts @ cell,
        "unit_shifts": unit_shifts,
        "cell": cell.reshape(1, 3, 3),
        "batch": torch.zeros(n_atoms, dtype=torch.long),
        "ptr": torch.tensor([0, n_atoms], dtype=torch.long),
    }
    positions = torch.as_tensor(geometry["positions"], dtype=dtype)

    def call() -> float:
        # A fresh leaf each call: MACE marks data["positions"] as requiring grad itself.
        data = dict(base, positions=positions.clone())
        out = model(data, training=False, compute_force=True)
        return float(out["energy"].detach().sum())

    return call, _count(model)


def build_torchmdnet(geometry: dict, dtype, kind: str) -> tuple[Callable[[], float], int]:  # noqa: ANN001
    import torch
    from torchmdnet.models.model import create_model

    n_atoms = len(geometry["numbers"])
    per_atom = np.bincount(geometry["edge_index"][0], minlength=n_atoms)
    # TorchMD-NET caps the neighbours per atom; leave room so that none is ever dropped.
    max_neighbors = int(max(64, 2 * per_atom.max(initial=0)))
    periodic = bool(np.any(geometry["pbc"]))
    args = {
        "model": kind,
        "precision": 64 if dtype == torch.float64 else 32,
        "embedding_dimension": 128,
        "num_layers": 6 if kind == "equivariant-transformer" else 2,
        "num_rbf": 32,
        "rbf_type": "expnorm",
        "trainable_rbf": False,
        "activation": "silu",
        "attn_activation": "silu",
        "num_heads": 8,
        "distance_influence": "both",
        "neighbor_embedding": True,
        "cutoff_lower": 0.0,
        "cutoff_upper": CUTOFF,
        "max_z": 100,
        "max_num_neighbors": max_neighbors,
        "equivariance_invariance_group": "O(3)",
        "aggr": "add",
        "derivative": True,
        "atom_filter": -1,
        "prior_model": None,
        "output_model": "Scalar",
        "reduce_op": "add",
        "box_vecs": geometry["cell"].tolist() if periodic else None,
    }
    model = create_model(args)
    model.eval()
    z = torch.as_tensor(geometry["numbers"], dtype=torch.long)
    positions = torch.as_tensor(geometry["positions"], dtype=dtype)
    batch = torch.zeros(n_atoms, dtype=torch.long)

    def call() -> float:
        energy, _forces = model(z, positions, batch)
        return float(energy.detach().sum())

    return call, _count(model)


def build_nequip(geometry: dict, dtype) -> tuple[Callable[[], float], int]:  # noqa: ANN001
    import torch

    _allow_e3nn_044_constants()
    from ase.data import chemical_symbols
    from nequip.data import AtomicDataDict
    from nequip.model import model_from_config

    species = sorted(set(geometry["numbers"].tolist()) | {1, 6, 7, 8, 16})
    n_atoms = len(geometry["numbers"])
    config = {
        "model_builders": ["SimpleIrrepsConfig", "EnergyModel", "ForceOutput"],
        "chemical_symbols": [chemical_symbols[z] for z in species],
        "r_max": CUTOFF,
        "num_layers": 4,
        "l_max": 2,
        "parity": True,
        "num_features": 32,
        "num_basis": 8,
        "BesselBasis_trainable": True,
        "PolynomialCutoff_p": 6,
        "invariant_layers": 2,
        "invariant_neurons": 64,
        "avg_num_neighbors": float(geometry["edge_index"].shape[1] / max(n_atoms, 1)),
        "use_sc": True,
        "model_dtype": "float64" if dtype == torch.float64 else "float32",
    }
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # nequip refuses a float64 model under a float32 default
    try:
        model = model_from_config(config, initialize=True).to(dtype)
    finally:
        torch.set_default_dtype(previous)
    model.eval()
    index = {z: i for i, z in enumerate(species)}
    base = {
        AtomicDataDict.ATOM_TYPE_KEY: torch.as_tensor(
            [index[z] for z in geometry["numbers"].tolist()], dtype=torch.long
        ),
        AtomicDataDict.EDGE_INDEX_KEY: torch.as_tensor(geometry["edge_index"], dtype=torch.long),
        AtomicDataDict.EDGE_CELL_SHIFT_KEY: torch.as_tensor(geometry["cell_shifts"], dtype=dtype),
        AtomicDataDict.CELL_KEY: torch.as_tensor(geometry["cell"], dtype=dtype).reshape(1, 3, 3),
        AtomicDataDict.BATCH_KEY: torch.zeros(n_atoms, dtype=torch.long),
        AtomicDataDict.BATCH_PTR_KEY: torch.tensor([0, n_atoms], dtype=torch.long),
    }
    positions = torch.as_tensor(geometry["positions"], dtype=dtype)

    def call() -> float:
        data = dict(base)
        data[AtomicDataDict.POSITIONS_KEY] = positions.clone()
        out = model(data)
        return float(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().sum())

    return call, _count(model)


def load_geometry(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a geometry file written by ``peers.write_geometry``, by name."""
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


def build(name: str, geometry: dict, dtype) -> tuple[Callable[[], float], int]:  # noqa: ANN001
    """The timed call and parameter count of model ``name`` (one of :data:`MODELS`)."""
    if name in FREECG_SIZES:
        return build_freecg(geometry, dtype, **FREECG_SIZES[name])
    if name == "mace":
        return build_mace(geometry, dtype)
    if name == "et":
        return build_torchmdnet(geometry, dtype, "equivariant-transformer")
    if name == "tensornet":
        return build_torchmdnet(geometry, dtype, "tensornet")
    if name == "nequip":
        return build_nequip(geometry, dtype)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def count_flops(name: str, geometry: dict, dtype) -> float | None:  # noqa: ANN001
    """Floating-point operations of one energy + forces call of FreeCG model ``name``, as
    torch's FlopCounterMode counts them (matrix products, batched products and the
    einsums made of them; elementwise work is not counted); None for the peers.

    The frozen model's fused CPU kernels are invisible to the counter, so the count is
    taken on the same model trainable, which runs the same mathematics in torch operations.
    """
    if name not in FREECG_SIZES:
        return None
    from torch.utils.flop_counter import FlopCounterMode

    call, _ = build_freecg(geometry, dtype, trainable=True, **FREECG_SIZES[name])
    with FlopCounterMode(display=False) as counter:
        call()
    return float(counter.get_total_flops())


def package_versions(name: str) -> dict[str, str]:
    """Versions of torch and of the packages that model ``name`` runs on."""
    from importlib import metadata

    packages = {
        "freecg": ["freecg-md", "e3nn"],
        "freecg-paper": ["freecg-md", "e3nn"],
        "freecg-small": ["freecg-md", "e3nn"],
        "mace": ["mace-torch", "e3nn"],
        "et": ["torchmd-net"],
        "tensornet": ["torchmd-net"],
        "nequip": ["nequip", "e3nn"],
    }[name]
    versions = {}
    for package in ["torch", *packages]:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    return versions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=MODELS)
    parser.add_argument("dtype", choices=DTYPES)
    parser.add_argument("geometry", type=Path, help=".npz written by peers.py or scaling.py")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--calls", type=int, default=5, help="timed calls")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count-flops", action="store_true",
                        help="also count a FreeCG call's FLOPs (an extra, untimed pass)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    baseline, _ = rss_mib()
    geometry = load_geometry(args.geometry)
    dtype = getattr(torch, args.dtype)
    start = time.perf_counter()
    call, n_params = build(args.model, geometry, dtype)
    build_s = time.perf_counter() - start
    energy = float("nan")
    for _ in range(args.warmup):
        energy = call()
    times = []
    for _ in range(args.calls):
        start = time.perf_counter()
        energy = call()
        times.append(time.perf_counter() - start)
    _, peak = rss_mib()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # Counted after the timings and the peak memory are read (the counting pass keeps its
    # own graph); a count that fails loses the count, not the timings.
    flops = None
    if args.count_flops:
        try:
            flops = count_flops(args.model, geometry, dtype)
        except (MemoryError, RuntimeError) as error:
            print(f"FLOP count failed: {error}", file=sys.stderr)
    record = {
        "model": args.model,
        "dtype": args.dtype,
        "n_atoms": int(len(geometry["numbers"])),
        "n_edges": int(geometry["edge_index"].shape[1]),
        "n_params": int(n_params),
        "times_s": times,
        "build_s": build_s,
        "energy_eV": energy,
        "flops": flops,
        # VmHWM and ru_maxrss are the same high-water mark; both kept for a cross-check.
        "peak_rss_mib": peak,
        "maxrss_mib": usage.ru_maxrss / 1024,
        "baseline_rss_mib": baseline,
        "threads": torch.get_num_threads(),
        "versions": package_versions(args.model),
        "python": sys.executable,
    }
    print("RESULT " + json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
