"""The loop's life cycle: running, stopping, closing, async generators, tasks,
task factories, exception handling, interrupts and debug mode.

Every test runs on stdlib asyncio and on fastloop (see conftest.py) and must
behave the same on both.
"""
import asyncio
import contextvars
import gc
import logging
import os
import re
import signal
import sys
import threading
import time
import warnings

import pytest

WAIT = 10.0


# ------------------------------------------------------- run_until_complete

def test_run_until_complete_coroutine(loop):
    async def main(x):
        await asyncio.sleep(0)
        return x * 2
    assert loop.run_until_complete(main(21)) == 42
    assert not loop.is_running()


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "value")
    assert loop.run_until_complete(fut) == "value"
    # An already completed future returns at once, with its result.
    assert loop.run_until_complete(fut) == "value"


def test_run_until_complete_task(loop):
    async def main():
        return "task"
    task = loop.create_task(main())
    assert loop.run_until_complete(task) == "task"
    assert task.done()


def test_run_until_complete_awaitable(loop):
    class Awaitable:
        def __await__(self):
            yield from asyncio.sleep(0).__await__()
            return "awaited"
    assert loop.run_until_complete(Awaitable()) == "awaited"


@pytest.mark.parametrize("value", [42, None, "text", lambda: None])
def test_run_until_complete_non_awaitable(loop, value):
    with pytest.raises(TypeError, match="An asyncio.Future, a coroutine or an awaitable is required"):
        loop.run_until_complete(value)
    assert not loop.is_running()
    # The loop is still usable.
    assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"


def test_run_until_complete_future_of_other_loop(loop, loop_factory):
    other = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError, match="different loop"):
            loop.run_until_complete(fut)
    finally:
        other.close()


def test_run_until_complete_exception(loop):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("raised in the coroutine")
    with pytest.raises(ValueError, match="raised in the coroutine"):
        loop.run_until_complete(main())

    fut = loop.create_future()
    loop.call_soon(fut.set_exception, KeyError("on the future"))
    with pytest.raises(KeyError, match="on the future"):
        loop.run_until_complete(fut)


def test_run_until_complete_cancelled(loop):
    async def main():
        await asyncio.sleep(3600)
    task = loop.create_task(main())
    loop.call_soon(task.cancel)
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    assert task.cancelled()


def test_run_until_complete_stopped_before_future_completed(loop):
    fut = loop.create_future()
    loop.call_soon(loop.stop)
    with pytest.raises(RuntimeError, match=r"^Event loop stopped before Future completed\.$"):
        loop.run_until_complete(fut)
    assert not fut.done()
    assert not loop.is_running()
    # The future can still complete in a later run.
    loop.call_soon(fut.set_result, 7)
    assert loop.run_until_complete(fut) == 7


def test_run_until_complete_stopped_from_coroutine(loop):
    fut = loop.create_future()

    async def stopper():
        await asyncio.sleep(0)
        loop.stop()
    loop.create_task(stopper())
    with pytest.raises(RuntimeError, match="Event loop stopped before Future completed"):
        loop.run_until_complete(fut)
    fut.cancel()


