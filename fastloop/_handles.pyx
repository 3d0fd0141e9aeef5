"""Callback handles: what call_soon/call_later return and what the loop runs.

Handle and TimerHandle behave like asyncio.Handle and asyncio.TimerHandle
(cancel, cancelled, when, get_context, repr, ordering of timers) and expose the
private attributes libraries introspect (_callback, _args, _cancelled, _when,
_scheduled, _source_traceback). The loop creates them through new_handle() and
new_timer(), which skip argument parsing and come from a free list.
"""
cimport cython
from cpython.object cimport PyObject
from cpython.pythread cimport PyThread_get_thread_ident

from fastloop._originals cimport stand_in_for

import _thread
import inspect
import sys
from asyncio import events as _events, format_helpers

# From 3.14 asyncio's call_soon_threadsafe() returns a _ThreadSafeHandle,
# whose cancel() waits for a running callback (ThreadSafeHandle).
cdef object _AsyncioThreadSafeHandle = getattr(_events, "_ThreadSafeHandle", None)
cdef bint _THREADSAFE_HANDLES = _AsyncioThreadSafeHandle is not None

cdef extern from "Python.h":
    ctypedef struct PyCodeObject:
        int co_flags
    int CO_COROUTINE
    bint PyFunction_Check(object)
    PyObject* PyFunction_GET_CODE(object)
    bint PyMethod_Check(object)
    PyObject* PyMethod_GET_FUNCTION(object)
    bint PyCoro_CheckExact(object)
    object PyContext_CopyCurrent()
    Py_ssize_t Py_REFCNT(PyObject*)
    int PyObject_GC_IsTracked(PyObject*)
    ctypedef int (*traverseproc)(PyObject*, visitproc, void*) noexcept
    ctypedef struct TypeSlots "PyTypeObject":
        traverseproc tp_traverse
    TypeSlots* Py_TYPE(PyObject*)
    int PyContext_Enter(object) except -1
    int PyContext_Exit(object) except -1
    object PyContext_New()
    object PyContext_Copy(object)
    bint PyContext_CheckExact(object)


cdef extern from "_compat.h":
    PyObject* fl_current_context()
    PyObject* fl_context_vars(PyObject* ctx)
    int fl_context_entered(PyObject* ctx)
    void fl_context_set_vars(PyObject* ctx, PyObject* vars)


# asyncio's callback formatter grew a keyword-only `debug` argument (3.12.x/3.13).
cdef object _format_callback_source = format_helpers._format_callback_source
cdef bint _FORMAT_TAKES_DEBUG = (
    "debug" in inspect.signature(_format_callback_source).parameters)
cdef object _extract_stack = format_helpers.extract_stack
cdef object _getframe = sys._getframe


cdef inline bint _loop_debug(object loop):
    if isinstance(loop, LoopBase):
        return (<LoopBase>loop)._debug
    return loop.get_debug()


cdef str _format_callback(object callback, object args, bint debug):
    if _FORMAT_TAKES_DEBUG:
        return _format_callback_source(callback, args, debug=debug)
    return _format_callback_source(callback, args)


cdef inline bint _is_coroutine_function(object callback):
    # The cheap part of asyncio.iscoroutinefunction(): plain `async def`
    # functions and methods. Debug mode runs asyncio's complete check.
    cdef PyObject* func = <PyObject*>callback
    if PyMethod_Check(callback):
        func = PyMethod_GET_FUNCTION(callback)
    if PyFunction_Check(<object>func):
        return ((<PyCodeObject*>PyFunction_GET_CODE(<object>func)).co_flags
                & CO_COROUTINE) != 0
    return False


cdef int check_callback(object callback, str method) except -1:
    """Reject what asyncio's debug-mode _check_callback rejects, cheaply.

    asyncio checks only in debug mode and otherwise fails later, inside the
    loop; failing at the call site costs two type checks and points at the bug.
    """
    if PyCoro_CheckExact(callback) or _is_coroutine_function(callback):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(f"a callable object was expected by {method}(), "
                        f"got {callback!r}")
    return 0


cdef class LoopBase:
    pass


cdef class WriteSettler:
    cdef int settle_writes(self) except -1:
        return 0


