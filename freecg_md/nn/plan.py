"""How one pass of the model is executed: chosen in one place, visible to the user.

The model's mathematics is the same on every path; what changes is how the work is laid
out. :func:`plan_pass` decides, from the device, whether the model is frozen, the system's
size and the model's settings, and returns an :class:`ExecutionPlan`; ``FreeCG.forward``
follows it and keeps the last one (``model.last_plan``), and
:meth:`freecg_md.md.FreeCGPotential.execution` reports it with the choice of worker
processes. The paths:

- **whole pass, torch operations**: training (any device), a GPU, or a CPU without the
  fused kernels; ``compile_network()`` applies here;
- **fused CPU kernels**: a frozen model on a CPU (:mod:`~freecg_md.nn.cpu`), with
  the default choices of :data:`KERNEL_CHOICES` (the authors' settings run on torch
  operations);
- **runs of edges**: large passes, cut into runs of whole centre atoms
  (:mod:`~freecg_md.nn.chunks`): shared among threads when frozen, checkpointed when
  training; on a CPU from ``SPATIAL_ORDER_MIN_ATOMS`` atoms in a space-filling-curve order.

A GPU backend (fused CUDA kernels, CUDA graphs) goes in as another ``kernels`` value here
and a branch where ``FreeCG.forward`` reads it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from . import chunks as chunks_module
from .cpu.kernels import kernels_available
from .cpu.threads import team_threads
from .precision import check_matmul_precision

__all__ = ["DEFAULT_EDGE_CHUNK", "FUSED_EDGES_PER_RUN", "FUSED_MIN_EDGES_PER_THREAD",
           "GPU_RUNS_ABOVE_EDGES", "KERNEL_CHOICES", "MAX_EDGE_RUNS", "SPATIAL_ORDER_MIN_ATOMS",
           "ExecutionPlan", "kernels_support", "plan_pass", "takes_fused_kernels"]

# Edges per run of the torch-operation paths where FreeCG.edge_chunk_size is "auto" (the
# pass goes in runs from four runs' worth of edges on), and the most runs a trainable pass
# is cut into. Their runs are small so that a run's (E, 8, F) tensors stay in the caches.
DEFAULT_EDGE_CHUNK = 1024
MAX_EDGE_RUNS = 64
# The fused CPU kernels' runs ("auto"): one per thread where the pass has at least
# FUSED_MIN_EDGES_PER_THREAD edges per thread, and more, in multiples of the threads, only
# where a run would exceed FUSED_EDGES_PER_RUN edges. Their widest intermediates are (E, 3F)
# rows, not (E, 8, F) tensors, so the caches ask little of the run size, while each run
# costs a fixed few dozen torch calls each way and a hand-off to a thread: small runs spent
# a chignolin call's time on that (benchmarks/README.md, runs). A run count that is not a
# multiple of the threads leaves a thread idle at the end of each layer.
FUSED_EDGES_PER_RUN = 8192
FUSED_MIN_EDGES_PER_THREAD = 1024
# On a GPU, passes with fewer edges than this are not cut into runs.
GPU_RUNS_ABOVE_EDGES = 1_000_000
# From this many atoms a CPU pass in runs relabels the atoms in a space-filling-curve order
# (spatial_order.py): in an arbitrary order a large system's runs read rows spread over all
# of it. Below it a system's per-atom rows fit the caches in any order.
SPATIAL_ORDER_MIN_ATOMS = 2048


# The choices (FreeCGConfig) the fused CPU kernels compute; a model with others runs on
# torch operations.
KERNEL_CHOICES: dict[str, Any] = {
    "self_loops": False,
    "vector_message_cutoff": True,
    "edge_update": "rejection",
    "enhancer": "linear",
}


def kernels_support(config: Any) -> bool:
    """Whether the fused CPU kernels compute the layers of a model with ``config``."""
    return all(getattr(config, name) == value for name, value in KERNEL_CHOICES.items())


def takes_fused_kernels(model: torch.nn.Module, device: torch.device | str,
                        create_graph: bool = False) -> bool:
    """Whether a pass of ``model`` on ``device`` goes through the fused CPU kernels: a
    frozen model (no parameter needs a gradient, and ``create_graph`` is False, since the
    kernels' backward cannot be differentiated again) on a CPU, with ``fused_kernels`` on,
    the kernels' choices (:func:`kernels_support`) and the kernels built."""
    frozen = not create_graph and not any(p.requires_grad for p in model.parameters())
    return (frozen and model.fused_kernels and torch.device(device).type == "cpu"
            and kernels_support(model.config) and kernels_available())


@dataclass(frozen=True)
class ExecutionPlan:
    """The execution path of one pass.

    Attributes
    ----------
    device:
        ``"cpu"``, ``"cuda"``, ...
    frozen:
        No parameter needs a gradient and the forces are not differentiated again: the
        inference-only paths (threads, fused kernels) may run.
    kernels:
        ``"torch"`` (torch operations) or ``"fused-cpu"`` (:mod:`~freecg_md.nn.cpu`).
    compiled:
        The network runs through ``torch.compile`` (whole passes with torch operations).
    max_edges_per_run:
        The pass is cut into runs of at most about this many edges; None: one whole pass.
    n_runs:
        How many runs of about equal size the pass is cut into (one more where the atoms'
        boundaries ask for it); None: one whole pass.
    threads:
        Threads sharing the runs (frozen CPU passes in runs), else 1.
    keep_graphs:
        Runs keep their graphs for the backward pass (else they are recomputed).
    spatial_order:
        The atoms are relabelled in a space-filling-curve order for the pass.
    matmul_precision:
        ``"float32"``, or the reduced-precision products of the pass
        (:mod:`~freecg_md.nn.precision`): ``"bfloat16"`` in the interaction layers on a
        CPU, ``"tf32"`` on a CUDA GPU.
    """

    device: str
    frozen: bool
    kernels: str
    compiled: bool
    max_edges_per_run: int | None
    n_runs: int | None
    threads: int
    keep_graphs: bool
    spatial_order: bool
    matmul_precision: str = "float32"

    @property
    def in_runs(self) -> bool:
        return self.max_edges_per_run is not None

    def describe(self) -> str:
        """One line, e.g. ``cpu, frozen, fused-cpu kernels, one whole pass``."""
        parts = [self.device, "frozen" if self.frozen else "trainable",
                 f"{self.kernels} kernels" if self.kernels != "torch" else "torch operations"]
        if self.compiled:
            parts.append("torch.compile")
        if self.in_runs:
            parts.append(f"{self.n_runs} runs of at most {self.max_edges_per_run} edges"
                         + (f" in {self.threads} threads" if self.threads > 1 else "")
                         + ("" if self.keep_graphs else ", recomputed in the backward pass")
                         + (", atoms in space-filling-curve order" if self.spatial_order
                            else ""))
        else:
            parts.append("one whole pass")
        if self.matmul_precision == "bfloat16":
            parts.append("bfloat16 products in the interaction layers")
        elif self.matmul_precision == "tf32":
            parts.append("TF32 products")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


def plan_pass(model: torch.nn.Module, device: torch.device | str, n_atoms: int, n_edges: int,
              create_graph: bool = False) -> ExecutionPlan:
    """The execution path of a pass of ``model`` over ``n_atoms`` atoms and ``n_edges``
    edges within the cutoff on ``device``.

    Parameters
    ----------
    model:
        A :class:`~freecg_md.nn.FreeCG` (its ``edge_chunk_size``, ``fused_kernels``,
        ``matmul_precision``, compiled network, parameters' ``requires_grad`` and config
        are read).
    create_graph:
        The forces will be differentiated again (a force loss): only the paths whose
        backward pass autograd can differentiate are allowed.
    """
    device = torch.device(device)
    on_cpu = device.type == "cpu"
    frozen = not create_graph and not any(p.requires_grad for p in model.parameters())
    # Where the kernels run they take precedence over compile_network(): torch.compile does
    # not trace them, and its code is slower than theirs (benchmarks/bench_compile.py).
    fused = takes_fused_kernels(model, device, create_graph)
    # Checkpointed runs only save memory, at the cost of recomputing each run in the
    # backward pass: a trainable model takes them only where the pass is too large to keep
    # whole.
    keep_graphs = chunks_module.keeps_graphs(n_edges, model.config.hidden,
                                             model.config.num_layers)
    # team_threads: the calling thread may be running alone for the pass (see FreeCG).
    threads = team_threads() if (on_cpu and frozen) else 1
    chunk = model.edge_chunk_size
    if not (chunk is None or chunk == "auto" or (isinstance(chunk, int) and chunk >= 1)):
        raise ValueError(f"edge_chunk_size={chunk!r}: expected 'auto', a positive number of "
                         "edges, or None (no runs)")
    if chunk == "auto" and fused:
        max_edges, n_runs = _fused_runs(n_edges, threads)
    else:
        max_edges, n_runs = _torch_runs(DEFAULT_EDGE_CHUNK if chunk == "auto" else chunk,
                                        n_edges, on_cpu, frozen, keep_graphs)
    precision = check_matmul_precision(getattr(model, "matmul_precision", "float32"), device,
                                       fused_cpu=fused)
    # The run loop depends on the data, which torch.compile would recompile for; and the
    # compiled backward cannot be differentiated again (a force loss).
    compiled = (max_edges is None and not fused and not create_graph
                and getattr(model, "_compiled_network", None) is not None)
    return ExecutionPlan(
        device=str(device), frozen=frozen, kernels="fused-cpu" if fused else "torch",
        compiled=compiled, max_edges_per_run=max_edges, n_runs=n_runs,
        threads=threads if max_edges is not None else 1,
        keep_graphs=keep_graphs if max_edges is not None else True,
        spatial_order=(max_edges is not None and on_cpu
                       and n_atoms >= SPATIAL_ORDER_MIN_ATOMS),
        matmul_precision=precision)


def _fused_runs(n_edges: int, threads: int) -> tuple[int | None, int | None]:
    """``(max_edges_per_run, n_runs)`` of a pass through the fused kernels with
    ``edge_chunk_size = "auto"`` (see ``FUSED_EDGES_PER_RUN``); ``(None, None)``: whole."""
    share = threads if threads > 1 and n_edges >= threads * FUSED_MIN_EDGES_PER_THREAD else 1
    n_runs = share * -(-n_edges // (share * FUSED_EDGES_PER_RUN))
    return (FUSED_EDGES_PER_RUN, n_runs) if n_runs > 1 else (None, None)


def _torch_runs(chunk: int | None, n_edges: int, on_cpu: bool, frozen: bool,
                keep_graphs: bool) -> tuple[int | None, int | None]:
    """``(max_edges_per_run, n_runs)`` of runs of about ``chunk`` edges (an explicit
    ``edge_chunk_size``, or the torch-operation paths' default); ``(None, None)``: whole."""
    if chunk is None:
        return None, None
    # Runs pay off from about four runs' worth of edges. A GPU wants whole passes: there
    # runs only relieve memory.
    runs_above = 4 * chunk if on_cpu else max(4 * chunk, GPU_RUNS_ABOVE_EDGES)
    if n_edges <= runs_above or (not frozen and keep_graphs):
        return None, None
    max_edges = chunk
    if not frozen:
        # Each run's backward pass through autograd writes a gradient of every atom's
        # gathered features, a cost of runs x atoms; capping the number of runs keeps it
        # linear in the system size, at the price of larger runs.
        max_edges = max(max_edges, -(-n_edges // MAX_EDGE_RUNS))
    return max_edges, -(-n_edges // max_edges)