def test_stop_before_run_forever_runs_one_iteration(loop):
    ran = []
    loop.call_soon(ran.append, 1)
    loop.stop()
    loop.run_forever()
    assert ran == [1]
    # The stop request was used up: the next run needs its own.
    loop.call_soon(ran.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == [1, 2]


def test_stop_lets_current_iteration_finish(loop):
    ran = []

    def first():
        ran.append("first")
        loop.stop()
        loop.call_soon(ran.append, "next iteration")
    loop.call_soon(first)
    loop.call_soon(ran.append, "same iteration")
    loop.run_forever()
    assert ran == ["first", "same iteration"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["first", "same iteration", "next iteration"]


def test_clearing_loop_stopping_cancels_a_pending_stop(loop):
    # Sanic and its test client reset asyncio's attribute after a run that a
    # second stop() request may have outlived, then run the loop again.
    ran = []
    loop.call_soon(loop.stop)
    loop.run_forever()
    loop.stop()
    assert loop._stopping is True
    loop._stopping = False
    assert loop._stopping is False
    assert loop.run_until_complete(asyncio.sleep(0.01, "ran to the end")) == "ran to the end"

    # Set while running, it stops the loop as stop() does.
    def first():
        ran.append("first")
        loop._stopping = True
        loop.call_soon(ran.append, "next iteration")
    loop.call_soon(first)
    loop.run_forever()
    assert ran == ["first"]
    assert loop._stopping is False


# --------------------------------------------------------- nested running

# Python 3.13.0's asyncio has a bug: a nested run_forever() that correctly
# raises still runs its clean-up, which marks the outer, running loop as not
# running. The tests below therefore make that call last.

def test_nested_run_until_complete(loop):
    async def main():
        inner = loop.create_future()
        with pytest.raises(RuntimeError, match="^This event loop is already running$"):
            loop.run_until_complete(inner)
        coro = asyncio.sleep(0)
        try:
            with pytest.raises(RuntimeError, match="^This event loop is already running$"):
                loop.run_until_complete(coro)
        finally:
            coro.close()
        inner.cancel()
        assert loop.is_running()
        with pytest.raises(RuntimeError, match="^This event loop is already running$"):
            loop.run_forever()
        return "outer finished"
    assert loop.run_until_complete(main()) == "outer finished"
    assert not loop.is_running()


def test_run_other_loop_while_one_runs(loop, loop_factory):
    other = loop_factory()
    try:
        async def main():
            fut = other.create_future()
            with pytest.raises(RuntimeError,
                               match="^Cannot run the event loop while another loop is running$"):
                other.run_until_complete(fut)
            assert not other.is_running()
            assert asyncio.get_running_loop() is loop
            with pytest.raises(RuntimeError,
                               match="^Cannot run the event loop while another loop is running$"):
                other.run_forever()
            return True
        assert loop.run_until_complete(main())
        # Once the first loop has stopped, the other one runs fine.
        assert other.run_until_complete(asyncio.sleep(0, "other")) == "other"
    finally:
        other.close()


def test_running_loop_is_set_and_reset(loop):
    async def main():
        return asyncio.get_running_loop(), asyncio.get_event_loop()
    running, current = loop.run_until_complete(main())
    assert running is loop
    assert current is loop
    with pytest.raises(RuntimeError, match="no running event loop"):
        asyncio.get_running_loop()


# ---------------------------------------------------------------- closing

def test_is_running_and_is_closed(loop):
    assert not loop.is_running()
    assert not loop.is_closed()
    seen = []

    def probe():
        seen.append((loop.is_running(), loop.is_closed()))
    loop.call_soon(probe)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [(True, False)]
    assert not loop.is_running()
    assert loop._closed is False       # asyncio's attribute, read by test fixtures
    loop.close()
    assert loop.is_closed()
    assert loop._closed is True
    assert not loop.is_running()


def test_close_while_running(loop):
    async def main():
        with pytest.raises(RuntimeError, match="^Cannot close a running event loop$"):
            loop.close()
        return loop.is_closed()
    assert loop.run_until_complete(main()) is False
    assert not loop.is_closed()


def test_close_twice(loop):
    loop.close()
    loop.close()
    assert loop.is_closed()


def test_close_drops_pending_callbacks(loop):
    ran = []
    loop.call_soon(ran.append, 1)
    loop.call_later(0, ran.append, 2)
    loop.close()
    assert ran == []


CLOSED_CALLS = {
    "call_soon": lambda loop: loop.call_soon(lambda: None),
    "call_later": lambda loop: loop.call_later(1, lambda: None),
    "call_at": lambda loop: loop.call_at(loop.time() + 1, lambda: None),
    "run_forever": lambda loop: loop.run_forever(),
    "run_until_complete_future": lambda loop: loop.run_until_complete(loop.create_future()),
    "add_reader": lambda loop: loop.add_reader(0, lambda: None),
    "add_writer": lambda loop: loop.add_writer(1, lambda: None),
    "run_in_executor": lambda loop: loop.run_in_executor(None, int),
}


@pytest.mark.parametrize("method", sorted(CLOSED_CALLS))
def test_methods_after_close(loop, method):
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        CLOSED_CALLS[method](loop)


@pytest.mark.parametrize("method", ["create_task", "run_until_complete"])
def test_coroutine_methods_after_close(loop, method):
    loop.close()

    async def main():
        pass
    coro = main()
    try:
        with pytest.raises(RuntimeError, match="^Event loop is closed$"):
            getattr(loop, method)(coro)
    finally:
        coro.close()


def test_remove_after_close_returns_false(loop):
    loop.close()
    assert loop.remove_reader(0) is False
    assert loop.remove_writer(1) is False


def test_unclosed_loop_resource_warning(loop_factory):
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0))
    with pytest.warns(ResourceWarning, match="unclosed event loop"):
        del loop
        gc.collect()


def test_a_loop_logs_its_selector_and_in_debug_mode_its_close(loop_factory, impl, caplog):
    # asyncio's selector loop logs (at DEBUG) the selector it made; fastloop
    # names the selectors class of its poller's mechanism.
    import selectors
    mechanism = {"epoll": "EpollSelector", "kqueue": "KqueueSelector", "poll": "PollSelector"}
    if impl == "asyncio":
        selector = selectors.DefaultSelector.__name__
    else:
        selector = mechanism[impl.split("-", 1)[1]]
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop = loop_factory()
    loop.set_debug(True)
    loop.close()
    text = repr(loop)           # (the record formats its message when read)
    records = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "asyncio"]
    assert records == [("DEBUG", f"Using selector: {selector}"), ("DEBUG", f"Close {text}")]


