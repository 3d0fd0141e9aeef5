"""The receive buffer: where socket reads land, and how their data becomes
the bytes object handed to the caller without copying or allocating more than
it must (see docs/DESIGN.md, "The receive buffer").

Every read goes into one bytes object of READ_SIZE. A read of HAND_OVER_MIN
or more hands that object itself to the caller, shrunk in place to the data
(no copy; nothing wasted if it is kept), and the next read allocates a new
one. A smaller read is copied out, into the bytes object of the previous
small read if nobody else references it any more and the data fills at least
half of it, else into a new one: a request/response exchange then costs no
malloc()/free() per read (a 1 KiB bytes object is too big for CPython's
small-object allocator and for glibc's thread cache).
"""
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, _PyBytes_Resize

cdef extern from "Python.h":
    void Py_XDECREF(PyObject*)
    Py_ssize_t Py_REFCNT(object o)

cdef extern from "_compat.h":
    void fl_bytes_refill(object b, const char* data, Py_ssize_t n)


cdef enum:
    # From this size on, handing the buffer over (a malloc of READ_SIZE and an
    # in-place shrink) costs less than copying the data out: measured with
    # bench/net/run.py, protocol-10k's user time fell 10% going from 32 KiB
    # to 4 KiB.
    HAND_OVER_MIN = 4 * 1024


cdef bytes spare = None                 # the READ_SIZE buffer, when we hold one
cdef bytes recycled = None              # the last small read's bytes object
cdef Py_ssize_t recycled_capacity = 0   # the size it was allocated with

# glibc serves blocks above its mmap threshold (128 KiB at start) with mmap(),
# and every handed-over buffer would then cost mmap + mremap + munmap and page
# faults. Freeing one such block raises the threshold past its size (glibc's
# dynamic threshold), after which READ_SIZE buffers come from the heap.
# asyncio's sock.recv() gets the same effect from its first EAGAIN.
PyBytes_FromStringAndSize(NULL, READ_SIZE)


cdef char* receive_buffer() except NULL:
    global spare
    if spare is None:
        spare = PyBytes_FromStringAndSize(NULL, READ_SIZE)
    return PyBytes_AS_STRING(spare)


cdef bytes received(Py_ssize_t n):
    global spare
    cdef PyObject* raw
    if n < HAND_OVER_MIN:
        return small(PyBytes_AS_STRING(spare), n)
    # Take the buffer so that ours is its only reference: only then may it be
    # resized in place.
    raw = <PyObject*>spare
    Py_INCREF(spare)
    spare = None
    _PyBytes_Resize(&raw, n)
    result = <bytes>raw
    Py_XDECREF(raw)
    return result


cdef bytes small(const char* data, Py_ssize_t n):
    global recycled, recycled_capacity
    cdef bytes reused = recycled
    if (reused is not None and Py_REFCNT(reused) == 2      # ours: global + local
            and n <= recycled_capacity and 2 * n >= recycled_capacity):
        fl_bytes_refill(reused, data, n)
        return reused
    fresh = PyBytes_FromStringAndSize(data, n)
    recycled = fresh
    recycled_capacity = n
    return fresh
