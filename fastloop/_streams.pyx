"""Feeding asyncio's StreamReader from a stream transport's reads, in C.

asyncio.start_server() and open_connection() put a StreamReaderProtocol on
the transport. Each read then runs four Python frames (the protocol's
data_received(), its _stream_reader property, StreamReader.feed_data() and
_wakeup_waiter()) and copies the data onto the end of the reader's
bytearray from the bytes object it was delivered in. While all four are
asyncio's own code, feed_stream_reader() takes the same steps in C without
the bytes object: small reads are copied in from the shared receive buffer,
large ones received straight onto the end of the reader's buffer. Anything
else (a
patched or overriding method, a reader at EOF, a buffer that is exported or
not a bytearray) is left to data_received() and runs as in asyncio.

The code is checked on every read, as Python would look it up: on the
protocol's type (the property) and on the reader (its methods, instance
attributes included), so a patch made at any time is honoured. The state is
read and written through the attributes asyncio's code uses, in place in
the instances' attribute values where the interpreter's own specialized
code would do that (_attrs.h).
"""
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.ref cimport Py_DECREF
from cpython.exc cimport PyErr_Clear
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from libc.errno cimport errno
from libc.string cimport memcpy

from fastloop._sysio cimport ssize_t, recv
from fastloop._recvbuf cimport READ_SIZE, read_some, last_read_data
from fastloop._originals cimport original
from fastloop._attrs cimport (fl_attr, fl_inline_attrs_on, fl_attr_init, fl_attr_clear, fl_attr_peek,
                             fl_attr_type_value, fl_attr_is_method, fl_getattr, fl_setattr,
                             fl_getattr_or_null, method_is)
from fastloop._futures cimport future_cancelled, future_set_result

from asyncio import streams as _streams

cdef extern from "Python.h":
    # Borrowed; NULL (no exception) when the type has no such attribute.
    PyObject* _PyType_Lookup(PyTypeObject* type, object name)
    long PyLong_AsLongAndOverflow(object, int* overflow) except? -1

cdef extern from "_compat.h":
    Py_ssize_t fl_bytearray_exports(object b)

cdef enum:
    # From this read size hint on, reads go straight into the reader's
    # buffer (see feed_stream_reader).
    DIRECT_MIN = 4 * 1024


cdef object _Protocol = _streams.StreamReaderProtocol
cdef object _Reader = _streams.StreamReader


cdef object _DATA_RECEIVED = original(_Protocol, "data_received", "asyncio.streams")
cdef object _STREAM_READER = original(_Protocol, "_stream_reader", "asyncio.streams")
cdef object _FEED_DATA = original(_Reader, "feed_data", "asyncio.streams")
cdef object _WAKEUP_WAITER = original(_Reader, "_wakeup_waiter", "asyncio.streams")
cdef bint _KNOWN = (_DATA_RECEIVED is not None and _STREAM_READER is not None
                    and _FEED_DATA is not None and _WAKEUP_WAITER is not None)


def _inline_attrs_work():
    """Check _attrs.h's view of instance attribute values against this
    interpreter: values are found where they are, absent and shadowing
    ones are told apart, writes land, a __dict__ or a data descriptor
    turns the fast path off."""
    cdef fl_attr a, b, c, m
    fl_attr_init(&a, "a")
    fl_attr_init(&b, "b")
    fl_attr_init(&c, "c")
    fl_attr_init(&m, "m")
    global fl_inline_attrs_on
    cdef bint was_on = fl_inline_attrs_on
    fl_inline_attrs_on = True
    try:
        return probe(&a, &b, &c, &m)
    finally:
        fl_inline_attrs_on = was_on
        fl_attr_clear(&a)
        fl_attr_clear(&b)
        fl_attr_clear(&c)
        fl_attr_clear(&m)


cdef bint probe(fl_attr* a, fl_attr* b, fl_attr* c, fl_attr* m) except -1:

    class Probe:
        def __init__(self):
            self.a = 1
            self.b = [2]

        def m(self):
            pass

    p = Probe()
    other = Probe()
    other.c = 3
    if not (fl_attr_peek(p, a) == <PyObject*>p.a and fl_attr_peek(p, b) == <PyObject*>p.b
            and fl_attr_peek(other, c) == <PyObject*>other.c and fl_attr_peek(p, c) == NULL
            and fl_attr_is_method(p, m, Probe.__dict__["m"]) == 1
            and fl_attr_is_method(p, a, Probe.__dict__["m"]) == 0):
        return False
    p.m = 5
    if fl_attr_is_method(p, m, Probe.__dict__["m"]) != 0:
        return False
    del p.m
    value = [4]
    fl_setattr(p, b, value)
    if p.b is not value or fl_attr_peek(p, b) != <PyObject*>value:
        return False
    Probe.a = property(lambda self: 6)           # a data descriptor now decides
    if fl_attr_peek(p, a) != NULL or p.a != 6:
        return False
    del Probe.a
    if fl_attr_peek(p, a) != <PyObject*>p.a:
        return False
    p.__dict__                                  # may take the values over
    return fl_attr_peek(p, b) in (NULL, <PyObject*>p.b)


fl_inline_attrs_on = _inline_attrs_work()
INLINE_ATTRS = fl_inline_attrs_on     # for the other modules that include _attrs.h


# The attributes read per read (see _attrs.h).
cdef fl_attr _stream_reader, _stream_reader_wr, _feed_data, _wakeup_waiter
cdef fl_attr _eof, _buffer, _waiter, _limit, _transport, _paused
fl_attr_init(&_stream_reader, "_stream_reader")
fl_attr_init(&_stream_reader_wr, "_stream_reader_wr")
fl_attr_init(&_feed_data, "feed_data")
fl_attr_init(&_wakeup_waiter, "_wakeup_waiter")
fl_attr_init(&_eof, "_eof")
fl_attr_init(&_buffer, "_buffer")
fl_attr_init(&_waiter, "_waiter")
fl_attr_init(&_limit, "_limit")
fl_attr_init(&_transport, "_transport")
fl_attr_init(&_paused, "_paused")