def test_a_dropped_unclosed_loop_warns_when_the_gc_collects_it(loop_factory):
    # asyncio's loop refers to itself until closed: its last reference going
    # does not free it (nor warn); the cyclic collector does.
    import weakref
    loop = loop_factory()
    ref = weakref.ref(loop)
    gc.disable()
    try:
        with warnings.catch_warnings(record=True) as at_del:
            warnings.simplefilter("always")
            del loop
        with warnings.catch_warnings(record=True) as at_collect:
            warnings.simplefilter("always")
            gc.collect()
    finally:
        gc.enable()
    assert [str(w.message) for w in at_del] == []
    assert [str(w.message).split(" running=")[0].split(" <")[0] for w in at_collect
            if issubclass(w.category, ResourceWarning)] == ["unclosed event loop"]
    assert ref() is None


def test_a_closed_loop_is_freed_as_its_last_reference_goes(loop_factory):
    import weakref
    loop = loop_factory()
    loop.close()
    ref = weakref.ref(loop)
    gc.disable()
    try:
        del loop
        assert ref() is None
    finally:
        gc.enable()


def test_closed_loop_no_resource_warning(loop_factory):
    loop = loop_factory()
    loop.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


def _pending_with_cycle(loop, how, sock):
    """Leave something pending on `loop` that refers back to the loop."""
    var = contextvars.ContextVar("var")
    if how == "callback":
        loop.call_soon(loop.stop)
    elif how == "args":
        loop.call_soon(print, loop)
    elif how == "threadsafe-args":
        loop.call_soon_threadsafe(loop.call_soon, loop.stop)
    elif how == "timer-args":
        loop.call_later(3600, print, [loop])
    elif how == "reader-args":
        loop.add_reader(sock, print, loop)
    elif how == "context":
        token = var.set(loop)
        loop.call_soon(print)          # copies the current context
        var.reset(token)
    elif how == "sleeping-task":
        async def main():
            await asyncio.sleep(3600)
        loop.create_task(main())
        loop.run_until_complete(asyncio.sleep(0))


@pytest.mark.parametrize("how", ["callback", "args", "threadsafe-args", "timer-args",
                                 "reader-args", "context", "sleeping-task"])
def test_unclosed_loop_with_pending_cycles_is_collected(loop_factory, impl, how, caplog):
    # Pending callbacks that refer back to the loop make reference cycles that
    # only the cyclic GC can free; it must, and the loop then warns and closes
    # (releasing its fds: the fd leak check would catch them).
    import socket
    import weakref
    if impl == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("asyncio 3.10 may finalize its self-pipe sockets before the "
                    "loop in a GC cycle, then fails in BaseEventLoop.__del__")
    caplog.set_level(logging.CRITICAL, logger="asyncio")  # "Task was destroyed..."
    a, b = socket.socketpair()
    try:
        loop = loop_factory()
        _pending_with_cycle(loop, how, a)
        ref = weakref.ref(loop)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del loop
            gc.collect()
        assert ref() is None
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert any(m.startswith("unclosed event loop") for m in messages), messages
    finally:
        a.close()
        b.close()


class _Cyclic:
    """A callback in a reference cycle with itself and with its argument."""

    def __init__(self, name, log):
        self.name = name
        self.log = log
        self.me = self
        self.payload = [name]
        self.payload.append(self.payload)

    def __call__(self, *args):
        self.log.append((self.name, self.me is self, self.payload[1] is self.payload,
                         [arg[1] is arg for arg in args]))


def _cyclic_arg():
    arg = ["arg"]
    arg.append(arg)
    return arg


