"""No leaks: rounds of the same work leave the same number of live memory
blocks, on fastloop as on asyncio (sys.getallocatedblocks() counts every
object and buffer CPython's allocator hands out)."""
import asyncio
import contextvars
import gc
import sys
import threading

import pytest

pytestmark = pytest.mark.timeout(120)

VAR = contextvars.ContextVar("VAR", default=0)


def _one_round(loop):
    out = []

    def append(x):
        out.append(x)

    def change_context(x):
        VAR.set(x)          # forces a context of its own (shared-copy path)

    for i in range(2000):
        loop.call_soon(append, i)
        loop.call_soon(change_context, i)
    timers = [loop.call_later(0.001 * (i % 5), append, i) for i in range(2000)]
    for t in timers[::2]:
        t.cancel()
    ctx = contextvars.copy_context()
    for i in range(500):
        loop.call_soon(append, i, context=ctx)
    thread = threading.Thread(target=lambda: [loop.call_soon_threadsafe(append, i)
                                              for i in range(500)])
    thread.start()
    thread.join()

    async def task(i):
        await asyncio.sleep(0)
        fut = loop.create_future()
        loop.call_soon(fut.set_result, i)
        return await fut

    async def main():
        return await asyncio.gather(*(task(i) for i in range(500)))

    assert loop.run_until_complete(main()) == list(range(500))
    loop.run_until_complete(asyncio.sleep(0.01))
    # every callback ran once: 2000 + 1000 uncancelled timers + 500 + 500
    assert len(out) == 4000


def _blocks():
    gc.collect()
    gc.collect()
    return sys.getallocatedblocks()


def test_repeated_work_does_not_grow_memory(loop):
    for _ in range(3):              # warm up caches, free lists, the ring
        _one_round(loop)
    before = _blocks()
    for _ in range(5):
        _one_round(loop)
    growth = _blocks() - before
    # A leak of one object per callback would be thousands of blocks per
    # round; allow a little noise from interpreter caches.
    assert growth < 500, f"{growth} more memory blocks after 5 rounds"


def test_many_loops_created_and_closed_do_not_leak(loop_factory):
    def cycle():
        loop = loop_factory()
        loop.call_soon(lambda: None)
        loop.call_later(10, lambda: None)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    for _ in range(20):
        cycle()
    before = _blocks()
    for _ in range(100):
        cycle()
    growth = _blocks() - before
    assert growth < 300, f"{growth} more memory blocks after 100 loops"
