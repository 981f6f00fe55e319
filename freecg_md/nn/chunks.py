"""Edges in runs of whole centre atoms, evaluated one run at a time.

Every message of FreeCG lives on an edge and is summed on its centre atom, and the widest
tensors are per edge, (E, 8, F). With edges sorted by centre, a run of consecutive centre
atoms owns a contiguous slice of edges, and its sums need nothing from other runs. So a
layer can process one run at a time and concatenate the per-atom results: no (E, 8, F)
tensor is made whole, and a run's tensors stay in the CPU caches. Where autograd records a
run (training), the run is checkpointed (:func:`run_chunk`); for frozen models the layer
shares the runs among threads (:class:`~freecg_md.nn.layer.RunsInParallel`, with a pool
from :func:`run_pool`), and the per-atom work between them in blocks of atoms
(:func:`atom_blocks`, :class:`AtomsInBlocks`). Up to a size (:func:`keeps_graphs`: edges
x channels x layers) nothing is recomputed in the backward pass: the embedding is computed
whole and the threads keep their runs' graphs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

Result = TypeVar("Result")
# A pass keeps its runs' graphs for the backward pass (and computes its embedding whole)
# while edges x channels x layers stays at or below this, and recomputes them above: the
# kept tensors grow with all three. The limit is 65,536 edges of FreeCG() (F = 128, 4
# layers), about a 1,000-atom water box, whose kept graphs take gigabytes.
KEEP_GRAPHS_MAX_EDGE_CHANNELS = 65536 * 128 * 4

# Atoms per block of a layer's per-atom work in the pool (:func:`atom_blocks`): a block's
# (512, 8, 128) float32 vectors are 2 MiB, so the few such tensors a block's operations
# pass along (v, w_neighbor, the threads' sums) stay in the caches (a core's 2 MiB L2, the
# shared L3) from one operation to the next. Done whole in the calling thread, that work
# on a large box would stream tensors far larger than the caches through every operation.
ATOM_BLOCK = 512


def keeps_graphs(n_edges: int, hidden: int, num_layers: int) -> bool:
    """Whether a pass of ``n_edges`` edges through ``num_layers`` layers of ``hidden``
    channels keeps its runs' graphs (see ``KEEP_GRAPHS_MAX_EDGE_CHANNELS``)."""
    return n_edges * hidden * num_layers <= KEEP_GRAPHS_MAX_EDGE_CHANNELS


class EdgeChunk(NamedTuple):
    """Centre atoms ``atoms`` and their edges ``edges`` (both slices)."""

    atoms: slice
    edges: slice


class EdgeRun(NamedTuple):
    """The edges of centre atoms ``first_atom .. first_atom + n_centers - 1``.

    ``centers`` (E_run,) count from ``first_atom``; ``neighbors`` (E_run,) are atom indices
    of the whole system; ``distances`` (E_run,) Å, ``sh`` (E_run, 8), ``phi`` (E_run,).
    For the kernels (:func:`with_distinct_neighbors`), ``unique_neighbors`` (U,) the
    distinct neighbours, ``local_neighbors`` (E_run,) each edge's position among them, and
    ``neighbor_order`` (E_run,) the edges sorted by neighbour; None otherwise.
    """

    first_atom: int
    n_centers: int
    centers: torch.Tensor
    neighbors: torch.Tensor
    distances: torch.Tensor
    sh: torch.Tensor
    phi: torch.Tensor
    unique_neighbors: torch.Tensor | None = None
    local_neighbors: torch.Tensor | None = None
    neighbor_order: torch.Tensor | None = None


def with_distinct_neighbors(run: EdgeRun) -> EdgeRun:
    """``run`` prepared for the kernels (:mod:`freecg_md.nn.kernels`): its distinct
    neighbours listed, so that the kernels' autograd functions read one gathered row per
    neighbour atom, (U, 8, F), instead of one per edge, (E_run, 8, F) (a run of a
    chignolin has about a tenth as many distinct neighbours as edges), and its edges in
    order of their neighbour, the order in which a backward kernel adds into the
    neighbours' rows (:func:`~freecg_md.nn.fused_run.run_backward` reads the per-atom
    tensors at the atom indices, and needs only the order)."""
    unique, local = torch.unique(run.neighbors, return_inverse=True)
    # The kernels read the index and edge tensors as they lie: a whole pass's centres can
    # be a strided row of the caller's edge index.
    return run._replace(centers=run.centers.contiguous(), neighbors=run.neighbors.contiguous(),
                        sh=run.sh.contiguous(), phi=run.phi.contiguous(),
                        unique_neighbors=unique, local_neighbors=local,
                        neighbor_order=torch.argsort(local, stable=True))