def test_callbacks_referenced_only_by_loop_survive_gc(loop):
    # Callbacks, arguments and contexts that sit in reference cycles and are
    # referenced only by the loop's queues must survive garbage collections.
    import socket
    var = contextvars.ContextVar("var")
    log = []
    a, b = socket.socketpair()
    try:
        ctx = contextvars.copy_context()
        ctx.run(var.set, _cyclic_arg())
        loop.call_soon(_Cyclic("soon", log), _cyclic_arg())
        loop.call_soon_threadsafe(_Cyclic("threadsafe", log), _cyclic_arg())
        loop.call_later(0.001, _Cyclic("later", log), _cyclic_arg())
        loop.call_at(loop.time() + 0.002, _Cyclic("at", log), _cyclic_arg(), _cyclic_arg())
        cancelled = loop.call_later(0.001, _Cyclic("cancelled", log))
        cancelled.cancel()
        del cancelled
        loop.call_soon(_Cyclic("context", log), context=ctx)
        del ctx

        def read_once(cb):
            a.recv(10)
            loop.remove_reader(a)
            cb()
        loop.add_reader(a, read_once, _Cyclic("reader", log))
        for _ in range(3):
            gc.collect()
        b.send(b"x")
        fut = loop.create_future()
        loop.call_later(0.05, fut.set_result, None)
        # Collect again while callbacks are queued and running.
        loop.call_soon(gc.collect)
        loop.call_later(0.0015, gc.collect)
        loop.run_until_complete(asyncio.wait_for(fut, WAIT))
        assert sorted(log) == sorted([
            ("soon", True, True, [True]),
            ("threadsafe", True, True, [True]),
            ("later", True, True, [True]),
            ("at", True, True, [True, True]),
            ("context", True, True, []),
            ("reader", True, True, []),
        ])
    finally:
        a.close()
        b.close()


def test_gc_inside_callbacks_keeps_queued_callbacks(loop):
    # Each callback runs a full collection while the others are still queued.
    log = []
    n = 8

    class Step(_Cyclic):
        def __call__(self, *args):
            gc.collect()
            super().__call__(*args)

    for i in range(n):
        loop.call_soon(Step(f"step{i}", log), _cyclic_arg())
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert log == [(f"step{i}", True, True, [True]) for i in range(n)]


def test_context_of_handle_survives_gc(loop):
    # A context copied for call_soon stays intact (with its values) while
    # queued and after the callback has run, while the handle is held.
    var = contextvars.ContextVar("var")
    value = _cyclic_arg()
    var.set(value)
    seen = []
    handle = loop.call_soon(lambda: seen.append(var.get()))
    del value
    var.set("replaced")
    gc.collect()
    loop.call_soon(loop.stop)
    loop.run_forever()
    gc.collect()
    assert len(seen) == 1 and seen[0][1] is seen[0]
    assert handle._context[var] is seen[0]


# ------------------------------------------------------- async generators

def test_shutdown_asyncgens_finalizes_unfinished_generator(loop):
    log = []

    async def agen():
        try:
            log.append("start")
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)       # finalization may await
            log.append("finally")

    gens = []

    async def main():
        g = agen()
        gens.append(g)                   # keep it alive, unfinished
        assert await g.__anext__() == 1
    loop.run_until_complete(main())
    assert log == ["start"]
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert log == ["start", "finally"]
    assert gens[0].ag_frame is None     # the generator is closed


def test_shutdown_asyncgens_with_none_started(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())


def test_shutdown_asyncgens_reports_errors(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("in finally")

    gens = []

    async def main():
        g = agen()
        gens.append(g)
        await g.__anext__()
    loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert contexts[0]["asyncgen"] is gens[0]
    assert "an error occurred during closing of asynchronous generator" \
        in contexts[0]["message"]


def test_asyncgen_garbage_collected_while_running_is_finalized(loop):
    log = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            log.append("finally")

    async def main():
        g = agen()
        await g.__anext__()
        del g                     # the finalizer hook schedules aclose()
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
        return list(log)
    assert loop.run_until_complete(main()) == ["finally"]


def test_asyncgen_firstiter_after_shutdown_warns(loop):
    loop.run_until_complete(loop.shutdown_asyncgens())

    async def agen():
        yield 1

    async def main():
        return [x async for x in agen()]

    with pytest.warns(ResourceWarning, match="was scheduled after loop.shutdown_asyncgens"):
        assert loop.run_until_complete(main()) == [1]


def test_asyncgen_hooks_installed_and_restored(loop):
    before = sys.get_asyncgen_hooks()

    async def main():
        return sys.get_asyncgen_hooks()
    inside = loop.run_until_complete(main())
    assert inside.firstiter is not None and inside.finalizer is not None
    assert inside.firstiter != before.firstiter
    assert sys.get_asyncgen_hooks() == before


# ---------------------------------------------------------------- tasks

def test_create_task_name(loop):
    async def main():
        return asyncio.current_task().get_name()
    task = loop.create_task(main(), name="my-task")
    assert task.get_name() == "my-task"
    assert loop.run_until_complete(task) == "my-task"
    unnamed = loop.create_task(main())
    assert re.fullmatch(r"Task-\d+", loop.run_until_complete(unnamed))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="create_task(context=) is 3.11+")
