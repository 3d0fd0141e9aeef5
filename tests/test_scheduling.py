"""Scheduling semantics: call_soon / call_later / call_at order, iterations,
stop(), timers at scale, handles, contexts and callback errors.

Each test runs on stdlib asyncio and on fastloop (both pollers) and asserts
the same outcome.
"""
import asyncio
import contextvars
import logging
import sys
import time

import pytest

pytestmark = pytest.mark.timeout(60)


def run_iterations(loop, count):
    """Run exactly `count` loop iterations (the stop() callback is scheduled
    at the start of the last one, so it runs in that iteration)."""
    for _ in range(count):
        loop.call_soon(loop.stop)
        loop.run_forever()


# ------------------------------------------------------------------ call_soon

def test_call_soon_runs_in_fifo_order_with_args(loop):
    out = []
    for i in range(100):
        loop.call_soon(out.append, i)
    loop.call_soon(lambda *a: out.append(a), 1, "two", None)
    run_iterations(loop, 1)
    assert out == list(range(100)) + [(1, "two", None)]


def test_callbacks_scheduled_during_an_iteration_run_in_the_next(loop):
    out = []

    def first():
        out.append("first")
        loop.call_soon(out.append, "scheduled-by-first")

    loop.call_soon(first)
    loop.call_soon(out.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["first", "second"]
    run_iterations(loop, 1)
    assert out == ["first", "second", "scheduled-by-first"]


def test_stop_finishes_the_current_iteration(loop):
    out = []
    loop.call_soon(loop.stop)
    loop.call_soon(out.append, 1)
    loop.call_soon(out.append, 2)
    loop.run_forever()
    assert out == [1, 2]
    assert not loop.is_running()


def test_stop_before_run_forever_runs_one_iteration(loop):
    out = []
    loop.call_soon(out.append, "ready")
    loop.call_later(3600, out.append, "far timer")
    loop.stop()
    loop.run_forever()
    assert out == ["ready"]


def test_stop_inside_callback_scheduled_later_does_not_stop_earlier(loop):
    out = []

    def chain(n):
        out.append(n)
        if n < 5:
            loop.call_soon(chain, n + 1)
        else:
            loop.stop()

    loop.call_soon(chain, 0)
    loop.run_forever()
    assert out == [0, 1, 2, 3, 4, 5]


def test_cancelled_handle_does_not_run(loop):
    out = []
    h = loop.call_soon(out.append, 1)
    loop.call_soon(out.append, 2)
    h.cancel()
    assert h.cancelled()
    run_iterations(loop, 1)
    assert out == [2]


def test_handle_cancelled_by_an_earlier_callback_in_same_iteration(loop):
    out = []
    later = []
    loop.call_soon(lambda: later[0].cancel())
    later.append(loop.call_soon(out.append, "cancelled"))
    loop.call_soon(out.append, "kept")
    run_iterations(loop, 1)
    assert out == ["kept"]


@pytest.mark.parametrize("bad", [None, 1, "text", object()])
def test_call_soon_rejects_non_callables_in_debug_mode(loop, bad):
    loop.set_debug(True)
    for method in (loop.call_soon, loop.call_soon_threadsafe):
        with pytest.raises(TypeError, match="a callable object was expected"):
            method(bad)
    with pytest.raises(TypeError, match="a callable object was expected"):
        loop.call_later(1, bad)
    with pytest.raises(TypeError, match="a callable object was expected"):
        loop.call_at(loop.time() + 1, bad)


def test_call_soon_rejects_coroutines_in_debug_mode(loop):
    async def coro_func():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError, match="coroutines cannot be used with call_soon"):
        loop.call_soon(coro_func)
    coro = coro_func()
    with pytest.raises(TypeError, match="coroutines cannot be used with call_soon"):
        loop.call_soon(coro)
    coro.close()
    with pytest.raises(TypeError, match="coroutines cannot be used with call_at"):
        loop.call_later(1, coro_func)


def test_fastloop_rejects_non_callables_without_debug_mode(loop, is_fastloop):
    """A documented difference: asyncio only checks in debug mode and fails
    later, inside the loop; fastloop fails at the call site in every mode."""
    async def coro_func():
        pass

    if not is_fastloop:
        pytest.skip("asyncio checks callbacks in debug mode only")
    with pytest.raises(TypeError, match="a callable object was expected"):
        loop.call_soon(42)
    with pytest.raises(TypeError, match="coroutines cannot be used with call_soon"):
        loop.call_soon(coro_func)