# A burst of call_soon_threadsafe() queues thousands of handles at once; a
# deep free list (at most ~0.5 MB kept) spares the allocator and the GC's
# allocation count that churn.
@cython.freelist(4096)
cdef class Handle:
    """Object returned by callback registration methods."""

    def __init__(self, callback, args, loop, context=None):
        if context is None:
            context = PyContext_CopyCurrent()
        self._callback = callback
        self._args = tuple(args) if args is not None else None
        self._loop = loop
        self._context = context
        if _loop_debug(loop):
            self._source_traceback = _extract_stack(_getframe(1))

    cdef int run(self) except -1:
        cdef object callback = self._callback
        cdef tuple args = self._args
        cdef object context
        cdef object vars_before = None
        cdef bint entered = False
        if self.shared_context:
            if (fl_context_entered(<PyObject*>self._context)
                    or fl_context_vars(<PyObject*>self._context) != <PyObject*>self.context_vars):
                # Run from inside a callback that shares the context (or the
                # shared copy was changed through handle._context).
                self._unshare_context()
            else:
                vars_before = self.context_vars
        context = self._context
        try:
            PyContext_Enter(context)
            entered = True
            if args is None or len(args) == 0:
                callback()
            elif len(args) == 1:
                callback(args[0])
            else:
                callback(*args)
        except BaseException as exc:
            if entered:
                PyContext_Exit(context)
            if vars_before is not None:
                self._keep_context_changes(vars_before)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._report(exc)
            return 0
        PyContext_Exit(context)
        if vars_before is not None and fl_context_vars(<PyObject*>context) != <PyObject*>vars_before:
            self._keep_context_changes(vars_before)
        return 0

    cdef _keep_context_changes(self, object vars_before):
        # The callback changed variables in the context it shares. asyncio
        # would have run it in a copy of its own: give it one now, holding its
        # changes, and restore the shared context for the others.
        cdef object shared = self._context
        cdef object own
        if fl_context_vars(<PyObject*>shared) == <PyObject*>vars_before:
            return
        own = context_holding(<object>fl_context_vars(<PyObject*>shared))
        fl_context_set_vars(<PyObject*>shared, <PyObject*>vars_before)
        self._context = own
        self.shared_context = False
        self.context_vars = None

    cdef _unshare_context(self):
        # A context of its own, with the variables the shared one had when
        # this handle was scheduled.
        self._context = context_holding(self.context_vars)
        self.shared_context = False
        self.context_vars = None

    cdef _report(self, exc):
        cb = _format_callback(self._callback, self._args, _loop_debug(self._loop))
        context = {
            'message': f'Exception in callback {cb}',
            'exception': exc,
            'handle': self,
        }
        if self._source_traceback:
            context['source_traceback'] = self._source_traceback
        self._loop.call_exception_handler(context)

    def _run(self):
        self.run()

    def cancel(self):
        self.cancel_now()

    cdef int cancel_now(self) except -1:
        if not self._cancelled:
            self._cancelled = True
            if _loop_debug(self._loop):
                # Keep the callback's description for "Executing ... took"
                # warnings after the references below are dropped.
                self._repr = repr(self)
            self._callback = None
            self._args = None
        return 0

    def cancelled(self):
        return self._cancelled

    def get_context(self):
        if self.shared_context:
            # Whoever gets the context may change it: it must be this
            # handle's alone, as in asyncio.
            self._unshare_context()
        return self._context

    def _repr_info(self):
        info = [type(self).__name__]
        if self._cancelled:
            info.append('cancelled')
        if self._callback is not None:
            info.append(_format_callback(self._callback, self._args,
                                         _loop_debug(self._loop)))
        if self._source_traceback:
            frame = self._source_traceback[len(self._source_traceback) - 1]
            info.append(f'created at {frame[0]}:{frame[1]}')
        return info

    def __repr__(self):
        if self._repr is not None:
            return self._repr
        return '<{}>'.format(' '.join(self._repr_info()))


cdef class ThreadSafeHandle(Handle):
    """call_soon_threadsafe()'s handle where asyncio has a _ThreadSafeHandle
    (3.14 on), behaving as that does: cancel() or cancelled() from another thread
    while the callback runs waits until it has returned. (A cancel() before
    it starts stops it, as for any handle: the loop checks and calls with
    the GIL held throughout. asyncio guards its handle with an RLock; here
    a thread that must wait parks on a lock of its own, and the callback's
    own thread never waits.)"""

    def cancel(self):
        self.wait_for_callback()
        self.cancel_now()

    def cancelled(self):
        self.wait_for_callback()
        return self._cancelled

    @property
    def _lock(self):
        # (asyncio's handle keeps its lock here; this one has none to show.
        # Defined so that _ThreadSafeHandle's slot is never read from it.)
        return None

    cdef int run(self) except -1:
        cdef int r
        self.runner = PyThread_get_thread_ident()
        try:
            r = Handle.run(self)
        finally:
            self.runner = 0
            waiters, self.waiters = self.waiters, None
            if waiters is not None:
                for lock in waiters:
                    lock.release()
        return r

    cdef int wait_for_callback(self) except -1:
        if self.runner == 0 or self.runner == PyThread_get_thread_ident():
            return 0
        lock = _thread.allocate_lock()
        lock.acquire()
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(lock)
        lock.acquire()          # released by run(); waits without the GIL
        return 0


