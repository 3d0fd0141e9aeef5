"""The receive buffer: where socket reads land, and how their data becomes
the bytes object handed to the caller without copying or allocating more than
it must (see docs/DESIGN.md, "The receive buffer").

A read goes into a bytes object that can be handed over as it is, shrunk to
the data, so that nothing is copied:

- Large reads (HAND_OVER_MIN or more). The bytes objects of the last two
  large reads are kept in two slots, and one is read into again when nobody
  else references it any more (the protocol did not keep it; two, because a
  coroutine echoing sock_recv() results still holds the previous one while
  it waits for the next). Each was allocated an eighth larger than its first
  data, so a read of the same size does not fill it. If the data fills at
  least half of it, it is handed over again: a steady stream of similar reads
  costs no malloc() and no free(). Otherwise (and when nothing is reusable)
  the read lands in the READ_SIZE spare buffer, which is handed over shrunk
  in place (realloc, no copy) and takes a slot; a new spare buffer is
  allocated then. A read that fills the reused object may have left data in
  the socket: it goes on in the spare buffer (behind a copy of what the
  object got), so that a read returns what one recv() of the caller's limit
  would, as asyncio's does.
- Small reads are copied out of the buffer they landed in, into the bytes
  object of the previous small read under the same rule (unreferenced, at
  least half filled), else into a new one. A 1 KiB bytes object is too big for
  CPython's small-object allocator and for glibc's thread cache: malloc() and
  free() were ~30% of a 1 KiB echo's user-space instructions.

A handed-over object never holds more than twice its data. One plain recv()
per read: readv() into the reused object and the spare buffer behind it
measured ~0.4 us more kernel time per 10 KiB read than recv().
"""
cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, _PyBytes_Resize
from libc.string cimport memcpy

from fastloop._sysio cimport ssize_t, recv

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


@cython.final
cdef class Slot:
    """A handed-over large read's bytes object, kept to read into again."""
    cdef bytes obj
    cdef Py_ssize_t capacity        # the size it was allocated with
    cdef bint outgrown              # the last read into it filled it

    cdef inline Py_ssize_t others(self) noexcept:
        """How many references to obj there are besides the slot's."""
        cdef bytes obj = self.obj
        return Py_REFCNT(obj) - 2           # the slot's and `obj`'s own

    cdef inline bint unreferenced(self) noexcept:
        """The slot holds an object nobody else holds: ours to refill."""
        return self.obj is not None and self.others() == 0

    cdef inline bint reusable(self, Py_ssize_t limit) noexcept:
        """Ours to read up to `limit` bytes into."""
        return self.unreferenced() and limit >= self.capacity and not self.outgrown

    cdef bytes hold(self, bytes obj, Py_ssize_t capacity):
        self.obj = obj
        self.capacity = capacity
        self.outgrown = False
        return obj


cdef bytes spare = None                 # a READ_SIZE buffer, when we hold one
cdef Slot first = Slot()
cdef Slot second = Slot()
cdef Slot read_into = None              # the slot the last read went into
cdef Slot last_small = Slot()           # the last small read's bytes object

# glibc serves blocks above its mmap threshold (128 KiB at start) with mmap(),
# and every new spare buffer would then cost mmap + mremap + munmap and page
# faults. Freeing such a block raises the threshold past its size (glibc's
# dynamic threshold), after which READ_SIZE buffers come from the heap; the
# heap may still have room for a few at import, so take enough that some do
# not fit. asyncio's sock.recv() gets the same effect from its first EAGAIN.
[PyBytes_FromStringAndSize(NULL, READ_SIZE) for _ in range(8)]


cdef ssize_t read_some(int fd, Py_ssize_t limit) except -2:
    global spare, read_into
    cdef Slot slot = None
    cdef ssize_t n, more
    if first.reusable(limit):
        slot = first
    elif second.reusable(limit):
        slot = second
    read_into = slot
    if slot is not None:
        n = recv(fd, PyBytes_AS_STRING(slot.obj), slot.capacity, 0)
        if n < slot.capacity or n >= limit:
            return n
    if spare is None:
        spare = PyBytes_FromStringAndSize(NULL, READ_SIZE)
    if slot is None:
        return recv(fd, PyBytes_AS_STRING(spare), limit, 0)
    # The slot is full and the caller asked for more. One recv(limit) (what
    # asyncio makes) would have brought whatever else is waiting in the same
    # read, and callers count on that (a message sent at once arrives at
    # once): go on in the spare buffer behind a copy of the slot's data,
    # which is then handed over as a larger object that takes a slot.
    read_into = None
    memcpy(PyBytes_AS_STRING(spare), PyBytes_AS_STRING(slot.obj), n)
    more = recv(fd, PyBytes_AS_STRING(spare) + n, limit - n, 0)
    # Nothing more (EAGAIN), EOF or an error: the next read meets it.
    return n + more if more > 0 else n


cdef char* last_read_data() noexcept:
    return PyBytes_AS_STRING(read_into.obj if read_into is not None else spare)


cdef bytes received(Py_ssize_t n):
    cdef Slot slot = read_into
    if slot is not None:
        slot.outgrown = n == slot.capacity and n < READ_SIZE
        if 2 * n >= slot.capacity:
            fl_bytes_resize_reused(slot.obj, n)
            return slot.obj
        return copied(PyBytes_AS_STRING(slot.obj), n, slot)
    if n < HAND_OVER_MIN:
        return small(PyBytes_AS_STRING(spare), n)
    return hand_over_spare(n)


cdef inline Py_ssize_t with_room(Py_ssize_t n):
    """The capacity for a large read of n bytes: the next one may be a
    little larger without filling it."""
    return min(n + n // 8, READ_SIZE)


cdef Slot free_slot():
    """The slot a new large read's object goes to: an empty one, else one
    whose object somebody else holds, else the smaller."""
    if first.obj is None or first.others():
        return first
    if second.obj is None or second.others():
        return second
    return first if first.capacity <= second.capacity else second


cdef bytes hand_over_spare(Py_ssize_t n):
    """The spare buffer shrunk in place to n bytes of data (with room), to be
    read into again."""
    global spare
    cdef PyObject* raw = <PyObject*>spare
    cdef Py_ssize_t capacity = with_room(n)
    # Take the buffer so that ours is its only reference: only then may it be
    # resized in place.
    Py_INCREF(spare)
    spare = None
    _PyBytes_Resize(&raw, capacity)
    result = <bytes>raw
    Py_XDECREF(raw)
    fl_bytes_resize_reused(result, n)
    return free_slot().hold(result, capacity)


cdef bytes copied(const char* data, Py_ssize_t n, Slot slot):
    """n bytes too few to hand over the slot's object they are in: a new
    object (which takes the slot) or, if small, a recycled one."""
    if n < HAND_OVER_MIN:
        return small(data, n)
    cdef Py_ssize_t capacity = with_room(n)
    fresh = PyBytes_FromStringAndSize(NULL, capacity)
    memcpy(PyBytes_AS_STRING(fresh), data, n)
    fl_bytes_resize_reused(fresh, n)
    return slot.hold(fresh, capacity)


cdef bytes small(const char* data, Py_ssize_t n):
    """n bytes copied into the last small read's object if it is ours and
    they fill at least half of it, else into a new one."""
    if last_small.unreferenced() and n <= last_small.capacity and 2 * n >= last_small.capacity:
        memcpy(PyBytes_AS_STRING(last_small.obj), data, n)
        fl_bytes_resize_reused(last_small.obj, n)
        return last_small.obj
    return last_small.hold(PyBytes_FromStringAndSize(data, n), n)