# ------------------------------------------------------------------- contexts

VAR = contextvars.ContextVar("VAR", default="unset")


def test_callback_runs_in_copy_of_current_context(loop):
    seen = []
    VAR.set("outer")
    loop.call_soon(lambda: seen.append(VAR.get()))
    VAR.set("changed after scheduling")
    run_iterations(loop, 1)
    VAR.set("unset")
    assert seen == ["outer"]


def test_callback_runs_in_given_context_and_changes_stay_there(loop):
    ctx = contextvars.copy_context()
    ctx.run(VAR.set, "in ctx")
    seen = []

    def cb():
        seen.append(VAR.get())
        VAR.set("set by callback")

    loop.call_soon(cb, context=ctx)
    loop.call_later(0, cb, context=ctx)
    loop.call_at(loop.time(), lambda: seen.append(VAR.get()))
    run_iterations(loop, 2)
    assert seen[:2] == ["in ctx", "set by callback"]
    assert seen[2] == "unset"
    assert ctx[VAR] == "set by callback"
    assert VAR.get() == "unset"


def test_handles_are_asyncio_handles(loop):
    # Code checks isinstance(h, asyncio.Handle / TimerHandle), and keeps
    # weak references to handles.
    import weakref
    from asyncio import events

    handles = {
        "call_soon": loop.call_soon(print),
        "call_soon_threadsafe": loop.call_soon_threadsafe(print),
        "call_later": loop.call_later(10, print),
        "call_at": loop.call_at(loop.time() + 10, print),
    }
    for name, h in handles.items():
        assert isinstance(h, asyncio.Handle), name
        assert isinstance(h, asyncio.TimerHandle) == (name in ("call_later", "call_at")), name
        ref = weakref.ref(h)
        assert ref() is h and h.__weakref__ is ref
        h.cancel()
    # 3.14's call_soon_threadsafe() handle is a _ThreadSafeHandle (see
    # test_threads.py for its behaviour).
    if hasattr(events, "_ThreadSafeHandle"):
        assert isinstance(handles["call_soon_threadsafe"], events._ThreadSafeHandle)
        assert not isinstance(handles["call_soon"], events._ThreadSafeHandle)


def test_handle_get_context(loop, is_fastloop):
    if not is_fastloop and not hasattr(asyncio.Handle, "get_context"):
        pytest.skip("Handle.get_context() is new in Python 3.12")
    ctx = contextvars.copy_context()
    h = loop.call_soon(print, context=ctx)
    assert h.get_context() is ctx
    h.cancel()
    t = loop.call_later(10, print, context=ctx)
    assert t.get_context() is ctx
    t.cancel()


def test_each_callback_gets_its_own_copy_of_the_context(loop):
    # Callbacks scheduled in the same context must not see each other's
    # changes, whichever of them runs first, and even when one fails.
    seen = []

    def change(value):
        seen.append(("change sees", VAR.get()))
        VAR.set(value)

    def fail():
        VAR.set("set before failing")
        raise ValueError("boom")

    loop.set_exception_handler(lambda l, c: seen.append(("error", type(c["exception"]).__name__)))
    VAR.set("outer")
    try:
        h1 = loop.call_soon(change, "first")
        h2 = loop.call_soon(fail)
        h3 = loop.call_soon(change, "third")
        h4 = loop.call_later(0, lambda: seen.append(("timer sees", VAR.get())))
        h5 = loop.call_soon(lambda: seen.append(("last sees", VAR.get())))
        run_iterations(loop, 2)
    finally:
        VAR.set("unset")
    assert seen == [("change sees", "outer"), ("error", "ValueError"),
                    ("change sees", "outer"), ("last sees", "outer"),
                    ("timer sees", "outer")]
    if hasattr(h1, "get_context"):    # asyncio.Handle has it from 3.12 on
        assert h1.get_context()[VAR] == "first"
        assert h2.get_context()[VAR] == "set before failing"
        assert h3.get_context()[VAR] == "third"
        assert h4.get_context()[VAR] == "outer"
        assert h5.get_context()[VAR] == "outer"


def test_changes_through_get_context_stay_with_that_handle(loop):
    if not hasattr(loop.call_soon(lambda: None), "get_context"):
        pytest.skip("Handle.get_context() is new in Python 3.12")
    seen = []
    h1 = loop.call_soon(lambda: seen.append(VAR.get()))
    h2 = loop.call_soon(lambda: seen.append(VAR.get()))
    h1.get_context().run(VAR.set, "via get_context")
    run_iterations(loop, 2)
    assert seen[-2:] == ["via get_context", "unset"]
    assert h2.get_context().get(VAR) is None or h2.get_context()[VAR] == "unset"


