"""Requests that arrive together share one trip to the service's thread pool (and there one commit).

    batcher = Batcher(service.call, run)          # run(items) -> [Outcome(value) | Outcome(error=e)], blocking
    value = await batcher.submit(item, size)      # item's own value, or its own exception raised

Each trip to the pool costs the event loop about as much as a small request does (a queue hand-off, a wake-up of
the loop, future chaining), so a one-job POST /comfymq/jobs that made four of them spent more on trips than on its
work. A Batcher keeps at most `in_flight` calls of `run` on the pool; an item submitted while that many are out
waits for the next call, which takes every item waiting then (up to max_items, max_bytes). With one caller at a time
every item goes alone, at once, as a direct call would; under load the items of many requests share one call, and
in it (routes.py) one store commit, so they also share one sync. `in_flight` > 1 keeps the store's pipeline full: the
next group is applied while the one before syncs.

What `run` gives each item is that item's alone: an Outcome with its value, or with the exception a direct call
would have raised for it (raised again here, in its own request). Pure asyncio glue: single-threaded, on the loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Awaitable, Callable


@dataclass
class Outcome:
    value: Any = None
    error: BaseException | None = None


class Batcher:
    def __init__(
        self,
        call: Callable[..., Awaitable[list[Outcome]]],
        run: Callable[[list], list[Outcome]],
        *,
        in_flight: int = 2,
        max_items: int = 64,
        max_bytes: int = 8 << 20,
        min_more: int = 8,
    ):
        self._call, self._run = call, run
        self.in_flight, self.max_items, self.max_bytes, self.min_more = in_flight, max_items, max_bytes, min_more
        self._waiting: list[tuple[Any, int, asyncio.Future]] = []
        self._running = 0
        self._tasks: set[asyncio.Task] = set()  # (held: the loop keeps only weak references to tasks)

    async def submit(self, item, size: int = 0):
        """run's value for item (its exception raised). size: its bytes, bounding what one call holds."""
        fut = asyncio.get_running_loop().create_future()
        self._waiting.append((item, size, fut))
        if self._ready():
            self._start()
        return await fut

    def _ready(self) -> bool:
        """Whether to start a call now: none is out, or fewer than in_flight and enough items wait to fill one (a
        second call for one item would only take the place the next full one needs)."""
        if self._running == 0:
            return bool(self._waiting)
        return self._running < self.in_flight and len(self._waiting) >= self.min_more

    def _start(self) -> None:
        n, total = 0, 0
        for _item, size, _fut in self._waiting:
            if n and (n >= self.max_items or total + size > self.max_bytes):
                break
            n, total = n + 1, total + size
        batch, self._waiting = self._waiting[:n], self._waiting[n:]
        self._running += 1
        task = asyncio.get_running_loop().create_task(self._go(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _go(self, batch: list) -> None:
        try:
            outcomes = await self._call(self._run, [item for item, _size, _fut in batch])
            if len(outcomes) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} items gave {len(outcomes)} outcomes")
        except asyncio.CancelledError:  # the loop is closing: so are the requests waiting on it
            for _item, _size, fut in batch:
                fut.cancel()
            raise
        except Exception as e:  # noqa: BLE001 - every caller of the batch hears it
            outcomes = [Outcome(error=e)] * len(batch)
        finally:
            self._running -= 1
            if self._ready():
                self._start()
        for (_item, _size, fut), out in zip(batch, outcomes, strict=True):
            if fut.done():  # its request went away (the client left): the item was still done
                continue
            if out.error is not None:
                fut.set_exception(out.error)
            else:
                fut.set_result(out.value)