def split_runs(chunks: list[EdgeChunk], centers: torch.Tensor, neighbors: torch.Tensor,
               distances: torch.Tensor, sh: torch.Tensor, phi: torch.Tensor) -> list[EdgeRun]:
    """The edge tensors cut into the runs of ``chunks``.

    One ``torch.split`` per tensor, not a slice per run: the backward pass of a slice makes
    a zero gradient of the whole tensor for every run, which costs runs x edges.
    """
    sizes = [chunk.edges.stop - chunk.edges.start for chunk in chunks]
    parts = [torch.split(tensor, sizes) for tensor in (centers, neighbors, distances, sh, phi)]
    return [
        EdgeRun(chunk.atoms.start, chunk.atoms.stop - chunk.atoms.start,
                run_centers - chunk.atoms.start, *rest)
        for chunk, run_centers, *rest in zip(chunks, *parts, strict=True)
    ]


def is_sorted(centers: torch.Tensor) -> bool:
    """Whether ``centers`` (E,) never decreases."""
    return bool((centers[1:] >= centers[:-1]).all()) if centers.numel() > 1 else True


def edge_chunks(centers: torch.Tensor, n_atoms: int, max_edges: int) -> list[EdgeChunk]:
    """Split edges sorted by centre into runs of whole atoms of at most ``max_edges`` edges.

    Parameters
    ----------
    centers:
        (E,) centre atom of each edge, sorted (non-decreasing).
    n_atoms:
        N; the chunks cover atoms 0 to N - 1, including atoms without edges.
    max_edges:
        Most edges in a chunk. An atom with more edges than that gets a chunk of its own:
        no edge is ever dropped.

    Returns
    -------
    list of EdgeChunk
        In order; their atom slices tile ``range(N)`` and their edge slices ``range(E)``.
    """
    if max_edges < 1:
        raise ValueError(f"max_edges={max_edges!r}: expected a positive number of edges")
    counts = torch.bincount(centers, minlength=n_atoms).cpu().numpy()
    # ends[a] is one past the last edge of atom a.
    ends = np.cumsum(counts)
    n_edges = int(ends[-1]) if n_atoms else 0
    # Runs of even size, since runs go to threads side by side. Planned for the fewest runs
    # that the limit allows, a plan can end in a short tail run (the limit can cut runs
    # short of their aim); then one run more evens them out.
    n_runs = max(1, -(-n_edges // max_edges))
    for _ in range(4):
        chunks = _even_runs(ends, n_runs, max_edges)
        if len(chunks) <= n_runs:
            break
        n_runs += 1
    return chunks


def _even_runs(ends: np.ndarray, n_runs: int, max_edges: int) -> list[EdgeChunk]:
    """Runs of whole atoms (``ends`` (N,): one past each atom's last edge) that aim at
    ``n_runs`` equal shares of the edges: each run aims at an equal share of the edges
    still to place and ends at the atom boundary nearest that aim, within ``max_edges``.
    (Filling runs up to a target instead left a tail: chignolin's 5,546 edges made six runs
    of ~900 edges and one of 154, four runs for one of two threads.)"""
    n_atoms = len(ends)
    n_edges = int(ends[-1]) if n_atoms else 0
    chunks = []
    atom, edge, runs_left = 0, 0, n_runs
    while atom < n_atoms:
        aim = edge + (n_edges - edge) / runs_left
        # The first atom boundary at or past the aim, or the one before if nearer.
        stop = int(np.searchsorted(ends, aim, side="left")) + 1
        if stop - 1 > atom and aim - ends[stop - 2] < ends[min(stop, n_atoms) - 1] - aim:
            stop -= 1
        # At most max_edges, unless one atom has more; atoms without edges join the run.
        stop = min(stop, int(np.searchsorted(ends, edge + max_edges, side="right")))
        stop = min(max(stop, atom + 1), n_atoms)
        stop = int(np.searchsorted(ends, ends[stop - 1], side="right"))
        edge_stop = int(ends[stop - 1])
        chunks.append(EdgeChunk(slice(atom, stop), slice(edge, edge_stop)))
        atom, edge, runs_left = stop, edge_stop, max(1, runs_left - 1)
    return chunks


def atom_blocks(n_atoms: int, threads: int, size: int | None = None,
                device: torch.device | str = "cpu") -> list[slice]:
    """Consecutive atoms ``0 .. n_atoms - 1`` in blocks of about ``size`` atoms (default
    ``ATOM_BLOCK``), and where there is more than one, at least one per thread: the blocks
    in which a layer's per-atom work is shared among the pool's threads (:func:`for_each`;
    a system of one block does it in the calling thread).

    On a ``device`` other than the CPU all atoms are one block: the blocks are for a CPU
    core's caches, and on a GPU each would launch every kernel again.
    """
    if size is None:
        size = ATOM_BLOCK
    if size < 1:
        raise ValueError(f"atom_blocks: size must be a positive number of atoms, got {size}")
    if torch.device(device).type != "cpu":
        return [slice(0, n_atoms)]
    n_blocks = -(-n_atoms // size)
    if n_blocks > 1:
        n_blocks = min(n_atoms, max(threads, n_blocks))
    n_blocks = max(1, n_blocks)
    bounds = [n_atoms * index // n_blocks for index in range(n_blocks + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def group_chunks(chunks: list[EdgeChunk], max_groups: int) -> list[list[EdgeChunk]]:
    """``chunks`` in at most ``max_groups`` groups of consecutive chunks, in order."""
    per = max(1, -(-len(chunks) // max_groups))
    return [chunks[start:start + per] for start in range(0, len(chunks), per)]


def merge_chunks(chunks: list[EdgeChunk]) -> EdgeChunk:
    """One chunk covering consecutive ``chunks``."""
    return EdgeChunk(slice(chunks[0].atoms.start, chunks[-1].atoms.stop),
                     slice(chunks[0].edges.start, chunks[-1].edges.stop))


def run_chunk(function: Callable[..., Result], *args: object, alone: bool = False) -> Result:
    """``function(*args)``, checkpointed when autograd records it, unless ``alone`` (the
    only chunk: nothing to gain from recomputing it).

    The non-reentrant checkpoint keeps only the inputs and recomputes the rest when the
    backward pass reaches the chunk; it supports ``torch.autograd.grad`` and
    ``create_graph=True``, so forces and force training go through it unchanged.
    """
    if alone or not torch.is_grad_enabled():
        return function(*args)
    return checkpoint(function, *args, use_reentrant=False)


class SerialPool:
    """The runs one after another in the calling thread (the interface of a pool)."""

    threads = 1

    def map(self, function: Callable[..., Result], items: Iterable) -> Iterator[Result]:
        return map(function, items)


class ThreadRunPool(ThreadPoolExecutor):
    """A thread pool of ``threads`` threads of one intra-op thread each, its size public
    (the backward pass starts one task per thread, each summing its runs' gradients)."""

    def __init__(self, threads: int) -> None:
        super().__init__(threads, thread_name_prefix="freecg-runs",
                         initializer=torch.set_num_threads, initargs=(1,))
        self.threads = threads

    def map(self, function: Callable[..., Result], *iterables: Iterable,
            **kwargs: object) -> Iterator[Result]:
        """``ThreadPoolExecutor.map``, the tasks in inference mode where the caller is:
        the mode is per thread, and outside it a task could not write into the inference
        tensors the caller made for it."""
        if torch.is_inference_mode_enabled():
            function = _within(torch.inference_mode, function)
        return super().map(function, *iterables, **kwargs)


def _within(context: Callable[[], AbstractContextManager], function: Callable[..., Result]
            ) -> Callable[..., Result]:
    """``function`` run inside a fresh ``context()`` each call."""
    def run(*args: object) -> Result:
        with context():
            return function(*args)
    return run


def without_grad(function: Callable[..., Result]) -> Callable[..., Result]:
    """``function`` run without autograd, for a pool's tasks: grad mode is per thread, and
    the pool's threads have it on."""
    return _within(torch.no_grad, function)


RunPool = ThreadRunPool | SerialPool
Sums = TypeVar("Sums")


def runs_into_sums(pool: RunPool, n_runs: int, make_sums: Callable[[], Sums],
                   work: Callable[[int, Sums], None]) -> list[Sums]:
    """Call ``work(index, sums)`` for the runs ``0 .. n_runs - 1``, shared among the pool's
    threads, and return the ``sums`` of each thread that took a run.

    Each thread adds into ``sums`` of its own (made by ``make_sums``, e.g. per-atom
    gradients), so no two threads write one tensor. It takes the next run as it finishes
    one, as ``pool.map`` hands out items: a thread slowed by another process does not hold
    up the pass, where a fixed share per thread would.
    """
    pending = iter(range(n_runs))
    lock = threading.Lock()

    def take() -> int | None:
        with lock:
            return next(pending, None)

    def thread_runs(_: int) -> Sums | None:
        sums = None
        while (index := take()) is not None:
            if sums is None:
                sums = make_sums()
            work(index, sums)
        return sums

    threads = min(pool.threads, n_runs)
    return [sums for sums in pool.map(thread_runs, range(threads)) if sums is not None]


def for_each(pool: RunPool, function: Callable[..., Result], items: list) -> list[Result]:
    """``[function(item) for item in items]``, the items shared among the pool's threads
    where there are several; a single item runs in the calling thread, since handing it to
    a pool thread and waiting for it costs more than a small system's item."""
    if len(items) == 1:
        return [function(items[0])]
    return list(pool.map(function, items))


class AtomsInBlocks(torch.autograd.Function):
    """A per-atom function evaluated block by block among a pool's threads, forward and
    backward.

    ``apply(function, blocks, pool, *inputs)``: ``inputs`` have one row per atom, and
    ``function(*rows)`` maps the inputs' rows of a block of atoms to that block's rows of
    one output, each row from its own atom's rows alone (a model's read-out: its layer
    norms and gated blocks work row by row). The result is the blocks' rows in order. Each
    block is evaluated on leaves of a small graph of its own, kept for the backward pass,
    which each thread back-propagates for its blocks, so a block's tensors stay in a core's
    caches instead of the whole system's going through memory in the calling thread.
    ``blocks`` (:func:`atom_blocks`) tile the atoms. For frozen models: the function's
    parameters get no gradient, and the backward pass is not differentiable again. The
    blocks' graphs are freed by the first backward pass; a second one (``retain_graph``)
    evaluates the blocks again from the saved inputs.
    """

    @staticmethod
    def forward(ctx: Any, function: Callable[..., torch.Tensor], blocks: list[slice],
                pool: RunPool, *inputs: torch.Tensor) -> torch.Tensor:
        needs = ctx.needs_input_grad[3:]
        graphs = AtomsInBlocks._graphs(function, blocks, pool, inputs, needs)
        ctx.graphs, ctx.function, ctx.blocks, ctx.pool = graphs, function, blocks, pool
        ctx.save_for_backward(*inputs)
        return torch.cat([output.detach() for _, output in graphs])

    @staticmethod
    def _graphs(function: Callable[..., torch.Tensor], blocks: list[slice], pool: RunPool,
                inputs: tuple[torch.Tensor, ...], needs: tuple[bool, ...]
                ) -> list[tuple[list[torch.Tensor], torch.Tensor]]:
        """Each block's ``(leaves, output)``: ``function`` of the inputs' rows, recorded
        by autograd where an input needs a gradient."""
        def evaluate(block: slice) -> tuple[list[torch.Tensor], torch.Tensor]:
            with torch.enable_grad() if any(needs) else torch.no_grad():
                leaves = [t[block].detach().requires_grad_(need)
                          for t, need in zip(inputs, needs, strict=True)]
                return leaves, function(*leaves)

        return for_each(pool, evaluate, blocks)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        blocks, inputs = ctx.blocks, ctx.saved_tensors
        needs = ctx.needs_input_grad[3:]
        graphs = ctx.graphs
        if graphs is None:
            graphs = AtomsInBlocks._graphs(ctx.function, blocks, ctx.pool, inputs, needs)
        ctx.graphs = None  # free the blocks' graphs as soon as this pass is done with them
        grads = [torch.empty_like(t) if need else None
                 for t, need in zip(inputs, needs, strict=True)]

        def back_propagate(index: int) -> None:
            leaves, output = graphs[index]
            block = blocks[index]
            wanted = [leaf for leaf, need in zip(leaves, needs, strict=True) if need]
            found = iter(torch.autograd.grad(output, wanted, grad[block], allow_unused=True))
            for total, need in zip(grads, needs, strict=True):
                if need:
                    got = next(found)
                    if got is None:  # an input the function does not read
                        total[block] = 0
                    else:
                        total[block] = got

        for_each(ctx.pool, back_propagate, list(range(len(blocks))))
        return (None, None, None, *grads)


_POOLS: dict[int, ThreadRunPool] = {}
_POOLS_LOCK = threading.Lock()


def run_pool(threads: int) -> RunPool:
    """A shared pool of ``threads`` threads of one intra-op thread each (a
    :class:`SerialPool` for one).

    Runs of edges are independent and each is too small to keep two intra-op threads busy
    (element-wise work on it is bound by memory bandwidth), so on a CPU whole runs go to
    threads instead. ``torch.set_num_threads`` in a thread sets that thread's team only.
    """
    if threads <= 1:
        return SerialPool()
    with _POOLS_LOCK:
        if threads not in _POOLS:
            _POOLS[threads] = ThreadRunPool(threads)
        return _POOLS[threads]