def test_callback_scheduled_after_a_change_sees_the_change(loop):
    seen = []

    def first():
        VAR.set("changed in first")
        loop.call_soon(lambda: seen.append(VAR.get()))

    loop.call_soon(first)
    loop.call_soon(lambda: seen.append(VAR.get()))
    run_iterations(loop, 2)
    assert seen == ["unset", "changed in first"]


def test_handle_run_directly_from_a_callback_of_the_same_context(loop):
    # Two handles scheduled from the same context; the first runs the second
    # synchronously (as some tests do): both must run, each in its own copy.
    seen = []
    later = []

    def outer():
        VAR.set("outer changed")
        later[0]._run()
        seen.append(("outer", VAR.get()))

    def inner():
        seen.append(("inner", VAR.get()))
        VAR.set("inner changed")

    loop.call_soon(outer)
    later.append(loop.call_soon(inner))
    later[0].cancel()      # ran by hand only
    later[0] = loop.call_soon(inner)
    errors = []
    loop.set_exception_handler(lambda l, c: errors.append(c))
    run_iterations(loop, 1)
    assert errors == []
    assert seen[:2] == [("inner", "unset"), ("outer", "outer changed")]


def test_threadsafe_callback_sees_the_scheduling_threads_context(loop):
    import threading
    seen = []

    def producer():
        VAR.set("from thread")
        loop.call_soon_threadsafe(lambda: seen.append(VAR.get()))
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: seen.append(VAR.get()))
    thread = threading.Thread(target=producer)
    thread.start()
    thread.join()
    loop.run_forever()
    assert seen == ["unset", "from thread"]


# ---------------------------------------------------------------------- timers

def test_timers_run_in_deadline_order(loop):
    out = []
    now = loop.time()
    for i, delay in enumerate([0.03, 0.01, 0.02, 0.0, 0.015]):
        loop.call_at(now + delay, out.append, delay)
    loop.call_at(now + 0.05, loop.stop)
    loop.run_forever()
    assert out == [0.0, 0.01, 0.015, 0.02, 0.03]


def test_call_later_waits_at_least_the_delay(loop):
    t0 = time.monotonic()
    fired = []
    loop.call_later(0.05, lambda: (fired.append(time.monotonic()), loop.stop()))
    loop.run_forever()
    assert fired[0] - t0 >= 0.05


@pytest.mark.timeout(30)
def test_replaced_time_is_the_loops_clock(loop):
    """A time() replaced on the loop (mock.patch.object(loop, "time"), as
    test suites freeze or advance the loop's clock) or on its class is what
    call_later() schedules against and what decides when timers are due; the
    real clock is back once the patch is undone."""
    from unittest import mock
    fired = []
    clock = [loop.time()]
    start = clock[0]

    async def spin():
        for _ in range(3):
            await asyncio.sleep(0)

    async def main():
        seen = []
        with mock.patch.object(loop, "time") as frozen:
            frozen.return_value = start
            timer = loop.call_later(3600, fired.append, "instance")
            seen.append(round(timer.when() - start, 6))
            await spin()
            seen.append(list(fired))
            frozen.return_value = start + 3600
            await spin()
            seen.append(list(fired))
        seen.append("time" in vars(loop))
        seen.append(start <= loop.time() < start + 60)
        with mock.patch.object(type(loop), "time", lambda self: clock[0]):
            clock[0] = start + 7200
            timer = loop.call_later(60, fired.append, "class")
            seen.append(round(timer.when() - start, 6))
            await spin()
            clock[0] += 60
            await spin()
            seen.append(list(fired))
        return seen

    # Not helpers.run(): its wait_for() timeout would run by the patched clock.
    assert loop.run_until_complete(main()) == [3600, [], ["instance"], False, True,
                                               7260, ["instance", "class"]]


def test_time_overridden_in_a_subclass(loop):
    """A loop subclass's own time() is the clock its timers run by."""
    class ShiftedClock(type(loop)):
        def time(self):
            return super().time() + 1000

    sub = ShiftedClock()
    try:
        fired = []
        now = sub.time()
        timer = sub.call_later(0.01, lambda: (fired.append(sub.time()), sub.stop()))
        sub.run_forever()
        assert now + 0.01 <= timer.when() < now + 30
        assert timer.when() <= fired[0]
    finally:
        sub.close()


