"""fvt.serve.batching.Batcher with a recording stand-in for the model: how images are grouped, the
bounded queue, requests that give up, a failing forward, and a drain on close."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fvt.serve.batching import Batcher, Overloaded


class Recorder:
    """infer(): returns each payload doubled and remembers the batches it saw (optionally slowly)."""

    def __init__(self, delay: float = 0.0, fail_on=None):
        self.batches, self.delay, self.fail_on = [], delay, fail_on
        self.threads = set()

    def __call__(self, payloads):
        self.threads.add(threading.current_thread().name)
        self.batches.append(list(payloads))
        if self.fail_on is not None and self.fail_on in payloads:
            raise RuntimeError("model broke")
        time.sleep(self.delay)
        return [2 * p for p in payloads]


def _run(coro):
    return asyncio.run(coro)


def _batcher(rec, **kw):
    settings = dict(max_batch=4, max_wait_s=0.3, max_queue=64)
    settings.update(kw)
    return Batcher(rec, ThreadPoolExecutor(1, thread_name_prefix="infer"), **settings)


def test_images_queued_together_fill_batches_up_to_max_batch_in_order():
    rec, sizes = Recorder(), []

    async def go():
        b = _batcher(rec, on_batch=lambda n, s: sizes.append(n))
        b.start()
        out = await asyncio.gather(*(b.submit([i]) for i in range(10)), b.submit([10, 11]))
        await b.close()
        return out

    out = _run(go())
    assert out == [[2 * i] for i in range(10)] + [[20, 22]]      # each request gets its own answers
    assert [len(x) for x in rec.batches] == [4, 4, 4] == sizes   # 12 images, max_batch 4
    assert sorted(p for x in rec.batches for p in x) == list(range(12))
    assert rec.threads == {"infer_0"}                             # off the event loop, one thread


def test_a_lone_image_waits_at_most_max_wait():
    rec = Recorder()

    async def go():
        b = _batcher(rec, max_wait_s=0.2)
        b.start()
        t = time.monotonic()
        out = await b.submit([1])
        waited = time.monotonic() - t
        await b.close()
        return out, waited

    out, waited = _run(go())
    assert out == [2] and rec.batches == [[1]]
    assert 0.15 <= waited < 5  # it waited for company, then went alone


def test_images_arriving_during_a_forward_form_the_next_batch():
    rec = Recorder(delay=0.3)

    async def go():
        b = _batcher(rec, max_wait_s=0.0, max_batch=8)
        b.start()
        first = asyncio.ensure_future(b.submit([0]))
        await asyncio.sleep(0.1)                      # the forward of [0] is running now
        rest = [asyncio.ensure_future(b.submit([i])) for i in range(1, 6)]
        await asyncio.gather(first, *rest)
        await b.close()

    _run(go())
    assert rec.batches == [[0], [1, 2, 3, 4, 5]]


def test_full_queue_refuses_at_once_and_given_up_images_are_not_computed():
    rec = Recorder(delay=0.2)

    async def go():
        b = _batcher(rec, max_batch=2, max_queue=4, max_wait_s=0.0)
        b.start()
        busy = asyncio.ensure_future(b.submit([0, 1]))           # taken into the first forward
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(b.submit([2, 3, 4, 5]))   # fills the queue
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await b.submit([6])
        queued.cancel()                                          # that client gave up
        await asyncio.gather(busy, return_exceptions=True)
        ok = await b.submit([7])
        await b.close()
        return ok

    assert _run(go()) == [14]
    computed = [p for x in rec.batches for p in x]
    assert computed == [0, 1, 7]  # 2..5 were dropped before their forward, 6 never queued


def test_a_failing_forward_fails_its_requests_only_and_the_loop_goes_on():
    rec = Recorder(fail_on=13)

    async def go():
        b = _batcher(rec, max_wait_s=0.05)
        b.start()
        with pytest.raises(RuntimeError, match="model broke"):
            await b.submit([13])
        ok = await b.submit([3])
        await b.close()
        return ok

    assert _run(go()) == [6]


def test_close_finishes_queued_work_then_refuses():
    rec = Recorder(delay=0.05)

    async def go():
        b = _batcher(rec, max_batch=2, max_wait_s=0.0)
        b.start()
        pending = [asyncio.ensure_future(b.submit([i])) for i in range(6)]
        await asyncio.sleep(0)
        await b.close(grace_s=10)
        with pytest.raises(Overloaded, match="shutting down"):
            await b.submit([9])
        return [p.result() for p in pending]

    assert _run(go()) == [[2 * i] for i in range(6)]