cdef bint runs_stream_reader_protocol(object data_received) noexcept:
    """data_received (what a protocol's type has under that name) is
    asyncio's StreamReaderProtocol.data_received, which feed_stream_reader()
    can stand in for."""
    return _KNOWN and data_received is _DATA_RECEIVED


cdef object reader_to_feed(object protocol):
    """The StreamReader data_received() would feed, when the steps it would
    take are asyncio's and can run here; else None."""
    cdef PyObject* prop
    if not fl_attr_type_value(protocol, &_stream_reader, &prop):
        prop = _PyType_Lookup(Py_TYPE(protocol), "_stream_reader")
    if prop != <PyObject*>_STREAM_READER:
        return None
    ref = fl_getattr(protocol, &_stream_reader_wr)
    if ref is None:
        return None
    reader = ref()
    if reader is None:
        return None
    if not (method_is(reader, &_feed_data, _FEED_DATA)
            and method_is(reader, &_wakeup_waiter, _WAKEUP_WAITER)):
        return None
    if fl_getattr(reader, &_eof):
        # feed_data()'s assertion (or, under -O, what follows it) is asyncio's.
        return None
    return reader


# reader_to_feed() called as the C function it is: a new reference, or NULL
# with the exception set (no try block on the per-read path).
ctypedef PyObject* (*object_of)(object) noexcept
cdef object_of reader_or_null = <object_of>reader_to_feed


cdef ssize_t feed_stream_reader(object protocol, int fd, Py_ssize_t* hint,
                                int* err) except -3:
    """One recv() from fd onto the end of the buffer of the StreamReader
    protocol.data_received() would feed, then the rest of feed_data(): wake
    the waiting reader, pause reading past the limit.

    Returns the count, 0 at EOF, -1 with *err set if recv() failed, -2 if
    the reader cannot be fed here (nothing was read: call data_received())."""
    cdef ssize_t n, more
    cdef Py_ssize_t before, room
    # What fails before the recv() leaves the read to data_received(), which
    # meets it after the recv(), as asyncio's code does (at EOF, never).
    cdef PyObject* found = reader_or_null(protocol)
    if found == NULL:
        PyErr_Clear()
        return -2
    reader = <object>found
    Py_DECREF(reader)                         # the reference found held
    if reader is None:
        return -2
    found = fl_getattr_or_null(reader, &_buffer)
    if found == NULL:
        PyErr_Clear()
        return -2
    buf = <object>found
    Py_DECREF(buf)
    if type(buf) is not bytearray or fl_bytearray_exports(buf):
        return -2           # extend() would fail or be someone else's
    before = PyByteArray_GET_SIZE(buf)
    if hint[0] >= DIRECT_MIN:
        # Large reads land in the buffer itself, grown by about the size of
        # the recent ones: growing it by a full READ_SIZE each time would
        # take its memory from mmap() or a trimmed heap, and receiving into
        # fresh pages costs a page fault per 4 KiB (more than the copy).
        room = min(hint[0] + hint[0] // 8, <Py_ssize_t>READ_SIZE)
        PyByteArray_Resize(buf, before + room)
        n = recv(fd, PyByteArray_AS_STRING(buf) + before, room, 0)
        err[0] = errno
        if n == room and room < READ_SIZE:
            # There may be more, which asyncio's recv(READ_SIZE) would have
            # brought in the same read (a waiting read() returns it all):
            # take it too, and make the next read larger.
            PyByteArray_Resize(buf, before + READ_SIZE)
            more = recv(fd, PyByteArray_AS_STRING(buf) + before + n, READ_SIZE - n, 0)
            if more > 0:
                n += more
            hint[0] = min(max(2 * room, n), <Py_ssize_t>READ_SIZE)
        elif n > 0:
            # Follow a smaller read slowly: it may be part of a message.
            hint[0] = max(n, hint[0] - hint[0] // 8)
        PyByteArray_Resize(buf, before + (n if n > 0 else 0))
    else:
        # Small ones are copied in from the shared receive buffer.
        n = read_some(fd, READ_SIZE)
        err[0] = errno
        if n > 0:
            PyByteArray_Resize(buf, before + n)
            memcpy(PyByteArray_AS_STRING(buf) + before, last_read_data(), n)
            hint[0] = n
    if n <= 0:
        return n
    # feed_data() after its buffer.extend(data):
    waiter = fl_getattr(reader, &_waiter)
    if waiter is not None:
        fl_setattr(reader, &_waiter, None)
        # _wakeup_waiter():
        if not future_cancelled(waiter):
            future_set_result(waiter, None)
    # Its pause test, its operands read in its order.
    transport = fl_getattr(reader, &_transport)
    if (transport is None or fl_getattr(reader, &_paused)
            or not over_twice(PyByteArray_GET_SIZE(buf), fl_getattr(reader, &_limit))):
        return n
    try:
        transport.pause_reading()
    except NotImplementedError:
        reader._transport = None
    else:
        reader._paused = True
    return n


cdef bint over_twice(Py_ssize_t size, object limit) except -1:
    """size > 2 * limit, as feed_data() computes it; an int limit is compared
    in C (no Python arithmetic per read)."""
    cdef int overflow = 0
    cdef long n
    if type(limit) is int:
        n = PyLong_AsLongAndOverflow(limit, &overflow)
        if overflow == 0:
            return n < 0 or size - n > n    # size >= 0: neither side overflows
        return overflow < 0
    return size > 2 * limit
