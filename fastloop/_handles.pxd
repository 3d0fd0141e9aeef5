# Contract between the loop core and its callback handles.

from cpython.object cimport PyObject

cdef extern from "Python.h":
    ctypedef int (*visitproc)(PyObject*, void*) noexcept

cdef class LoopBase:
    # The part of the loop's state that handles read or update directly, without
    # a Python-level call: the core's LoopCore subclasses it.
    cdef public bint _debug
    cdef Py_ssize_t timers_cancelled   # scheduled TimerHandles that were cancelled


cdef class Handle:
    cdef readonly object _callback
    cdef readonly tuple _args           # None once cancelled, as in asyncio
    cdef readonly object _context
    cdef readonly object _loop
    cdef readonly bint _cancelled
    cdef public object _source_traceback
    cdef public object _repr
    cdef bint own_context               # _context is a copy made for this handle alone
    cdef object __weakref__

    # Runs the callback in its context. Returns -1 only for an exception that
    # must leave the loop (KeyboardInterrupt, SystemExit); any other error goes
    # to the loop's exception handler.
    cdef int run(self) except -1
    cdef _report(self, exc)


cdef class TimerHandle(Handle):
    cdef double deadline             # loop.time() value at which it is due
    cdef public bint _scheduled         # True while the handle sits in a loop's timer heap


# Fast constructors for the loop (no argument parsing, free list). When no
# context is given they copy the current one and set own_context.
cdef Handle new_handle(object callback, tuple args, LoopBase loop, object context)
cdef TimerHandle new_timer(double when, object callback, tuple args, LoopBase loop,
                           object context)
cdef int check_callback(object callback, str method) except -1

# A handle's tp_traverse. It looks inside the argument tuple and context copy
# a handle owns alone even while the loop keeps those out of the GC; the loop
# calls it directly for the handles it keeps out of the GC altogether.
cdef int traverse_handle(PyObject* obj, visitproc visit, void* arg) noexcept
