"""Threads and the loop: call_soon_threadsafe, run_coroutine_threadsafe,
executors, and debug mode's thread check.

Every test runs on stdlib asyncio and on fastloop (see conftest.py) and must
behave the same on both.
"""
import asyncio
import concurrent.futures
import contextvars
import os
import signal
import sys
import threading
import time

import pytest

# Generous bounds: they only fail a test that would otherwise hang.
WAIT = 10.0


def _start(target, *args):
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# ------------------------------------------------------- call_soon_threadsafe

@pytest.mark.timeout(30)
def test_threadsafe_wakes_loop_blocked_in_poll(loop):
    # The loop has nothing to do but wait_for's distant timeout: it blocks in
    # its poller, and only the wake-up of call_soon_threadsafe can end the
    # wait before that timeout. Several rounds, so that at least some calls
    # land while the loop is really asleep.
    for i in range(5):
        fut = loop.create_future()

        def later(i=i, fut=fut):
            time.sleep(0.02)
            loop.call_soon_threadsafe(fut.set_result, i)

        thread = _start(later)
        assert loop.run_until_complete(asyncio.wait_for(fut, WAIT)) == i
        thread.join(WAIT)
        assert not thread.is_alive()


@pytest.mark.timeout(20)
def test_threadsafe_wakes_loop_with_nothing_scheduled(loop):
    # No timer at all: the poll would block forever without the wake-up.
    ran = []

    def stop():
        ran.append(threading.get_ident())
        loop.stop()

    thread = _start(lambda: (time.sleep(0.05), loop.call_soon_threadsafe(stop)))
    loop.run_forever()
    thread.join(WAIT)
    assert ran == [threading.get_ident()]      # ran in the loop's thread
    assert not loop.is_running()


@pytest.mark.timeout(60)
def test_threadsafe_many_threads(loop):
    nthreads, ncalls = 8, 2000
    total = nthreads * ncalls
    received = {t: [] for t in range(nthreads)}
    count = 0
    done = loop.create_future()
    barrier = threading.Barrier(nthreads)

    def record(t, i):
        nonlocal count
        received[t].append(i)
        count += 1
        if count == total:
            done.set_result(None)

    def producer(t):
        barrier.wait(WAIT)
        for i in range(ncalls):
            loop.call_soon_threadsafe(record, t, i)

    threads = [_start(producer, t) for t in range(nthreads)]
    loop.run_until_complete(asyncio.wait_for(done, 30))
    for thread in threads:
        thread.join(WAIT)
    # Every call delivered exactly once, each thread's in the order it made them.
    assert count == total
    for t in range(nthreads):
        assert received[t] == list(range(ncalls))


@pytest.mark.timeout(30)
def test_threadsafe_while_loop_busy(loop):
    # Calls arriving while the loop runs callbacks (not sleeping) are not lost.
    n = 3000
    got = []
    done = loop.create_future()
    started = threading.Event()

    def record(i):
        got.append(i)
        if i == n - 1:
            done.set_result(None)

    def spin():
        # Keep the loop busy with short callbacks until the producer is done.
        if not done.done():
            loop.call_soon(spin)

    def producer():
        started.wait(WAIT)
        for i in range(n):
            loop.call_soon_threadsafe(record, i)

    loop.call_soon(started.set)
    loop.call_soon(spin)
    thread = _start(producer)
    loop.run_until_complete(asyncio.wait_for(done, 20))
    thread.join(WAIT)
    assert got == list(range(n))


@pytest.mark.timeout(60)
def test_threadsafe_ping_pong(loop):
    # The loop waits for each reply with nothing else to do, so nearly every
    # one of these calls has to wake a loop that sleeps in its poller.
    import queue
    rounds = 300
    requests = queue.Queue()

    def responder():
        while True:
            item = requests.get(timeout=WAIT)
            if item is None:
                return
            fut, i = item
            loop.call_soon_threadsafe(fut.set_result, i * 2)

    async def main():
        results = []
        for i in range(rounds):
            fut = loop.create_future()
            requests.put((fut, i))
            results.append(await asyncio.wait_for(fut, WAIT))
        return results

    thread = _start(responder)
    try:
        assert loop.run_until_complete(main()) == [2 * i for i in range(rounds)]
    finally:
        requests.put(None)
        thread.join(WAIT)


