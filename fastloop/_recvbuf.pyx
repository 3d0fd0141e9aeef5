"""The receive buffer: where socket reads land, and how their data becomes
the bytes object handed to the caller without copying or allocating more than
it must (see docs/DESIGN.md, "The receive buffer").

A read goes into a bytes object that can be handed over as it is, shrunk to
the data, so that nothing is copied:

- Large reads (HAND_OVER_MIN or more). The bytes object of the previous large
  read is read into again when nobody else references it any more (the
  protocol did not keep it), with the READ_SIZE spare buffer behind it for
  whatever does not fit (one readv()). If the data fills at least half of it,
  it is handed over again: a steady stream of similar reads costs no malloc()
  and no free(). Otherwise the read lands in the spare buffer, which is handed
  over shrunk in place to the data (nothing wasted if it is kept) and becomes
  the object to read into next time; a new spare buffer is allocated then.
- Small reads are copied out of the buffer they landed in, into the bytes
  object of the previous small read under the same rule (unreferenced, at
  least half filled), else into a new one. A 1 KiB bytes object is too big for
  CPython's small-object allocator and for glibc's thread cache: malloc() and
  free() were ~30% of a 1 KiB echo's user-space instructions.

A handed-over object never holds more than twice its data.
"""
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, _PyBytes_Resize
from libc.string cimport memcpy

from fastloop._sysio cimport ssize_t, iovec, recv, readv

cdef extern from "Python.h":
    void Py_XDECREF(PyObject*)
    Py_ssize_t Py_REFCNT(object o)

cdef extern from "_compat.h":
    void fl_bytes_resize_reused(object b, Py_ssize_t n)


cdef enum:
    # From this size on, handing a buffer over costs less than copying the
    # data out: measured with bench/net/run.py, protocol-10k's user time fell
    # 10% going from 32 KiB to 4 KiB.
    HAND_OVER_MIN = 4 * 1024


cdef bytes spare = None                 # a READ_SIZE buffer, when we hold one
cdef bytes large = None                 # the last large read's bytes object
cdef Py_ssize_t large_capacity = 0      # the size it was allocated with
cdef bytes small_one = None             # the last small read's bytes object
cdef Py_ssize_t small_capacity = 0
cdef bint into_large = False            # the last read began in `large`

# glibc serves blocks above its mmap threshold (128 KiB at start) with mmap(),
# and every new spare buffer would then cost mmap + mremap + munmap and page
# faults. Freeing one such block raises the threshold past its size (glibc's
# dynamic threshold), after which READ_SIZE buffers come from the heap.
# asyncio's sock.recv() gets the same effect from its first EAGAIN.
PyBytes_FromStringAndSize(NULL, READ_SIZE)


cdef ssize_t read_some(int fd, Py_ssize_t limit) except -2:
    global spare, into_large
    cdef iovec iov[2]
    cdef bytes reusable = large
    if spare is None:
        spare = PyBytes_FromStringAndSize(NULL, READ_SIZE)
    if (reusable is not None and Py_REFCNT(reusable) == 2    # ours: global + local
            and limit > large_capacity):
        # Read into it, and past its end into the spare buffer.
        iov[0].iov_base = PyBytes_AS_STRING(reusable)
        iov[0].iov_len = large_capacity
        iov[1].iov_base = PyBytes_AS_STRING(spare) + large_capacity
        iov[1].iov_len = limit - large_capacity
        into_large = True
        return readv(fd, iov, 2)
    into_large = False
    return recv(fd, PyBytes_AS_STRING(spare), limit, 0)


cdef bytes received(Py_ssize_t n):
    if into_large:
        if n <= large_capacity:
            if 2 * n >= large_capacity:
                fl_bytes_resize_reused(large, n)
                return large
            return copied(PyBytes_AS_STRING(large), n)
        # The read ran on into the spare buffer: gather it there.
        memcpy(PyBytes_AS_STRING(spare), PyBytes_AS_STRING(large), large_capacity)
    elif n < HAND_OVER_MIN:
        return small(PyBytes_AS_STRING(spare), n)
    return hand_over_spare(n)


cdef bytes hand_over_spare(Py_ssize_t n):
    """The spare buffer shrunk in place to its first n bytes, which becomes
    the large read's object to read into next time."""
    global spare, large, large_capacity
    cdef PyObject* raw = <PyObject*>spare
    # Take the buffer so that ours is its only reference: only then may it be
    # resized in place.
    Py_INCREF(spare)
    spare = None
    _PyBytes_Resize(&raw, n)
    result = <bytes>raw
    Py_XDECREF(raw)
    large = result
    large_capacity = n
    return result


cdef bytes copied(const char* data, Py_ssize_t n):
    """n bytes too few to hand over the object they are in."""
    global large, large_capacity
    if n < HAND_OVER_MIN:
        return small(data, n)
    fresh = PyBytes_FromStringAndSize(data, n)
    large = fresh
    large_capacity = n
    return fresh


cdef bytes small(const char* data, Py_ssize_t n):
    global small_one, small_capacity
    cdef bytes reused = small_one
    if (reused is not None and Py_REFCNT(reused) == 2      # ours: global + local
            and n <= small_capacity and 2 * n >= small_capacity):
        memcpy(PyBytes_AS_STRING(reused), data, n)
        fl_bytes_resize_reused(reused, n)
        return reused
    fresh = PyBytes_FromStringAndSize(data, n)
    small_one = fresh
    small_capacity = n
    return fresh