cdef class TimerHandle(Handle):
    """Object returned by timed callback registration methods."""

    def __init__(self, when, callback, args, loop, context=None):
        if when is None:
            raise TypeError("when cannot be None")
        super().__init__(callback, args, loop, context)
        if self._source_traceback:
            self._source_traceback.pop()
        self.deadline = when
        self.deadline_is_int = given_as_int(when, self.deadline)

    @property
    def _when(self):
        return self.deadline_as_given()

    def when(self):
        """Return the scheduled time in the loop's time() scale."""
        return self.deadline_as_given()

    cdef object deadline_as_given(self):
        if self.deadline_is_int:
            return int(self.deadline)
        return self.deadline

    def cancel(self):
        if not self._cancelled and self._scheduled:
            if isinstance(self._loop, LoopBase):
                (<LoopBase>self._loop).timers_cancelled += 1
            else:
                self._loop._timer_handle_cancelled(self)
        Handle.cancel(self)

    def _repr_info(self):
        info = Handle._repr_info(self)
        info.insert(2 if self._cancelled else 1, f'when={self.deadline}')
        return info

    def __hash__(self):
        return hash(self.deadline)

    def __richcmp__(self, other, int op):
        cdef TimerHandle o
        if not isinstance(other, TimerHandle):
            return NotImplemented
        o = <TimerHandle>other
        if op == 0:    # <
            return self.deadline < o.deadline
        if op == 4:    # >
            return self.deadline > o.deadline
        equal = (self.deadline == o.deadline and self._callback == o._callback
                 and self._args == o._args and self._cancelled == o._cancelled)
        if op == 2:
            return equal
        if op == 3:
            return not equal
        if op == 1:    # <=
            return self.deadline < o.deadline or equal
        return self.deadline > o.deadline or equal


cdef inline void _fill(Handle handle, object callback, tuple args, LoopBase loop,
                       object context):
    handle._callback = callback
    handle._args = args
    handle._loop = loop
    if context is not None:
        handle._context = context
    elif _CONTEXT_SHARING and fl_current_context() != NULL:
        handle._context = _shared_copy_of_current_context(loop)
        handle.context_vars = loop.context_cache_vars
        handle.shared_context = True
    else:
        handle._context = PyContext_CopyCurrent()
        handle.own_context = True
    if loop._debug:
        # Called from C: frame 0 is the Python code that scheduled the callback.
        handle._source_traceback = _extract_stack(_getframe(0))


# Sharing one copy of the current context.
#
# asyncio copies the current context for every callback scheduled without
# one. A copy is a new object wrapping the same immutable mapping of variables,
# so as long as the current context's mapping is the same object, a copy made
# earlier is as good as a new one: the loop keeps one (context_cache) and hands
# it to every such callback. What a copy per callback guarantees is kept: a
# callback that changes variables gets a context of its own holding its
# changes (Handle._keep_context_changes), and so does anyone who asks a handle
# for its context (get_context()).

cdef object _shared_copy_of_current_context(LoopBase loop):
    cdef PyObject* current_vars = fl_context_vars(fl_current_context())
    cdef object cache = loop.context_cache
    if (cache is None or <PyObject*>loop.context_cache_vars != current_vars
            or fl_context_vars(<PyObject*>cache) != current_vars):
        cache = PyContext_CopyCurrent()
        loop.context_cache_vars = <object>current_vars
        loop.context_cache = cache
    return cache


def _context_layout_matches():
    """Check _compat.h's view of Context objects against this interpreter."""
    import contextvars
    var = contextvars.ContextVar("fastloop-probe")
    ctx = contextvars.copy_context()
    ptr = <PyObject*>ctx
    vars_before = <object>fl_context_vars(ptr)

    def inside():
        var.set(1)
        return (fl_current_context() == ptr and fl_context_entered(ptr) == 1
                and fl_context_vars(ptr) != <PyObject*>vars_before)

    if fl_context_entered(ptr) != 0 or not ctx.run(inside):
        return False
    copy = ctx.copy()
    if fl_context_entered(ptr) != 0 or fl_context_vars(<PyObject*>copy) != fl_context_vars(ptr):
        return False
    fl_context_set_vars(ptr, <PyObject*>vars_before)
    return var not in ctx