@pytest.mark.timeout(60)
def test_threadsafe_across_loop_runs(loop):
    # A producer keeps calling while the loop is repeatedly stopped and run
    # again: nothing is lost or run twice between runs.
    n = 1000
    got = []
    finished = threading.Event()

    def producer():
        for i in range(n):
            loop.call_soon_threadsafe(got.append, i)
            if i % 50 == 0:
                time.sleep(0.001)
        finished.set()

    thread = _start(producer)
    deadline = time.monotonic() + 30
    while (len(got) < n or not finished.is_set()) and time.monotonic() < deadline:
        loop.run_until_complete(asyncio.sleep(0.001))
    thread.join(WAIT)
    loop.run_until_complete(asyncio.sleep(0))
    assert got == list(range(n))


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs SIGUSR1")
def test_threadsafe_from_signal_handler_wakes_loop(loop):
    # A Python signal handler runs in the main thread, typically while the
    # loop is blocked in its poller; call_soon_threadsafe from it must wake
    # the loop.
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers run in the main thread")
    fut = loop.create_future()
    received = []

    def handler(signum, frame):
        received.append(signum)
        loop.call_soon_threadsafe(fut.set_result, "from signal handler")

    old = signal.signal(signal.SIGUSR1, handler)
    try:
        thread = _start(lambda: (time.sleep(0.05), os.kill(os.getpid(), signal.SIGUSR1)))
        assert loop.run_until_complete(asyncio.wait_for(fut, WAIT)) == "from signal handler"
        thread.join(WAIT)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert received == [signal.SIGUSR1]


@pytest.mark.timeout(20)
def test_threadsafe_args_and_context(loop):
    var = contextvars.ContextVar("var", default="default")
    results = []
    done = loop.create_future()

    def cb(*args):
        results.append((args, var.get()))
        if len(results) == 3:
            done.set_result(None)

    explicit = contextvars.copy_context()
    explicit.run(var.set, "explicit")

    def worker():
        var.set("thread")
        loop.call_soon_threadsafe(cb, 1, "two", (3,))
        loop.call_soon_threadsafe(cb, context=explicit)
        loop.call_soon_threadsafe(cb, "x", context=contextvars.Context())

    var.set("main")
    thread = _start(worker)
    loop.run_until_complete(asyncio.wait_for(done, WAIT))
    thread.join(WAIT)
    assert results == [
        ((1, "two", (3,)), "thread"),    # the calling thread's context, copied
        ((), "explicit"),
        (("x",), "default"),
    ]
    assert var.get() == "main"


def test_threadsafe_returns_handle_that_can_be_cancelled(loop):
    ran = []
    handle = loop.call_soon_threadsafe(ran.append, 1)
    assert not handle.cancelled()
    handle.cancel()
    assert handle.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == []


# From 3.14, asyncio's call_soon_threadsafe() handle serializes cancel() and
# cancelled() from another thread with a running callback: they wait for it
# to return. Before, they return at once.
CANCEL_WAITS_FOR_CALLBACK = hasattr(asyncio.events, "_ThreadSafeHandle")


@pytest.mark.timeout(30)
def test_threadsafe_handle_cancel_from_another_thread_while_it_runs(loop):
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def callback():
        started.set()
        if CANCEL_WAITS_FOR_CALLBACK:
            time.sleep(0.2)          # cancel() arrives meanwhile and must wait
        else:
            release.wait(WAIT)       # cancel() returns while this waits
        finished.set()

    def other_thread():
        handle = loop.call_soon_threadsafe(callback)
        started.wait(WAIT)
        handle.cancel()
        seen["finished when cancel returned"] = finished.is_set()
        seen["cancelled"] = handle.cancelled()
        release.set()
        loop.call_soon_threadsafe(loop.stop)

    thread = _start(other_thread)
    loop.run_forever()
    thread.join(WAIT)
    assert seen == {"finished when cancel returned": CANCEL_WAITS_FOR_CALLBACK,
                    "cancelled": True}


@pytest.mark.timeout(30)
def test_threadsafe_handle_cancelled_from_another_thread_before_it_runs(loop):
    ran = []

    def other_thread():
        handle = loop.call_soon_threadsafe(ran.append, "ran")
        handle.cancel()
        loop.call_soon_threadsafe(loop.stop)

    _start(other_thread).join(WAIT)
    loop.run_forever()
    assert ran == []