def test_create_task_context(loop):
    var = contextvars.ContextVar("var", default="default")
    ctx = contextvars.copy_context()
    ctx.run(var.set, "in ctx")

    async def main():
        seen = var.get()
        var.set("set by task")
        await asyncio.sleep(0)
        return seen

    task = loop.create_task(main(), context=ctx)
    assert loop.run_until_complete(task) == "in ctx"
    # The task ran in ctx itself, not in a copy of it.
    assert ctx[var] == "set by task"
    assert var.get() == "default"
    # Without context=, the task gets a copy of the current context.
    var.set("current")
    task = loop.create_task(main())
    assert loop.run_until_complete(task) == "current"
    assert var.get() == "current"


def test_task_factory(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, coro, kwargs))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        return "made by factory"
    coro = main()
    task = loop.create_task(coro, name="factory-task")
    assert task.get_name() == "factory-task"
    assert loop.run_until_complete(task) == "made by factory"
    assert len(calls) == 1
    assert calls[0][0] is loop and calls[0][1] is coro
    assert calls[0][2].get("context") is None

    # asyncio.ensure_future goes through the factory too.
    loop.run_until_complete(asyncio.ensure_future(main(), loop=loop))
    assert len(calls) == 2

    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    loop.run_until_complete(loop.create_task(main()))
    assert len(calls) == 2


@pytest.mark.skipif(sys.version_info < (3, 11), reason="create_task(context=) is 3.11+")
def test_task_factory_receives_context(loop):
    var = contextvars.ContextVar("var", default="default")
    received = []

    def factory(lp, coro, *, context=None, **kwargs):
        received.append(context)
        return asyncio.Task(coro, loop=lp, context=context, **kwargs)

    loop.set_task_factory(factory)
    ctx = contextvars.copy_context()
    ctx.run(var.set, "factory ctx")

    async def main():
        return var.get()
    assert loop.run_until_complete(loop.create_task(main(), context=ctx)) == "factory ctx"
    assert received == [ctx]


def _create_task_outcome(lp, with_factory, **kwargs):
    """What lp.create_task(coro, **kwargs) does: the keyword arguments a task
    factory saw (or "task" without one), else the exception's type."""
    seen = []

    def factory(lp, coro, **kw):
        seen.append(sorted(kw))
        return asyncio.Task(coro, loop=lp)

    if with_factory:
        lp.set_task_factory(factory)

    async def main():
        return None
    coro = main()
    try:
        task = lp.create_task(coro, **kwargs)
    except TypeError:
        coro.close()
        return TypeError
    lp.run_until_complete(task)
    return seen[0] if with_factory else "task"


@pytest.mark.parametrize("with_factory", [False, True])
@pytest.mark.parametrize("kwargs", [{}, {"name": "n"}, {"name": None}, {"context": None},
                                    {"extra": 1}, {"extra": 1, "name": "n"},
                                    {"eager_start": False}])
def test_create_task_extra_keyword_arguments_as_asyncio(loop, with_factory, kwargs):
    # 3.13.3+ passes keyword arguments it does not know on to the task
    # factory (or Task, which refuses them); earlier versions refuse them.
    # 3.14 passes on exactly what it was given (name=None included).
    reference = asyncio.new_event_loop()
    try:
        expected = _create_task_outcome(reference, with_factory, **kwargs)
    finally:
        reference.close()
    assert _create_task_outcome(loop, with_factory, **kwargs) == expected


def test_set_task_factory_rejects_non_callable(loop):
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(42)
    assert loop.get_task_factory() is None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is 3.12+")
def test_eager_task_factory(loop):
    loop.set_task_factory(asyncio.eager_task_factory)
    log = []

    async def immediate():
        log.append("immediate ran")
        return "done eagerly"

    async def suspends():
        log.append("suspends started")
        await asyncio.sleep(0)
        log.append("suspends resumed")
        return "done later"

    async def main():
        t1 = loop.create_task(immediate())
        # The coroutine ran to completion inside create_task().
        assert log == ["immediate ran"]
        assert t1.done() and t1.result() == "done eagerly"
        t2 = loop.create_task(suspends())
        assert log == ["immediate ran", "suspends started"]
        assert not t2.done()
        assert await t2 == "done later"
        return log
    assert loop.run_until_complete(main()) == [
        "immediate ran", "suspends started", "suspends resumed"]


# -------------------------------------------------------- exception handlers

def test_exception_handler_get_set(loop):
    assert loop.get_exception_handler() is None

    def handler(lp, ctx):
        pass
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    with pytest.raises(TypeError, match="A callable object or None is expected"):
        loop.set_exception_handler("not callable")
    assert loop.get_exception_handler() is handler
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_call_exception_handler_custom(loop):
    calls = []
    loop.set_exception_handler(lambda lp, ctx: calls.append((lp, ctx)))
    context = {"message": "custom message", "extra": 1}
    loop.call_exception_handler(context)
    assert calls == [(loop, context)]


