"""Dynamic batching: images of concurrent requests share one forward pass.

A request's images join one queue. The batch loop takes the oldest image, then waits until either
``max_batch`` images are there or the oldest has waited ``max_wait_s``, and runs the forward on a
single inference thread, so the event loop keeps accepting and decoding while the model computes;
the images that arrive meanwhile form the next batch. The queue is bounded (``max_queue`` images):
past it a request is refused at once (``Overloaded``, 503) instead of memory growing with the load.
An image whose request gave up (timeout, client gone) is dropped before its forward."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence


class Overloaded(Exception):
    """The queue is full or the server is shutting down: try again later (503)."""


@dataclass
class _Item:
    payload: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)


class Batcher:
    """``infer(payloads) -> one output per payload`` runs in ``executor``; ``submit`` awaits the outputs
    of one request's payloads. ``on_batch(size, seconds)`` and ``on_depth(images waiting)`` feed metrics."""

    def __init__(self, infer: Callable[[List[Any]], Sequence[Any]], executor: Executor, max_batch: int,
                 max_wait_s: float, max_queue: int, on_batch: Optional[Callable[[int, float], None]] = None,
                 on_depth: Optional[Callable[[int], None]] = None):
        self.infer, self.executor = infer, executor
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.on_batch = on_batch or (lambda n, s: None)
        self.on_depth = on_depth or (lambda n: None)
        self._items: deque = deque()
        self._wake: Optional[asyncio.Event] = None
        self._task: Optional[asyncio.Task] = None
        self._closing = False
        self._busy = False

    def start(self) -> None:
        """Start the batch loop on the running event loop."""
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fvt-batcher")

    @property
    def depth(self) -> int:
        return len(self._items)

    async def submit(self, payloads: Sequence[Any]) -> list:
        if self._closing or self._task is None:
            raise Overloaded("the server is shutting down")
        if len(self._items) + len(payloads) > self.max_queue:
            raise Overloaded(f"{len(self._items)} images are already waiting (the queue holds {self.max_queue})")
        loop = asyncio.get_running_loop()
        items = [_Item(p, loop.create_future()) for p in payloads]
        self._items.extend(items)
        self.on_depth(len(self._items))
        self._wake.set()
        try:
            return list(await asyncio.gather(*(it.future for it in items)))
        except BaseException:
            for it in items:  # the request gave up: its images need no forward pass
                it.future.cancel()
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._fill(loop)
            batch = [self._items.popleft() for _ in range(min(self.max_batch, len(self._items)))]
            self.on_depth(len(self._items))
            live = [it for it in batch if not it.future.done()]
            if live:
                await self._forward(loop, live)

    async def _fill(self, loop) -> None:
        """Wait until a full batch is queued or the oldest image has waited max_wait_s."""
        deadline = self._items[0].arrived + self.max_wait_s
        while len(self._items) < self.max_batch and not self._closing:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except asyncio.TimeoutError:
                return

    async def _forward(self, loop, live: List[_Item]) -> None:
        self._busy = True
        start = time.perf_counter()
        try:
            outputs = await loop.run_in_executor(self.executor, self.infer, [it.payload for it in live])
        except Exception as e:  # noqa: BLE001 - the requests of this batch get the error; the loop goes on
            for it in live:
                if not it.future.done():
                    it.future.set_exception(e)
        else:
            self.on_batch(len(live), time.perf_counter() - start)
            for it, out in zip(live, outputs):
                if not it.future.done():
                    it.future.set_result(out)
        finally:
            self._busy = False

    async def close(self, grace_s: float = 30.0) -> None:
        """Refuse new work, let queued images finish (up to ``grace_s``), then stop the loop."""
        self._closing = True
        if self._wake is not None:
            self._wake.set()
        end = time.monotonic() + grace_s
        while (self._items or self._busy) and time.monotonic() < end and self._task and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - stopping anyway
                pass
        for it in self._items:
            it.future.cancel()
        self._items.clear()