@pytest.mark.timeout(30)
def test_threadsafe_handle_cancelling_itself_does_not_wait(loop):
    box = {}

    def callback():
        box["handle"].cancel()
        box["cancelled inside"] = box["handle"].cancelled()
        loop.stop()

    box["handle"] = loop.call_soon_threadsafe(callback)
    loop.run_forever()
    assert box["cancelled inside"] is True


def test_threadsafe_on_closed_loop(loop):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.call_soon_threadsafe(lambda: None)
    errors = []

    def worker():
        try:
            loop.call_soon_threadsafe(lambda: None)
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = _start(worker)
    thread.join(WAIT)
    assert errors == ["Event loop is closed"]


@pytest.mark.timeout(20)
def test_threadsafe_stop_from_other_thread_while_running_forever(loop):
    ticks = []

    def tick():
        ticks.append(1)
        loop.call_later(0.001, tick)

    loop.call_soon(tick)

    def stopper():
        # Wait until the loop demonstrably runs, then stop it from here.
        deadline = time.monotonic() + WAIT
        while len(ticks) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        loop.call_soon_threadsafe(loop.stop)

    thread = _start(stopper)
    loop.run_forever()
    thread.join(WAIT)
    assert len(ticks) >= 5
    assert not loop.is_running()


# ----------------------------------------------------- run_coroutine_threadsafe

@pytest.mark.timeout(30)
def test_run_coroutine_threadsafe(loop):
    ready = threading.Event()
    loop.call_soon(ready.set)
    runner = _start(loop.run_forever)
    try:
        assert ready.wait(WAIT)

        async def add(a, b):
            await asyncio.sleep(0.001)
            assert asyncio.get_running_loop() is loop
            return a + b, threading.get_ident()

        result, ident = asyncio.run_coroutine_threadsafe(add(2, 3), loop).result(WAIT)
        assert result == 5
        assert ident == runner.ident

        async def fail():
            await asyncio.sleep(0)
            raise ValueError("from the loop")

        fut = asyncio.run_coroutine_threadsafe(fail(), loop)
        with pytest.raises(ValueError, match="from the loop"):
            fut.result(WAIT)

        # Cancelling the concurrent future cancels the task in the loop.
        started = threading.Event()
        cancelled = threading.Event()

        async def forever():
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        fut = asyncio.run_coroutine_threadsafe(forever(), loop)
        assert started.wait(WAIT)
        assert fut.cancel()
        assert cancelled.wait(WAIT)
        with pytest.raises(concurrent.futures.CancelledError):
            fut.result(WAIT)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(WAIT)
    assert not runner.is_alive()
    assert not loop.is_running()


def test_run_coroutine_threadsafe_rejects_non_coroutine(loop):
    with pytest.raises(TypeError, match="A coroutine object is required"):
        asyncio.run_coroutine_threadsafe(lambda: None, loop)


@pytest.mark.timeout(30)
def test_loop_in_thread_cannot_be_run_or_closed_from_another(loop):
    ready = threading.Event()
    loop.call_soon(ready.set)
    runner = _start(loop.run_forever)
    try:
        assert ready.wait(WAIT)
        assert loop.is_running()
        fut = loop.create_future()
        with pytest.raises(RuntimeError, match="^This event loop is already running$"):
            loop.run_until_complete(fut)
        with pytest.raises(RuntimeError, match="^Cannot close a running event loop$"):
            loop.close()
        # Last: Python 3.13.0's asyncio wrongly marks the loop as not running
        # after this (correctly refused) call.
        with pytest.raises(RuntimeError, match="^This event loop is already running$"):
            loop.run_forever()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(WAIT)
    assert not runner.is_alive()
    assert not loop.is_running()
    assert not loop.is_closed()


# --------------------------------------------------------------- executors

@pytest.mark.timeout(30)
def test_run_in_executor_default(loop):
    def work(a, b):
        return a * b, threading.get_ident(), threading.current_thread().name

    result, ident, _ = loop.run_until_complete(loop.run_in_executor(None, work, 6, 7))
    assert result == 42
    assert ident != threading.get_ident()
    # The default executor is created once and reused.
    results = loop.run_until_complete(asyncio.gather(
        *[loop.run_in_executor(None, work, i, 2) for i in range(20)]))
    assert [r[0] for r in results] == [2 * i for i in range(20)]
    assert all(r[1] != threading.get_ident() for r in results)


