"""Threads for a frozen model's pass on a CPU: a team of threads of one intra-op thread
each (the calling thread and workers), runs of edges shared among them with per-thread
sums, and per-atom work in blocks.

Runs of edges (:mod:`freecg_md.nn.chunks`) are independent and each is too small to keep
two intra-op threads busy (element-wise work on it is bound by memory bandwidth), so whole
runs go to threads instead; between the layers' runs the per-atom work (layer norms,
projections, read-out) is shared in blocks of atoms whose tensors stay in a core's caches.
Inference only: parameters get no gradient here.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import torch
from torch.autograd.function import once_differentiable

Result = TypeVar("Result")

# Atoms per block of a layer's per-atom work in the pool (:func:`atom_blocks`): a block's
# (512, 8, 128) float32 vectors are 2 MiB, so the few such tensors a block's operations
# pass along (v, w_neighbor, the threads' sums) stay in the caches (a core's 2 MiB L2, the
# shared L3) from one operation to the next. Done whole in the calling thread, that work
# on a large box would stream tensors far larger than the caches through every operation.
ATOM_BLOCK = 512
# Smaller systems are split into one block per thread too where the atoms' features hold
# at least this many numbers (atoms x F): at the paper's width a chignolin's per-atom
# projections outweigh handing a block to a thread; at F = 64 or 128 they do not.
SPLIT_ATOM_FEATURES = 32768
# Whether a pass shared among the pool's threads runs the calling thread's own operations
# on one intra-op thread (:func:`calling_thread_alone`). Between the pool's phases those
# operations are small (a chignolin's edges and atoms), and each that OpenMP splits wakes
# the team's other thread and waits for it, which costs more than it shares; the pool's
# threads do the sharing. Benchmarks set it False to measure the alternative.
CALLING_THREAD_ALONE = True
# Whether the calling thread takes items of the pool's maps beside the workers
# (:class:`ThreadRunPool`) instead of waiting for them. Benchmarks set it False to measure
# the alternative.
CALLING_THREAD_TAKES_ITEMS = True
_TEAM = threading.local()


def atom_blocks(n_atoms: int, threads: int, size: int | None = None,
                device: torch.device | str = "cpu", width: int | None = None) -> list[slice]:
    """Consecutive atoms ``0 .. n_atoms - 1`` in blocks of about ``size`` atoms (default
    ``ATOM_BLOCK``), and where there is more than one, or where ``n_atoms * width`` (the
    features per atom, F) reaches ``SPLIT_ATOM_FEATURES``, at least one per thread: the
    blocks in which a layer's per-atom work is shared among the pool's threads
    (:func:`for_each`; a system of one block does it in the calling thread).

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
    if n_blocks > 1 or (width is not None and n_atoms * width >= SPLIT_ATOM_FEATURES):
        n_blocks = min(n_atoms, max(threads, n_blocks))
    n_blocks = max(1, n_blocks)
    bounds = [n_atoms * index // n_blocks for index in range(n_blocks + 1)]
    return [slice(start, stop) for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]


def team_threads() -> int:
    """The threads a pass may share its work among: ``torch.get_num_threads()``, or inside
    :func:`calling_thread_alone` the number the calling thread had before it."""
    return getattr(_TEAM, "threads", None) or torch.get_num_threads()


@contextlib.contextmanager
def calling_thread_alone(enabled: bool = True) -> Iterator[None]:
    """Run the calling thread's torch operations on one intra-op thread inside the block,
    while :func:`team_threads` still gives its former count, the threads a pass plans its
    pool for; restored on exit. Only the calling thread's setting changes
    (``torch.set_num_threads`` in a thread sets that thread's team). Nested uses and
    ``enabled=False`` (or ``CALLING_THREAD_ALONE`` False) change nothing."""
    threads = torch.get_num_threads()
    if not (enabled and CALLING_THREAD_ALONE) or threads <= 1:
        yield
        return
    _TEAM.threads = threads
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        _TEAM.threads = None


class SerialPool:
    """The runs one after another in the calling thread (the interface of a pool)."""

    threads = 1

    def map(self, function: Callable[..., Result], items: Iterable) -> Iterator[Result]:
        return map(function, items)


class ThreadRunPool(ThreadPoolExecutor):
    """A team of ``threads`` threads of one intra-op thread each: the calling thread and
    ``threads - 1`` workers, its size public (passes cut their per-atom work into blocks
    by it).

    :meth:`map` hands its items out one at a time to whichever thread of the team is free,
    the calling thread included, so a pass runs on as many threads as it was given; that
    it waits instead is within this machine's spread in speed
    (``benchmarks/bench_calling_thread.py``).
    """

    def __init__(self, threads: int) -> None:
        if threads < 2:
            raise ValueError(f"ThreadRunPool: threads must be at least 2 (the calling thread "
                             f"and a worker), got {threads}; use SerialPool for one")
        # Room for threads workers, not threads - 1: with CALLING_THREAD_TAKES_ITEMS off (a
        # benchmark's alternative) the workers take every item.
        super().__init__(threads, thread_name_prefix="freecg-runs")
        self.threads = threads

    def map(self, function: Callable[..., Result],  # type: ignore[override]
            *iterables: Iterable) -> Iterator[Result]:
        """``[function(*args) for args in zip(*iterables)]`` as an iterator, the items
        shared among the team's threads; returns when all are done. Each runs as in a
        fresh worker: grad mode on, one intra-op thread, and in inference mode where the
        caller is (the modes are per thread, and outside inference mode a task could not
        write into the inference tensors the caller made for it). Where items raise, no
        item starts after the first error, and it is raised once every item has stopped.
        A map called inside an item of a map runs its items one after another in that
        thread: the team's threads could otherwise all wait on items queued behind them.
        """
        if torch.is_inference_mode_enabled():
            function = _within(torch.inference_mode, function)
        items = list(zip(*iterables, strict=True))
        if getattr(_ITEM, "running", False):
            with torch.enable_grad(), _one_intra_op_thread():
                return iter([function(*args) for args in items])
        results: list[Any] = [None] * len(items)
        errors: list[BaseException] = []
        pending = iter(range(len(items)))
        lock = threading.Lock()

        def take() -> int | None:
            with lock:
                return None if errors else next(pending, None)

        def drain() -> None:
            _ITEM.running = True
            try:
                while (index := take()) is not None:
                    try:
                        results[index] = function(*items[index])
                    except BaseException as error:
                        with lock:
                            errors.append(error)
            finally:
                _ITEM.running = False

        def work() -> None:  # a worker's share
            if torch.get_num_threads() != 1:
                # Set here, not once when the worker starts: torch gives a thread the
                # process-wide count at its first parallel operation, and another thread
                # may have changed that count in between.
                torch.set_num_threads(1)
            drain()

        takes = CALLING_THREAD_TAKES_ITEMS
        workers = [self.submit(work)
                   for _ in range(min(self.threads, len(items)) - (1 if takes else 0))]
        try:
            if takes:
                with torch.enable_grad(), _one_intra_op_thread():
                    drain()
        finally:
            # No item may still be running when the caller goes on: they write into
            # tensors the caller owns.
            _wait_for(workers, errors, lock)
        if errors:
            raise errors[0]
        return iter(results)


# Whether this thread is running an item of a ThreadRunPool map (see its map).
_ITEM = threading.local()


def _wait_for(workers: list, errors: list[BaseException], lock: threading.Lock) -> None:
    """Wait until every one of ``workers`` (futures of a map's ``drain``) is done. An
    interruption (KeyboardInterrupt) while waiting goes into ``errors``, which stops the
    hand-out of further items, and the wait goes on: the items still running write into
    the caller's tensors."""
    while True:
        try:
            concurrent.futures.wait(workers)
            return
        except BaseException as interruption:
            with lock:
                errors.append(interruption)


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    """The calling thread's torch operations on one intra-op thread inside the block, as
    the workers' are (usually already so: :func:`calling_thread_alone`)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


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

    Each thread adds into ``sums`` of its own (made by ``make_sums`` at its first run, e.g.
    per-atom gradients), so no two threads write one tensor. The pool hands the runs out
    one at a time, so a thread slowed by another process does not hold up the pass, where
    a fixed share per thread would.
    """
    sums_of: dict[int, Sums] = {}  # by thread; each thread adds only its own entry

    def run(index: int) -> None:
        thread = threading.get_ident()
        if thread not in sums_of:
            sums_of[thread] = make_sums()
        work(index, sums_of[thread])

    list(pool.map(run, range(n_runs)))
    return list(sums_of.values())


def for_each(pool: RunPool, function: Callable[..., Result], items: list) -> list[Result]:
    """``[function(item) for item in items]``, the items shared among the pool's threads
    (a single item runs in the calling thread: :meth:`ThreadRunPool.map`)."""
    if len(items) == 1 and not CALLING_THREAD_TAKES_ITEMS:
        # The calling thread waiting for the workers (a benchmark's alternative) still runs
        # a single item itself, as the pass did before the setting existed.
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