def test_call_exception_handler_default_logs(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    exc = ZeroDivisionError("the exception")
    loop.call_exception_handler({"message": "Something went wrong", "exception": exc})
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].getMessage().startswith("Something went wrong")
    assert records[0].exc_info[1] is exc


def test_call_exception_handler_without_message(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.call_exception_handler({"extra": "value"})
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(messages) == 1
    assert messages[0].startswith("Unhandled exception in event loop")
    assert "extra: 'value'" in messages[0]


def test_default_exception_handler_logs_callback_exception(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")

    def failing_callback():
        raise ZeroDivisionError("in callback")
    loop.call_soon(failing_callback)
    loop.call_soon(loop.stop)
    loop.run_forever()
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert message.startswith("Exception in callback ")
    assert "failing_callback" in message
    assert isinstance(records[0].exc_info[1], ZeroDivisionError)


def test_callback_exception_goes_to_handler_and_loop_keeps_running(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append((lp, ctx)))
    ran = []

    def failing(x):
        raise ValueError(f"bad {x}")
    handle = loop.call_soon(failing, 1)
    loop.call_soon(ran.append, "after")
    loop.call_later(0.001, failing, 2)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert ran == ["after"]
    assert len(contexts) == 2
    lp, ctx = contexts[0]
    assert lp is loop
    assert {"message", "exception", "handle"} <= set(ctx)
    assert ctx["handle"] is handle
    assert isinstance(ctx["exception"], ValueError)
    assert str(ctx["exception"]) == "bad 1"
    assert ctx["message"].startswith("Exception in callback ")
    assert "failing" in ctx["message"]
    assert str(contexts[1][1]["exception"]) == "bad 2"
    assert not loop.is_running()


def test_task_exception_goes_to_handler_when_never_retrieved(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    async def fail():
        raise KeyError("lost")

    async def main():
        loop.create_task(fail())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
    loop.run_until_complete(main())
    gc.collect()
    assert len(contexts) == 1
    assert contexts[0]["message"] == "Task exception was never retrieved"
    assert isinstance(contexts[0]["exception"], KeyError)


def test_error_in_exception_handler_is_logged(loop, caplog):
    caplog.set_level(logging.ERROR, logger="asyncio")

    def bad_handler(lp, ctx):
        raise RuntimeError("handler is broken")
    loop.set_exception_handler(bad_handler)
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    loop.run_forever()
    records = [r for r in caplog.records if r.name == "asyncio"]
    assert len(records) == 1
    assert records[0].getMessage().startswith("Unhandled error in exception handler")
    assert isinstance(records[0].exc_info[1], RuntimeError)


def _format_callback_source(callback, args):
    # asyncio's formatter grew a keyword-only `debug` argument in 3.12.x/3.13.
    import inspect
    from asyncio import format_helpers
    func = format_helpers._format_callback_source
    if "debug" in inspect.signature(func).parameters:
        return func(callback, args, debug=False)
    return func(callback, args)


def test_callback_exception_message_format(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def failing(a, b):
        raise ValueError()
    loop.call_soon(failing, 1, "two")
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert [ctx["message"] for ctx in contexts] == [
        "Exception in callback " + _format_callback_source(failing, (1, "two"))]
    assert "failing(" in contexts[0]["message"]


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="the handler runs in the handle's context from 3.12 on")
def test_exception_handler_runs_in_handle_context(loop):
    var = contextvars.ContextVar("var", default="default")
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(var.get()))
    ctx = contextvars.copy_context()
    ctx.run(var.set, "handle ctx")
    loop.call_soon(lambda: 1 / 0, context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["handle ctx"]


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_exception_handler_propagates(loop, exc_type):
    def handler(lp, ctx):
        raise exc_type("from handler")
    loop.set_exception_handler(handler)
    ran = []
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(ran.append, "after")
    with pytest.raises(exc_type, match="from handler"):
        loop.run_forever()
    assert ran == []
    loop.set_exception_handler(None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["after"]


# ------------------------------------------------- KeyboardInterrupt, SystemExit

@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_callback_leaves_run_forever(loop, exc_type):
    ran = []
    hooks = sys.get_asyncgen_hooks()

    def interrupt():
        raise exc_type("from callback")
    loop.call_soon(ran.append, "before")
    loop.call_soon(interrupt)
    loop.call_soon(ran.append, "after")
    with pytest.raises(exc_type, match="from callback"):
        loop.run_forever()
    assert ran == ["before"]
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    assert sys.get_asyncgen_hooks() == hooks
    # The loop runs again, starting with what was left over.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert ran == ["before", "after"]
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_callback_leaves_run_until_complete(loop, exc_type):
    fut = loop.create_future()

    def interrupt():
        raise exc_type()
    loop.call_soon(interrupt)
    with pytest.raises(exc_type):
        loop.run_until_complete(fut)
    assert not fut.done()
    assert not loop.is_running()
    loop.call_soon(fut.set_result, "completed later")
    assert loop.run_until_complete(fut) == "completed later"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_coroutine(loop, exc_type):
    async def main():
        await asyncio.sleep(0)
        raise exc_type("from coroutine")
    task = loop.create_task(main())
    with pytest.raises(exc_type, match="from coroutine"):
        loop.run_until_complete(task)
    assert task.done()
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_timer_callback(loop, exc_type):
    ran = []

    def interrupt():
        raise exc_type()
    loop.call_later(0.001, interrupt)
    loop.call_later(0.002, ran.append, "later timer")
    with pytest.raises(exc_type):
        loop.run_forever()
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert ran == ["later timer"]


@pytest.mark.timeout(20)
@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs signals")
def test_sigint_interrupts_loop_blocked_in_poll(loop):
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        pytest.skip("needs the default SIGINT handler in the main thread")

    def send():
        time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=send)
    with pytest.raises(KeyboardInterrupt):
        thread.start()
        loop.run_forever()       # nothing scheduled: blocks until the signal
    thread.join(WAIT)
    assert not loop.is_running()
    assert loop.run_until_complete(asyncio.sleep(0.001, "again")) == "again"


# ------------------------------------------------------------ debug mode

def test_debug_get_set(loop):
    assert loop.get_debug() == asyncio.coroutines._is_debug_mode()
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_debug_slow_callback_warning(loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def sleepy():
        time.sleep(0.05)

    def quick():
        pass
    loop.call_soon(sleepy)
    loop.call_soon(quick)
    loop.call_soon(loop.stop)
    loop.run_forever()
    # Only the slow callback is reported (a heavily loaded machine could make
    # another one slow too: those are ignored).
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING
                and "<locals>.sleepy(" in r.getMessage()]
    assert len(messages) == 1, messages
    assert re.fullmatch(r"Executing <Handle .*<locals>\.sleepy\(\).*> took \d+\.\d{3} seconds",
                        messages[0], re.S), messages[0]
    seconds = float(messages[0].rsplit(" took ", 1)[1].split()[0])
    assert seconds >= 0.01


@pytest.mark.parametrize("kind", ["call_later", "task"])
def test_debug_slow_timer_and_task_warning(loop, caplog, kind):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow_timer():
        time.sleep(0.05)

    async def slow_coro():
        time.sleep(0.05)

    if kind == "call_later":
        loop.call_later(0.001, slow_timer)
        loop.call_later(0.002, loop.stop)
        loop.run_forever()
        pattern = r"Executing <TimerHandle when=\S+ \S*slow_timer\(\) .*> took \d+\.\d{3} seconds"
    else:
        loop.run_until_complete(slow_coro())
        pattern = r"Executing <Task .*slow_coro.*> took \d+\.\d{3} seconds"
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING
                and ("<locals>.slow_timer(" in r.getMessage()
                     or "<locals>.slow_coro(" in r.getMessage())]
    assert len(messages) == 1, messages
    assert re.fullmatch(pattern, messages[0], re.S), messages[0]


def test_debug_slow_callback_timed_with_the_loops_clock(loop, caplog):
    """asyncio times callbacks with loop.time(): a clock patched on the loop
    (as test suites advance it) is what the warning reports, though no real
    time passed."""
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.set_debug(True)
    clock = [loop.time()]
    loop.time = lambda: clock[0]

    def jump():
        clock[0] += 1000

    loop.call_soon(jump)
    loop.call_soon(loop.stop)
    try:
        loop.run_forever()
    finally:
        del loop.time
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING]
    assert len(messages) == 1, messages
    assert re.fullmatch(r"Executing <Handle .*<locals>\.jump\(\).*> took 1000\.000 seconds",
                        messages[0], re.S), messages[0]


def test_debug_default_handler_shows_handle_traceback(loop, caplog):
    # Called from inside a callback, the default handler points at where
    # that callback was scheduled.
    caplog.set_level(logging.ERROR, logger="asyncio")
    loop.set_debug(True)
    contexts = []

    def report():
        context = {"message": "reported from a callback"}
        contexts.append(context)
        loop.call_exception_handler(context)
    loop.call_soon(report)
    loop.call_soon(loop.stop)
    loop.run_forever()
    messages = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(messages) == 1
    assert messages[0].startswith("reported from a callback")
    assert "Handle created at (most recent call last):" in messages[0]
    assert "test_debug_default_handler_shows_handle_traceback" in messages[0]
    assert _called_here(contexts[0]["handle_traceback"],
                        "test_debug_default_handler_shows_handle_traceback")


def test_no_slow_callback_warning_without_debug(loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    loop.slow_callback_duration = 0.01
    loop.call_soon(time.sleep, 0.05)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert [r for r in caplog.records if r.name == "asyncio"] == []


def _called_here(tb, func_name):
    frame = tb[-1]
    return os.path.abspath(frame.filename) == os.path.abspath(__file__) and frame.name == func_name


def test_debug_handles_have_source_traceback(loop):
    loop.set_debug(True)
    handles = {
        "call_soon": loop.call_soon(lambda: None),
        "call_later": loop.call_later(10, lambda: None),
        "call_at": loop.call_at(loop.time() + 10, lambda: None),
        "call_soon_threadsafe": loop.call_soon_threadsafe(lambda: None),
    }
    for method, handle in handles.items():
        tb = handle._source_traceback
        assert tb, method
        # The last entry is the line that scheduled the callback, here.
        assert _called_here(tb, "test_debug_handles_have_source_traceback"), (method, tb[-1])
        assert "created at" in repr(handle)
        handle.cancel()


def test_handles_have_no_source_traceback_without_debug(loop):
    loop.set_debug(False)
    assert loop.call_soon(lambda: None)._source_traceback is None
    assert loop.call_later(10, lambda: None)._source_traceback is None


def test_debug_exception_context_has_source_traceback(loop):
    loop.set_debug(True)
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))

    def failing():
        raise ValueError("debug")
    handle = loop.call_soon(failing)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    assert contexts[0]["handle"] is handle
    assert contexts[0]["source_traceback"] is handle._source_traceback
    assert _called_here(contexts[0]["source_traceback"],
                        "test_debug_exception_context_has_source_traceback")