@pytest.mark.timeout(30)
def test_run_in_executor_returns_asyncio_future(loop):
    fut = loop.run_in_executor(None, sum, [1, 2, 3])
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert loop.run_until_complete(fut) == 6


@pytest.mark.timeout(30)
def test_run_in_executor_explicit(loop):
    with concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="explicit-pool") as executor:
        name = loop.run_until_complete(
            loop.run_in_executor(executor, lambda: threading.current_thread().name))
    assert name.startswith("explicit-pool")


@pytest.mark.timeout(30)
def test_set_default_executor(loop):
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="my-default")
    loop.set_default_executor(executor)
    name = loop.run_until_complete(
        loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith("my-default")
    loop.run_until_complete(loop.shutdown_default_executor())
    # shutdown_default_executor shut our executor down.
    with pytest.raises(RuntimeError):
        executor.submit(int)


@pytest.mark.timeout(30)
def test_run_in_executor_exception(loop):
    def boom():
        raise ValueError("in the executor")

    with pytest.raises(ValueError, match="in the executor"):
        loop.run_until_complete(loop.run_in_executor(None, boom))

    async def main():
        try:
            await loop.run_in_executor(None, boom)
        except ValueError as exc:
            return exc.args
    assert loop.run_until_complete(main()) == ("in the executor",)


def test_run_in_executor_debug_rejects_coroutine_function(loop):
    loop.set_debug(True)

    async def coro_func():
        pass
    with pytest.raises(TypeError, match=r"coroutines cannot be used with run_in_executor\(\)"):
        loop.run_in_executor(None, coro_func)


class NotAThreadPool(concurrent.futures.Executor):
    def submit(self, fn, /, *args, **kwargs):
        fut = concurrent.futures.Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


def test_set_default_executor_rejects_other_executors(loop):
    if sys.version_info >= (3, 11):
        with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor"):
            loop.set_default_executor(NotAThreadPool())
    else:       # 3.10 still only deprecates it
        with pytest.warns(DeprecationWarning, match="not an instance of ThreadPoolExecutor"):
            loop.set_default_executor(NotAThreadPool())
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
    # A non-default executor of another kind is fine for run_in_executor.
    assert loop.run_until_complete(loop.run_in_executor(NotAThreadPool(), max, 3, 9)) == 9


@pytest.mark.timeout(30)
def test_run_in_executor_after_shutdown_default_executor(loop):
    assert loop.run_until_complete(loop.run_in_executor(None, int, "5")) == 5
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, int, "5")
    # An explicit executor still works.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        assert loop.run_until_complete(loop.run_in_executor(executor, int, "6")) == 6


@pytest.mark.timeout(30)
def test_shutdown_default_executor_without_executor(loop):
    # Never used: nothing to shut down, but later use is still refused.
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_in_executor(None, int)


@pytest.mark.timeout(30)
def test_shutdown_default_executor_waits_for_running_jobs(loop):
    started = threading.Event()
    finished = []

    def job(i):
        started.set()
        time.sleep(0.1)
        finished.append(i)
        return i

    futs = [loop.run_in_executor(None, job, i) for i in range(3)]
    assert started.wait(WAIT)
    loop.run_until_complete(loop.shutdown_default_executor())
    # Every job submitted before the shutdown has run to completion.
    assert sorted(finished) == [0, 1, 2]
    assert loop.run_until_complete(asyncio.gather(*futs)) == [0, 1, 2]


@pytest.mark.timeout(30)
def test_close_does_not_wait_for_default_executor(loop_factory):
    loop = loop_factory()
    release = threading.Event()
    started = threading.Event()
    done = []

    def job():
        started.set()
        release.wait(WAIT)
        done.append(True)

    loop.run_in_executor(None, job)
    assert started.wait(WAIT)
    loop.close()                 # returns with the job still blocked
    assert done == []
    assert loop.is_closed()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.run_in_executor(None, int)
    release.set()
    deadline = time.monotonic() + WAIT
    while not done and time.monotonic() < deadline:
        time.sleep(0.005)
    assert done == [True]


