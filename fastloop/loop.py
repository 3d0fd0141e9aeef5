"""The Python half of fastloop's event loop.

Loop completes asyncio.AbstractEventLoop on top of the Cython LoopCore. Where
the stdlib's BaseEventLoop has pure orchestration code that only needs the
attributes LoopCore provides (task creation, exception handlers, executors,
async generator hooks), Loop uses that very code rather than a copy of it:
behaviour then matches the running Python version exactly.
"""
import asyncio
import sys
import threading
import warnings
import weakref
from asyncio import base_events as _base
from asyncio.log import logger

from fastloop._core import LoopCore

__all__ = ["Loop"]


def _borrow(name):
    return getattr(_base.BaseEventLoop, name)


class Loop(LoopCore, asyncio.AbstractEventLoop):
    """A fast asyncio event loop. Use it wherever asyncio takes a loop."""

    def __init__(self, *, poller=None):
        """`poller` picks the readiness backend ("epoll" or "poll"); by default
        the FASTLOOP_POLLER environment variable, else the best available."""
        super().__init__(poller=poller)
        self._exception_handler = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._coroutine_origin_tracking_enabled = False
        self._coroutine_origin_tracking_saved_depth = None

    def __repr__(self):
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()}>")

    def __del__(self, _warn=warnings.warn):
        if not self.is_closed():
            _warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    def close(self):
        """Close the loop: drop pending callbacks, release its OS resources and
        shut the default executor down without waiting for it."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        if self.get_debug():
            logger.debug("Close %r", self)
        self._close_core()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # Running, tasks and error handling: the stdlib's own code.
    run_until_complete = _borrow("run_until_complete")
    if (3, 11) <= sys.version_info < (3, 14):
        # Same signature and semantics as the stdlib's on these versions.
        create_task = LoopCore._create_task
    else:
        create_task = _borrow("create_task")
    set_task_factory = _borrow("set_task_factory")
    get_task_factory = _borrow("get_task_factory")
    get_exception_handler = _borrow("get_exception_handler")
    set_exception_handler = _borrow("set_exception_handler")
    default_exception_handler = _borrow("default_exception_handler")
    call_exception_handler = _borrow("call_exception_handler")
    _check_callback = _borrow("_check_callback")
    _set_coroutine_origin_tracking = _borrow("_set_coroutine_origin_tracking")

    # Async generators and executors.
    _asyncgen_firstiter_hook = _borrow("_asyncgen_firstiter_hook")
    _asyncgen_finalizer_hook = _borrow("_asyncgen_finalizer_hook")
    shutdown_asyncgens = _borrow("shutdown_asyncgens")
    run_in_executor = _borrow("run_in_executor")
    set_default_executor = _borrow("set_default_executor")

    def _check_default_executor(self):
        # Python 3.10's run_in_executor asks for this.
        if self._executor_shutdown_called:
            raise RuntimeError('Executor shutdown has been called')

    async def shutdown_default_executor(self, timeout=None):
        """Wait for the default executor's threads to finish, at most `timeout`
        seconds (None: no limit), as Python 3.12's asyncio does; available on
        every supported version."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        try:
            if timeout is None:
                await future
            else:
                await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            warnings.warn("The executor did not finishing joining "
                          f"its threads within {timeout} seconds.",
                          RuntimeWarning, stacklevel=2)
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future):
        try:
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(_set_result_unless_cancelled, future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)


def _set_result_unless_cancelled(future, result):
    if not future.cancelled():
        future.set_result(result)