def test_debug_coroutine_origin_tracking(loop):
    before = sys.get_coroutine_origin_tracking_depth()
    loop.set_debug(True)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()
    inside = loop.run_until_complete(main())
    assert inside > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_no_coroutine_origin_tracking_without_debug(loop):
    before = sys.get_coroutine_origin_tracking_depth()
    loop.set_debug(False)

    async def main():
        return sys.get_coroutine_origin_tracking_depth()
    assert loop.run_until_complete(main()) == before


def test_set_debug_while_running_toggles_origin_tracking(loop):
    before = sys.get_coroutine_origin_tracking_depth()
    loop.set_debug(False)

    async def main():
        depths = [sys.get_coroutine_origin_tracking_depth()]
        loop.set_debug(True)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        depths.append(sys.get_coroutine_origin_tracking_depth())
        loop.set_debug(False)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        depths.append(sys.get_coroutine_origin_tracking_depth())
        return depths
    depths = loop.run_until_complete(main())
    assert depths[0] == before
    assert depths[1] > 0
    assert depths[2] == before
    assert sys.get_coroutine_origin_tracking_depth() == before


def test_debug_close_logs(loop, caplog):
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop.set_debug(True)
    loop.close()
    assert any(r.getMessage().startswith("Close <") for r in caplog.records
               if r.name == "asyncio")