def _stdlib_timeout_bounds_wait():
    # 3.12 added timeout=; early 3.12 releases applied it only to the final
    # thread.join(), after waiting for the executor without limit.
    import inspect
    if sys.version_info < (3, 12):
        return False
    source = inspect.getsource(asyncio.BaseEventLoop.shutdown_default_executor)
    return "timeouts.timeout(" in source


@pytest.mark.timeout(30)
def test_shutdown_default_executor_timeout(loop, impl):
    if impl == "asyncio" and not _stdlib_timeout_bounds_wait():
        pytest.skip("this Python's asyncio shutdown_default_executor() has no "
                    "timeout= that bounds the wait (3.12+, fixed in later 3.12.x)")
    release = threading.Event()
    started = threading.Event()

    def job():
        started.set()
        release.wait(WAIT)
        return "late"

    fut = loop.run_in_executor(None, job)
    assert started.wait(WAIT)
    try:
        with pytest.warns(RuntimeWarning,
                          match="did not finishing joining its threads within 0.05 seconds"):
            loop.run_until_complete(loop.shutdown_default_executor(timeout=0.05))
        assert not fut.done()
        with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
            loop.run_in_executor(None, int)
    finally:
        release.set()
    # The job was not cancelled: it finishes and its future gets the result.
    assert loop.run_until_complete(asyncio.wait_for(fut, WAIT)) == "late"


@pytest.mark.timeout(30)
def test_shutdown_default_executor_timeout_not_reached(loop, impl):
    if impl == "asyncio" and sys.version_info < (3, 12):
        pytest.skip("asyncio's shutdown_default_executor() takes timeout= from 3.12 on")
    finished = []
    fut = loop.run_in_executor(None, lambda: finished.append(1))
    loop.run_until_complete(fut)
    # No warning when the executor finishes in time (warnings are errors here
    # for ResourceWarning only, so check explicitly).
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loop.run_until_complete(loop.shutdown_default_executor(timeout=WAIT))
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert finished == [1]


# ------------------------------------------------------ debug mode thread check

@pytest.mark.timeout(30)
@pytest.mark.parametrize("method", ["call_soon", "call_later", "call_at"])
def test_debug_non_threadsafe_call_from_other_thread(loop, method):
    loop.set_debug(True)
    outcome = loop.create_future()

    def call():
        if method == "call_soon":
            return loop.call_soon(lambda: None)
        if method == "call_later":
            return loop.call_later(0.01, lambda: None)
        return loop.call_at(loop.time() + 0.01, lambda: None)

    def worker():
        try:
            call()
        except BaseException as exc:
            loop.call_soon_threadsafe(outcome.set_result, exc)
        else:
            loop.call_soon_threadsafe(outcome.set_result, None)

    async def main():
        thread = _start(worker)
        result = await asyncio.wait_for(outcome, WAIT)
        thread.join(WAIT)
        return result

    exc = loop.run_until_complete(main())
    assert isinstance(exc, RuntimeError)
    assert "Non-thread-safe operation invoked on an event loop other than the current one" \
        in str(exc)


@pytest.mark.timeout(30)
def test_debug_call_soon_from_other_thread_allowed_when_not_running(loop):
    loop.set_debug(True)
    ran = []
    errors = []

    def worker():
        try:
            loop.call_soon(ran.append, "from thread")
        except BaseException as exc:      # pragma: no cover - reported below
            errors.append(exc)

    thread = _start(worker)
    thread.join(WAIT)
    assert errors == []
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["from thread"]


@pytest.mark.timeout(30)
def test_no_thread_check_without_debug(loop):
    assert not loop.get_debug()
    outcome = loop.create_future()
    ran = []

    def worker():
        try:
            handle = loop.call_soon(ran.append, "unsafe")
        except BaseException as exc:      # pragma: no cover - reported below
            loop.call_soon_threadsafe(outcome.set_result, exc)
        else:
            # call_soon_threadsafe also wakes the loop for the call above.
            loop.call_soon_threadsafe(outcome.set_result, handle)

    async def main():
        thread = _start(worker)
        result = await asyncio.wait_for(outcome, WAIT)
        thread.join(WAIT)
        await asyncio.sleep(0)
        return result

    result = loop.run_until_complete(main())
    assert not isinstance(result, BaseException)
    assert not result.cancelled()       # the handle call_soon returned
    assert ran == ["unsafe"]
