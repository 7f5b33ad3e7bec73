"""api/batching.py: requests that arrive together share one trip to the pool, each still hearing its own answer."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from comfy_nodes.api.batching import Batcher, Outcome

pytestmark = pytest.mark.asyncio


class Pool:
    """A thread pool with service.call's face; `gate` holds every call until it is set; `calls` records the items."""

    def __init__(self):
        self.executor = ThreadPoolExecutor(8)
        self.gate = threading.Event()
        self.calls: list[list] = []
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def run(self, items: list) -> list[Outcome]:
        with self.lock:
            self.calls.append(list(items))
            self.running += 1
            self.most = max(self.most, self.running)
        self.gate.wait(10)
        with self.lock:
            self.running -= 1
        return [Outcome(error=ValueError(f"bad {i}")) if i < 0 else Outcome(i * 10) for i in items]


@pytest.fixture
def pool():
    p = Pool()
    yield p
    p.gate.set()
    p.executor.shutdown(wait=True)


async def until(cond, timeout=5.0):
    end = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < end, "timed out"
        await asyncio.sleep(0.005)


async def test_one_caller_goes_alone_at_once(pool):
    pool.gate.set()
    b = Batcher(pool.call, pool.run)
    assert await b.submit(3) == 30
    assert await b.submit(4) == 40
    assert pool.calls == [[3], [4]]


async def test_items_that_wait_share_the_next_call_and_each_hears_its_own(pool):
    b = Batcher(pool.call, pool.run, in_flight=1)
    first = asyncio.ensure_future(b.submit(1))
    await until(lambda: len(pool.calls) == 1)
    rest = [asyncio.ensure_future(b.submit(i)) for i in (2, -3, 4, 5)]
    await asyncio.sleep(0.05)
    assert len(pool.calls) == 1  # one call out, in_flight=1: the others wait for it
    pool.gate.set()
    assert await first == 10
    results = await asyncio.gather(*rest, return_exceptions=True)
    assert results[0] == 20 and results[2:] == [40, 50]
    assert isinstance(results[1], ValueError) and str(results[1]) == "bad -3"  # its own error, only its own
    assert pool.calls == [[1], [2, -3, 4, 5]]


async def test_a_second_call_starts_only_for_enough_items(pool):
    b = Batcher(pool.call, pool.run, in_flight=2, min_more=3)
    futs = [asyncio.ensure_future(b.submit(1))]
    await until(lambda: len(pool.calls) == 1)
    futs += [asyncio.ensure_future(b.submit(i)) for i in (2, 3)]
    await asyncio.sleep(0.05)
    assert len(pool.calls) == 1  # two waiting: not worth the second place yet
    futs.append(asyncio.ensure_future(b.submit(4)))
    await until(lambda: len(pool.calls) == 2)
    assert pool.calls[1] == [2, 3, 4]
    futs += [asyncio.ensure_future(b.submit(i)) for i in (5, 6, 7, 8)]
    await asyncio.sleep(0.05)
    assert len(pool.calls) == 2 and pool.most == 2  # never more than in_flight at once
    pool.gate.set()
    assert await asyncio.gather(*futs) == [10 * i for i in range(1, 9)]
    assert sorted(i for c in pool.calls for i in c) == list(range(1, 9))
    assert pool.most == 2


async def test_calls_are_bounded_in_items_and_bytes(pool):
    b = Batcher(pool.call, pool.run, in_flight=1, max_items=3, max_bytes=100)
    futs = [asyncio.ensure_future(b.submit(0, 1))]
    await until(lambda: len(pool.calls) == 1)
    futs += [asyncio.ensure_future(b.submit(i, 10)) for i in range(1, 6)]  # 5 small ones: 3, then 2
    futs += [asyncio.ensure_future(b.submit(i, 60)) for i in (6, 7)]  # 60 + 60 > 100: one each
    futs.append(asyncio.ensure_future(b.submit(8, 500)))  # larger than max_bytes: still goes, alone
    await asyncio.sleep(0.02)
    pool.gate.set()
    await asyncio.gather(*futs)
    assert pool.calls == [[0], [1, 2, 3], [4, 5, 6], [7], [8]]


async def test_a_failed_call_is_heard_by_each_of_its_items_and_the_next_call_runs(pool):
    pool.gate.set()
    calls = []

    def run(items):
        calls.append(items)
        if 13 in items:
            raise RuntimeError("the pool broke")
        return [Outcome(i) for i in items]

    b = Batcher(pool.call, run, in_flight=1)
    futs = [asyncio.ensure_future(b.submit(i)) for i in (13, 1, 2)]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert isinstance(results[0], RuntimeError)
    assert results[1:] == [1, 2]  # a later call, unharmed
    assert await b.submit(5) == 5


async def test_wrong_number_of_outcomes_is_an_error_not_a_hang(pool):
    pool.gate.set()
    b = Batcher(pool.call, lambda items: [Outcome(1)] * (len(items) + 1))
    with pytest.raises(RuntimeError, match="gave 2 outcomes"):
        await b.submit(1)


async def test_a_caller_that_goes_away_leaves_the_others_their_answers(pool):
    b = Batcher(pool.call, pool.run, in_flight=1)
    first = asyncio.ensure_future(b.submit(1))
    await until(lambda: len(pool.calls) == 1)
    leaving = asyncio.ensure_future(b.submit(2))
    staying = asyncio.ensure_future(b.submit(3))
    await asyncio.sleep(0.01)
    leaving.cancel()
    pool.gate.set()
    assert await first == 10 and await staying == 30
    assert pool.calls[1] == [2, 3]  # (its item was done all the same: what it asked for happened)
