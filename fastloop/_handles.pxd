# Contract between the loop core and its callback handles.

from cpython.object cimport PyObject

cdef extern from "Python.h":
    ctypedef int (*visitproc)(PyObject*, void*) noexcept

cdef class WriteSettler:
    # A transport that holds the writes made during a loop callback and sends
    # them, batched, when settle_writes() is called: it queues itself on its
    # loop (LoopBase.settlers_head/tail, linked through next_settler; queued
    # while on it), and the loop calls settle_writes() after the callback.
    cdef WriteSettler next_settler
    cdef bint queued
    cdef int settle_writes(self) except -1


cdef class LoopBase:
    # The part of the loop's state that handles read or update directly, without
    # a Python-level call: the core's LoopCore subclasses it.
    cdef public bint _debug
    # True while the loop runs callbacks in its thread: a transport written to
    # then may hold the writes until the callback returns (WriteSettler).
    cdef bint batching_writes
    cdef WriteSettler settlers_head    # the queued WriteSettlers, oldest first
    cdef WriteSettler settlers_tail
    cdef Py_ssize_t timers_cancelled   # scheduled TimerHandles that were cancelled
    # A copy of the current context that callbacks scheduled without a context
    # share while the variables they would see stay the same (see _handles.pyx).
    cdef object context_cache
    cdef object context_cache_vars     # the variables context_cache was made with


cdef class Handle:
    cdef readonly object _callback
    cdef readonly tuple _args           # None once cancelled, as in asyncio
    cdef readonly object _context
    cdef readonly object _loop
    cdef readonly bint _cancelled
    cdef public object _source_traceback
    cdef public object _repr
    cdef bint own_context               # _context is a copy made for this handle alone
    cdef bint shared_context            # _context is the loop's context_cache...
    cdef object context_vars            # ...and these are the variables it had then
    cdef object __weakref__

    # Runs the callback in its context. Returns -1 only for an exception that
    # must leave the loop (KeyboardInterrupt, SystemExit); any other error goes
    # to the loop's exception handler.
    cdef int run(self) except -1
    # Handle.cancel() without its Python-level call: for the loop's own fd
    # readers and writers, which are Handles or IOHandles (whose cancel() is
    # this), never TimerHandles.
    cdef int cancel_now(self) except -1
    cdef _report(self, exc)
    cdef _keep_context_changes(self, object vars_before)
    cdef _unshare_context(self)


cdef class ThreadSafeHandle(Handle):
    cdef unsigned long runner           # the thread running the callback, 0 when none
    cdef list waiters                   # locks of the threads waiting for it to return
    cdef int wait_for_callback(self) except -1


cdef class TimerHandle(Handle):
    cdef double deadline             # loop.time() value at which it is due
    cdef bint deadline_is_int        # given as an int: when() gives an int back, as asyncio's
    cdef public bint _scheduled         # True while the handle sits in a loop's timer heap
    cdef object deadline_as_given(self)


# Fast constructors for the loop (no argument parsing, free list). When no
# context is given they use the loop's shared copy of the current context
# (shared_context), or a copy of their own (own_context).
cdef Handle new_handle(object callback, tuple args, LoopBase loop, object context)
# call_soon_threadsafe()'s: a ThreadSafeHandle where asyncio has a
# _ThreadSafeHandle (3.14 on), else new_handle()'s.
cdef Handle new_threadsafe_handle(object callback, tuple args, LoopBase loop, object context)
# new_handle()'s filling of a new instance of a Handle subclass.
cdef int fill_handle(Handle handle, object callback, tuple args, LoopBase loop,
                     object context) except -1
cdef bint given_as_int(object when, double deadline) noexcept
cdef TimerHandle new_timer(double when, object callback, tuple args, LoopBase loop,
                           object context)
cdef int check_callback(object callback, str method) except -1
# What copy_context() would give now, kept cheaply (the current context's
# variables), and later a new context holding it.
cdef object current_context_vars()
cdef object context_with_vars(object kept)

# A handle's tp_traverse. It looks inside the argument tuple and context copy
# a handle owns alone even while the loop keeps those out of the GC; the loop
# calls it directly for the handles it keeps out of the GC altogether.
cdef int traverse_handle(PyObject* obj, visitproc visit, void* arg) noexcept