def _call_graph_of_a_task_group(lp):
    """asyncio.print_call_graph() of a task waiting in a TaskGroup, and who
    awaits its child (capture_call_graph()), with task ids blanked."""
    import io

    async def leaf(ev):
        await ev.wait()

    async def mid(ev):
        async with asyncio.TaskGroup() as tg:
            tg.create_task(leaf(ev), name="leaf")

    async def main():
        ev = asyncio.Event()
        task = asyncio.create_task(mid(ev), name="mid")
        while len(asyncio.all_tasks()) < 3:
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        out = io.StringIO()
        asyncio.print_call_graph(task, file=out)
        child = next(t for t in asyncio.all_tasks() if t.get_name() == "leaf")
        awaited_by = [g.future.get_name() for g in asyncio.capture_call_graph(child).awaited_by]
        ev.set()
        await task
        return re.sub(r"id=0x[0-9a-f]+", "id=?", out.getvalue()), awaited_by

    return lp.run_until_complete(asyncio.wait_for(main(), 10))


@pytest.mark.skipif(sys.version_info < (3, 14), reason="call graph introspection is new in 3.14")
def test_call_graph_introspection_as_asyncio(loop):
    reference = asyncio.new_event_loop()
    try:
        expected = _call_graph_of_a_task_group(reference)
    finally:
        reference.close()
    text, awaited_by = _call_graph_of_a_task_group(loop)
    assert "Task(name='mid'" in text and "<locals>.mid()" in text
    assert awaited_by == ["mid"]
    assert (text, awaited_by) == expected