def test_timer_deadline_keeps_an_int(loop):
    """call_at() with an int (aiohttp's timeouts round up to whole seconds)
    gives a handle whose when() and _when are that int, as asyncio's keep
    the deadline as given; call_later()'s is a float."""
    deadline = int(loop.time()) + 100
    at = loop.call_at(deadline, lambda: None)
    later = loop.call_later(100, lambda: None)
    made = asyncio.TimerHandle(7, print, (), loop)
    try:
        assert type(at.when()) is int and type(at._when) is int
        assert at.when() == deadline
        assert type(later.when()) is float
        assert made.when() == 7 and type(made.when()) is int
    finally:
        at.cancel()
        later.cancel()


def test_equal_deadlines_all_run(loop, is_fastloop):
    """asyncio's heap gives no order among timers with exactly equal
    deadlines; fastloop runs them FIFO (documented in the README)."""
    out = []
    when = loop.time() + 0.01
    for i in range(50):
        loop.call_at(when, out.append, i)
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert sorted(out) == list(range(50))
    if is_fastloop:
        assert out == list(range(50))


def test_ready_callbacks_run_before_due_timers_in_one_iteration(loop):
    out = []
    loop.call_at(loop.time() - 1, out.append, "timer")
    loop.call_soon(out.append, "soon")
    run_iterations(loop, 1)
    assert out == ["soon", "timer"]


def test_timer_scheduled_during_iteration_waits_for_next(loop):
    out = []

    def cb():
        out.append("cb")
        loop.call_later(0, out.append, "timer from cb")

    loop.call_soon(cb)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert out == ["cb"]
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    assert out == ["cb", "timer from cb"]


def test_100k_timers(loop):
    count = 0

    def tick():
        nonlocal count
        count += 1

    now = loop.time()
    for i in range(100_000):
        loop.call_at(now + (i % 97) * 0.0001, tick)
    loop.call_at(now + 0.02, loop.stop)
    loop.run_forever()
    assert count == 100_000


def test_mass_cancellation_keeps_the_rest(loop):
    fired = []
    handles = [loop.call_later(0.001 * (i % 10), fired.append, i) for i in range(20_000)]
    for i, h in enumerate(handles):
        if i % 10:
            h.cancel()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert sorted(fired) == list(range(0, 20_000, 10))
    assert all(h.cancelled() for i, h in enumerate(handles) if i % 10)


def test_cancel_all_far_timers_then_loop_does_not_wait_for_them(loop):
    handles = [loop.call_later(3600, print) for _ in range(1000)]
    for h in handles:
        h.cancel()
    loop.call_later(0.01, loop.stop)
    t0 = time.monotonic()
    loop.run_forever()
    assert time.monotonic() - t0 < 60     # i.e. it did not sleep an hour


def test_timer_handle_api(loop):
    when = loop.time() + 10
    h = loop.call_at(when, print, "x")
    assert isinstance(h.when(), float)
    assert h.when() == pytest.approx(when)
    assert h._when == h.when()
    assert not h.cancelled()
    assert h._scheduled
    assert "when=" in repr(h) and "print" in repr(h)
    h.cancel()
    assert h.cancelled()
    assert "cancelled" in repr(h)
    h.cancel()   # idempotent


def test_timer_handles_compare_by_deadline(loop):
    a = loop.call_at(loop.time() + 1, print)
    b = loop.call_at(loop.time() + 2, print)
    assert a < b and b > a and a <= b and b >= a and a != b
    assert sorted([b, a]) == [a, b]
    assert hash(a) == hash(a.when())
    a.cancel()
    b.cancel()


def test_call_later_and_call_at_reject_none(loop, is_fastloop):
    with pytest.raises(TypeError):
        loop.call_later(None, print)
    # Python 3.10's asyncio only asserts; fastloop raises TypeError everywhere.
    error = TypeError if is_fastloop or sys.version_info >= (3, 11) else AssertionError
    with pytest.raises(error):
        loop.call_at(None, print)


def test_negative_delay_runs_like_zero(loop):
    out = []
    loop.call_later(-5, out.append, "neg")
    loop.call_soon(out.append, "soon")
    run_iterations(loop, 2)
    assert out == ["soon", "neg"]


