"""Edges in runs of whole centre atoms, evaluated one run at a time.

Every message of FreeCG lives on an edge and is summed on its centre atom, and the widest
tensors are per edge, (E, 8, F). With edges sorted by centre, a run of consecutive centre
atoms owns a contiguous slice of edges, and its sums need nothing from other runs. So a
layer can process one run at a time and concatenate the per-atom results: no (E, 8, F)
tensor is made whole, and a run's tensors stay in the CPU caches. Where autograd records a
run (training), the run is checkpointed (:func:`run_chunk`); for frozen models on a CPU the
runs are shared among threads (:mod:`freecg_md.nn.cpu`). Up to a size
(:func:`keeps_graphs`: edges x channels x layers) nothing is recomputed in the backward
pass: the embedding is computed whole and the threads keep their runs' graphs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.checkpoint import checkpoint

Result = TypeVar("Result")
# A pass keeps its runs' graphs for the backward pass (and computes its embedding whole)
# while edges x channels x layers stays at or below this, and recomputes them above: the
# kept tensors grow with all three. The limit is 65,536 edges of FreeCG() (F = 128, 4
# layers), about a 1,000-atom water box, whose kept graphs take gigabytes.
KEEP_GRAPHS_MAX_EDGE_CHANNELS = 65536 * 128 * 4


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
    For the kernels (:func:`for_kernels`), ``neighbor_order`` (E_run,) the edges sorted by
    neighbour; None otherwise.
    """

    first_atom: int
    n_centers: int
    centers: torch.Tensor
    neighbors: torch.Tensor
    distances: torch.Tensor
    sh: torch.Tensor
    phi: torch.Tensor
    neighbor_order: torch.Tensor | None = None


def for_kernels(run: EdgeRun) -> EdgeRun:
    """``run`` prepared for the fused kernels (:mod:`freecg_md.nn.cpu.fused_run`): its
    edges in order of their neighbour, the order in which a backward kernel adds into the
    neighbours' rows (the kernels read the per-atom tensors at the atom indices and need
    only the order), and its tensors contiguous."""
    # The kernels read the index and edge tensors as they lie: a whole pass's centres can
    # be a strided row of the caller's edge index.
    return run._replace(centers=run.centers.contiguous(), neighbors=run.neighbors.contiguous(),
                        sh=run.sh.contiguous(), phi=run.phi.contiguous(),
                        neighbor_order=torch.argsort(run.neighbors, stable=True))


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


def edge_chunks(centers: torch.Tensor, n_atoms: int, max_edges: int,
                n_runs: int | None = None) -> list[EdgeChunk]:
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
    n_runs:
        How many chunks of about equal size to aim at (at least the fewest that
        ``max_edges`` allows); None: that fewest.

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
    # Runs of even size, since runs go to threads side by side. Planned for n_runs (or the
    # fewest runs that the limit allows), a plan can end in a short tail run (the limit can
    # cut runs short of their aim); then one run more evens them out.
    n_runs = max(1, -(-n_edges // max_edges), n_runs or 1)
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


