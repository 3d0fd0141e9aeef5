"""fastloop.run(): asyncio.run() on a fastloop loop.

Python 3.11+ has asyncio.Runner with a loop factory, which is used as is.
Python 3.10 lacks it, so a small equivalent lives here with the same
life cycle: Ctrl-C cancels the main task first and raises KeyboardInterrupt
once it has finished; remaining tasks, async generators and the default
executor are shut down before the loop closes.
"""
import asyncio
import functools
import signal
import sys
import threading
from asyncio import coroutines, events

__all__ = ["run"]


def _new_loop():
    from fastloop import new_event_loop
    return new_event_loop()


def run(main, *, debug=None):
    """Run coroutine `main` on a new fastloop loop and return its result,
    with the semantics of asyncio.run()."""
    if events._get_running_loop() is not None:
        raise RuntimeError(
            "asyncio.run() cannot be called from a running event loop")
    if sys.version_info >= (3, 11):
        with asyncio.Runner(debug=debug, loop_factory=_new_loop) as runner:
            return runner.run(main)
    return _run_py310(main, debug)


def _run_py310(main, debug):
    if not coroutines.iscoroutine(main):
        raise ValueError(f"a coroutine was expected, got {main!r}")
    loop = _new_loop()
    interrupts = 0

    def on_sigint(signum, frame, task):
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1 and not task.done():
            task.cancel()
            loop.call_soon_threadsafe(lambda: None)
            return
        raise KeyboardInterrupt()

    try:
        if debug is not None:
            loop.set_debug(debug)
        task = loop.create_task(main)
        handler = None
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
            handler = functools.partial(on_sigint, task=task)
            signal.signal(signal.SIGINT, handler)
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if interrupts > 0:
                raise KeyboardInterrupt()
            raise
        finally:
            if handler is not None and signal.getsignal(signal.SIGINT) is handler:
                signal.signal(signal.SIGINT, signal.default_int_handler)
    finally:
        try:
            _cancel_all_tasks(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _cancel_all_tasks(loop):
    pending = asyncio.all_tasks(loop)
    if not pending:
        return
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    for task in pending:
        if task.cancelled():
            continue
        if task.exception() is not None:
            loop.call_exception_handler({
                'message': 'unhandled exception during fastloop.run() shutdown',
                'exception': task.exception(),
                'task': task,
            })