def test_time_is_monotonic_clock_at_full_resolution(loop):
    t0 = time.monotonic()
    lt = loop.time()
    t1 = time.monotonic()
    assert t0 <= lt <= t1
    values = {loop.time() for _ in range(1000)}
    assert len(values) > 1          # not rounded to milliseconds


# ------------------------------------------------------------------- handles

def test_handle_repr_and_attributes(loop):
    def callback(a, b):
        pass

    h = loop.call_soon(callback, 1, "x")
    r = repr(h)
    # (3.13+ shows the arguments only in debug mode)
    assert r.startswith("<Handle ") and "callback(" in r
    assert h._callback is callback and h._args == (1, "x")
    assert not h._cancelled
    h.cancel()
    assert h._cancelled and h._callback is None and h._args is None
    assert repr(h) == "<Handle cancelled>"


def test_handles_are_weak_referenceable(loop):
    import weakref
    h = loop.call_soon(print)
    assert weakref.ref(h)() is h
    h.cancel()


# ---------------------------------------------------------- errors in callbacks

def test_exception_in_callback_goes_to_handler_and_loop_survives(loop):
    contexts = []
    out = []
    loop.set_exception_handler(lambda l, ctx: contexts.append((l, ctx)))

    def boom():
        raise ZeroDivisionError("boom")

    h = loop.call_soon(boom)
    loop.call_soon(out.append, "after")
    run_iterations(loop, 1)
    assert out == ["after"]
    [(l, ctx)] = contexts
    assert l is loop
    assert ctx["message"].startswith("Exception in callback ")
    assert "boom" in ctx["message"]
    assert isinstance(ctx["exception"], ZeroDivisionError)
    assert ctx["handle"] is h


def test_default_handler_logs_callback_errors(loop, caplog):
    def boom():
        raise ValueError("logged")

    loop.call_soon(boom)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run_iterations(loop, 1)
    assert any("Exception in callback" in r.getMessage() and r.exc_info
               and r.exc_info[0] is ValueError for r in caplog.records)


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_and_system_exit_propagate(loop, exc_type):
    out = []

    def interrupt():
        raise exc_type()

    loop.call_soon(interrupt)
    loop.call_soon(out.append, "left for next run")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert not loop.is_running()
    assert out == []
    run_iterations(loop, 1)
    assert out == ["left for next run"]


def test_system_exit_subclass_from_timer_propagates(loop):
    class GracefulExit(SystemExit):
        pass

    def stop_app():
        raise GracefulExit()

    loop.call_later(0.001, stop_app)
    with pytest.raises(GracefulExit):
        loop.run_forever()


# ---------------------------------------------------------- reentrancy, close

def test_run_forever_inside_running_loop_is_refused(loop):
    errors = []

    def nested():
        try:
            loop.run_forever()
        except RuntimeError as e:
            errors.append(str(e))
        loop.stop()

    loop.call_soon(nested)
    loop.run_forever()
    assert errors == ["This event loop is already running"]


def test_scheduling_on_a_closed_loop_fails(loop):
    loop.close()
    for call in (lambda: loop.call_soon(print), lambda: loop.call_later(1, print),
                 lambda: loop.call_at(1, print), lambda: loop.call_soon_threadsafe(print)):
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            call()


def test_close_drops_pending_callbacks(loop):
    out = []
    loop.call_soon(out.append, 1)
    loop.call_later(0, out.append, 2)
    loop.close()
    assert loop.is_closed()
    assert out == []


# ----------------------------------------------------------- tasks on the loop

def test_sleep_zero_ping_pong_between_tasks(loop):
    order = []

    async def worker(name):
        for i in range(3):
            order.append((name, i))
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(worker("a"), worker("b"))

    loop.run_until_complete(main())
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_gather_many_tasks(loop):
    async def square(i):
        await asyncio.sleep(0)
        return i * i

    async def main():
        return await asyncio.gather(*(square(i) for i in range(5000)))

    assert loop.run_until_complete(main()) == [i * i for i in range(5000)]


def test_wait_for_timeout_and_cancellation(loop):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), 0.01)
        task = asyncio.ensure_future(asyncio.sleep(10))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "done"

    assert loop.run_until_complete(main()) == "done"


def test_contextvars_are_isolated_per_task(loop):
    async def child(value):
        VAR.set(value)
        await asyncio.sleep(0)
        return VAR.get()

    async def main():
        VAR.set("main")
        results = await asyncio.gather(child("a"), child("b"))
        return results, VAR.get()

    assert loop.run_until_complete(main()) == (["a", "b"], "main")
