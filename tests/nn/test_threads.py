"""The run pool's map: the calling thread takes items beside the workers, every item runs
as in a fresh worker, and errors wait for the team."""

import threading
import time

import pytest
import torch

from freecg_md.nn.cpu import threads as threads_module
from freecg_md.nn.cpu.threads import ThreadRunPool, runs_into_sums


@pytest.fixture
def pool():
    team = ThreadRunPool(3)
    yield team
    team.shutdown()


def test_map_keeps_order_and_the_calling_thread_takes_items(pool):
    """Results come in the items' order; the calling thread runs items too, and no more
    than the team's threads run any."""
    seen = []

    def item(index, offset):
        seen.append(threading.get_ident())
        time.sleep(0.005)  # long enough for the workers to take some
        return index + offset

    results = list(pool.map(item, range(20), [100] * 20))
    assert results == [index + 100 for index in range(20)]
    assert threading.get_ident() in seen
    assert 1 < len(set(seen)) <= pool.threads


def _one_item_per_thread(pool, record):
    """A function for ``pool.threads`` items that holds each at a barrier until every
    thread of the team has one, so that each thread (the caller's included, where it takes
    items) runs exactly one; ``record`` gives what the item returns."""
    barrier = threading.Barrier(pool.threads, timeout=30)

    def item(_):
        barrier.wait()
        return threading.get_ident(), record()

    return item


def test_items_run_as_in_a_worker_in_the_calling_thread_too(pool):
    """Grad mode on and one intra-op thread in every item, the calling thread's included,
    whatever the caller's settings; the caller's are back afterwards; inference mode
    follows the caller."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        state = _one_item_per_thread(pool, lambda: (torch.is_grad_enabled(),
                                                    torch.get_num_threads(),
                                                    torch.is_inference_mode_enabled()))
        with torch.no_grad():
            ran = list(pool.map(state, range(pool.threads)))
            assert not torch.is_grad_enabled()
        assert torch.get_num_threads() == 2
        assert threading.get_ident() in {ident for ident, _ in ran}
        assert len({ident for ident, _ in ran}) == pool.threads
        assert {states for _, states in ran} == {(True, 1, False)}
        with torch.inference_mode():
            modes = list(pool.map(_one_item_per_thread(
                pool, torch.is_inference_mode_enabled), range(pool.threads)))
        assert all(mode for _, mode in modes)
    finally:
        torch.set_num_threads(threads)


def test_with_the_setting_off_the_calling_thread_only_waits(pool, monkeypatch):
    monkeypatch.setattr(threads_module, "CALLING_THREAD_TAKES_ITEMS", False)
    ran = list(pool.map(_one_item_per_thread(pool, lambda: None), range(pool.threads)))
    assert threading.get_ident() not in {ident for ident, _ in ran}
    assert list(pool.map(lambda x: x, [])) == []


def test_an_error_in_the_calling_threads_item_waits_for_the_others(pool):
    finished = []
    caller = threading.get_ident()
    barrier = threading.Barrier(pool.threads, timeout=30)

    def item(index):
        barrier.wait()
        if threading.get_ident() == caller:
            raise RuntimeError("the caller's item")
        time.sleep(0.05)
        finished.append(index)

    with pytest.raises(RuntimeError, match="the caller's item"):
        pool.map(item, range(pool.threads))
    assert len(finished) == pool.threads - 1


def test_a_map_inside_an_item_runs_in_its_thread(pool):
    """Items that map again on the same pool get their results without waiting on the
    team (which would deadlock with every thread inside an outer item)."""
    def outer(index):
        return sum(pool.map(lambda k: 10 * index + k, range(5)))

    assert list(pool.map(outer, range(6))) == [50 * index + 10 for index in range(6)]


def test_an_error_is_raised_after_every_item_has_stopped(pool):
    """The first exception reaches the caller only once no item still runs (the items
    write into the caller's tensors); no item starts after one has failed."""
    running = []
    finished = []

    def item(index):
        running.append(index)
        if index == 1:
            raise ValueError("item 1")
        time.sleep(0.02)
        finished.append(index)

    with pytest.raises(ValueError, match="item 1"):
        pool.map(item, range(50))
    assert sorted(finished) == sorted(i for i in running if i != 1)
    assert len(running) < 50


def test_runs_into_sums_adds_every_run_once(pool):
    """Each run's work goes into the sums of the thread that took it: the sums over all
    threads count every run once."""
    sums = runs_into_sums(pool, 17, lambda: torch.zeros(17),
                          lambda index, total: total.__setitem__(index, total[index] + 1))
    assert 1 <= len(sums) <= pool.threads
    torch.testing.assert_close(torch.stack(sums).sum(0), torch.ones(17))


def test_a_pool_needs_two_threads():
    with pytest.raises(ValueError, match="threads must be at least 2"):
        ThreadRunPool(1)