# Free-threaded builds could race on the shared copy: they always copy.
cdef bint _CONTEXT_SHARING = (getattr(sys, "_is_gil_enabled", lambda: True)()
                              and _context_layout_matches())


# The context something was done in, kept to run its consequences later in a
# copy of it, as asyncio would have made the copy then (a transport's held
# writes: see _transports.pyx). While Context objects can be read, what is kept
# is the current context's variables, an immutable mapping, so keeping them
# allocates nothing; otherwise a copy of the context.

cdef object current_context_vars():
    cdef PyObject* current
    if _CONTEXT_SHARING:
        current = fl_current_context()
        if current is not NULL:
            return <object>fl_context_vars(current)
    return PyContext_CopyCurrent()


cdef object context_with_vars(object kept):
    """A new context holding what current_context_vars() kept."""
    if PyContext_CheckExact(kept):
        return PyContext_Copy(kept)
    return context_holding(kept)


cdef inline object context_holding(object variables):
    """A new Context with these variables (a Context's immutable mapping)."""
    cdef object context = PyContext_New()
    fl_context_set_vars(<PyObject*>context, <PyObject*>variables)
    return context


cdef Handle new_handle(object callback, tuple args, LoopBase loop, object context):
    cdef Handle handle = Handle.__new__(Handle)
    _fill(handle, callback, args, loop, context)
    return handle


cdef Handle new_threadsafe_handle(object callback, tuple args, LoopBase loop, object context):
    if not _THREADSAFE_HANDLES:
        return new_handle(callback, args, loop, context)
    cdef Handle handle = ThreadSafeHandle.__new__(ThreadSafeHandle)
    _fill(handle, callback, args, loop, context)
    return handle


cdef int fill_handle(Handle handle, object callback, tuple args, LoopBase loop,
                     object context) except -1:
    _fill(handle, callback, args, loop, context)
    return 0


cdef bint given_as_int(object when, double deadline) noexcept:
    """asyncio's timer handles keep the deadline as given: an int (as
    aiohttp passes, rounded up to the second) stays one. The C deadline is
    a double, so note whether to give an int back (when it converts exactly)."""
    return type(when) is int and <object>deadline == when


cdef TimerHandle new_timer(double when, object callback, tuple args, LoopBase loop,
                           object context):
    cdef TimerHandle timer = TimerHandle.__new__(TimerHandle)
    timer.deadline = when
    timer.deadline_is_int = False
    _fill(timer, callback, args, loop, context)
    return timer


# ---------------------------------------------------------------- GC support

cdef inline int _visit_field(PyObject* field, visitproc visit, void* arg) noexcept:
    # NULL: a handle from the freelist is tracked before its fields are set,
    # and a debug build of CPython traverses it right then (gc's validation).
    if field != NULL and field != <PyObject*>None and Py_REFCNT(field) == 1 and not PyObject_GC_IsTracked(field):
        # Kept out of the GC by the loop and held by this handle alone:
        # report what it references, as if it were part of the handle.
        return Py_TYPE(field).tp_traverse(field, visit, arg)
    return 0


cdef traverseproc _generated_traverse = (<TypeSlots*>Handle).tp_traverse


cdef int traverse_handle(PyObject* obj, visitproc visit, void* arg) noexcept:
    # The generated traverse visits every field; the GC ignores the ones the
    # loop untracked, so look inside those here.
    cdef int r = _generated_traverse(obj, visit, arg)
    if r == 0:
        r = _visit_field(<PyObject*>(<Handle>obj)._args, visit, arg)
    if r == 0:
        r = _visit_field(<PyObject*>(<Handle>obj)._context, visit, arg)
    return r


(<TypeSlots*>Handle).tp_traverse = traverse_handle
(<TypeSlots*>TimerHandle).tp_traverse = traverse_handle
(<TypeSlots*>ThreadSafeHandle).tp_traverse = traverse_handle


# Code checks isinstance(handle, asyncio.Handle) or asyncio.TimerHandle (and
# 3.14's tests, events._ThreadSafeHandle): the handles stand in for them.
# Each defines every slot of theirs; subclasses made after this (in the
# other modules) inherit the classes through Handle.
stand_in_for(Handle, _events.Handle.__mro__[:-1])
stand_in_for(TimerHandle, _events.TimerHandle.__mro__[:-1])
stand_in_for(ThreadSafeHandle, (_AsyncioThreadSafeHandle or _events.Handle).__mro__[:-1])
