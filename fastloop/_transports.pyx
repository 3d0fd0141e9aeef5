"""Stream transports for TCP and Unix sockets, on the loop core.

A SocketTransport behaves as asyncio's selector socket transport of the
running Python (same callbacks in the same order, same errors, same flow
control), but its I/O runs in C: the fd's reader and writer are IOHandles
whose run() calls the transport directly, reads go through recv()/recv_into
a protocol's buffer, and writes try send()/writev() at once, buffering only
what the kernel would not take.
"""
cimport cython
from cpython.object cimport PyObject, PyTypeObject, Py_TYPE
from cpython.ref cimport Py_INCREF
from cpython.list cimport PyList_GET_SIZE, PyList_GET_ITEM
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from cpython.contextvars cimport PyContext_CopyCurrent
from cpython.weakref cimport PyWeakref_NewRef
from libc.errno cimport errno, EINTR, ECONNABORTED, ECONNRESET
from libc.stdlib cimport realloc, free
from libc.string cimport memcmp, memcpy, memset
from posix.unistd cimport close as close_fd

from fastloop._handles cimport (Handle, WriteSettler, new_handle, fill_handle,
                                current_context_vars, context_with_vars)
from fastloop._core cimport LoopCore
from fastloop._poller cimport READABLE, WRITABLE
from fastloop._recvbuf cimport READ_SIZE, read_some, received
from fastloop._streams cimport runs_stream_reader_protocol, feed_stream_reader
from fastloop._servers cimport server_attach, server_detach, server_is_open
from fastloop._originals cimport original, stand_in_for
from fastloop._attrs cimport (fl_attr, fl_inline_attrs_on, fl_attr_type_value, method_is,
                             fl_call_method_at)
from fastloop import _streams as _streams_module
from fastloop._sysio cimport (ssize_t, iovec, recv, send, writev, FL_MSG_NOSIGNAL,
                             os_error, would_block, FL_HAVE_ACCEPT4, SOCK_NONBLOCK,
                             AF_INET, AF_INET6, socklen_t, sockaddr, sockaddr_storage,
                             sockaddr_in, sockaddr_in6, fl_accept_nonblocking,
                             getsockname, inet_ntop, ntohs, ntohl, fl_set_tcp_nodelay)

import math as _math
import os
import sys
from asyncio.events import _get_running_loop
import socket as _socket
import _socket as _socket_base
from asyncio import base_events as _base_events
from asyncio import constants as _constants
from asyncio import futures as _futures
from asyncio import protocols as _protocols
from asyncio import selector_events as _selector_events
from asyncio import transports as _transports
from fastloop._trsock import TransportSocket as _SettlingTransportSocket
from fastloop import _unclosed
from asyncio.log import logger as _logger

cdef extern from "Python.h":
    ctypedef struct _TypeDict "PyTypeObject":
        PyObject* tp_dict
    void PyType_Modified(type t)
    void Py_XDECREF(PyObject*)
    PyObject* PyObject_GetAttr(object, object)   # NULL with the exception set
    PyObject* _PyType_Lookup(PyTypeObject* type, object name)   # borrowed, may be NULL
    bint PyFunction_Check(object)
    unsigned long Py_TPFLAGS_METHOD_DESCRIPTOR
    bint PyType_HasFeature(PyTypeObject* type, unsigned long feature)
    bint PyObject_CheckBuffer(object obj)
    long long PyLong_AsLongLongAndOverflow(object obj, int* overflow) except? -1
    Py_ssize_t PY_SSIZE_T_MAX
    Py_ssize_t PY_SSIZE_T_MIN
    # On the bare pointer: an object being freed must not be counted again.
    Py_ssize_t refcount "Py_REFCNT"(PyObject* o)
    int PyContext_Enter(object ctx) except -1
    int PyContext_Exit(object ctx) except -1
    # len(), -1 with the exception set: the caller checks.
    Py_ssize_t object_size "PyObject_Size"(object o)

cdef extern from "_compat.h":
    # Returns a plain pointer: the caller checks for NULL itself.
    PyObject* fl_call_one(object f, object arg)
    object fl_new_socket(object cls, object base, tuple args)

# get_buffer()'s argument: asyncio passes -1, "no size hint".
cdef object _NO_SIZE_HINT = -1


cdef int reraise_current() except -1:
    # The exception is already set: report failure so that it propagates.
    return -1


cdef object _BufferedProtocol = _protocols.BufferedProtocol
cdef object _asyncio_set_nodelay = _base_events._set_nodelay
# socket.socket's family and type properties build enum members, which costs
# more than the rest of a connection's set-up in Python; the base type's
# fields are the plain ints.
cdef object _raw_fileno = _socket_base.socket.fileno
cdef object _raw_family = _socket_base.socket.family.__get__
cdef object _raw_type = _socket_base.socket.type.__get__
cdef object _raw_proto = _socket_base.socket.proto.__get__
cdef object _Socket = _socket.socket
cdef object _SocketBase = _socket_base.socket
cdef object _TCP_NODELAY = getattr(_socket_base, "TCP_NODELAY", None)
# socket.socket's __init__ and close() are Python-level wrappers around
# _socket.socket's that also keep two slots (_io_refs, _closed). For the
# sockets of accepted connections and the sockets transports close, the same
# steps run here without their three Python frames (~2000 instructions per
# connection), while socket.socket is the class they were written for and
# nobody has replaced those methods (checked on each use, and at import:
# methods patched in before fastloop was imported are not the socket
# module's own).
cdef object _socket_init = original(_Socket, "__init__", "socket")
cdef object _socket_close = original(_Socket, "close", "socket")
cdef object _socket_base_close = _SocketBase.close
cdef bint _SOCKET_SLOTS_KNOWN = (
    tuple(getattr(_Socket, "__slots__", ())) == ("__weakref__", "_io_refs", "_closed")
    and _socket_init is not None and _socket_close is not None)
cdef tuple _INET_FAMILIES = (int(_socket.AF_INET), int(_socket.AF_INET6))
cdef object _SOCK_STREAM = int(_socket.SOCK_STREAM)
cdef object _IPPROTO_TCP = int(_socket.IPPROTO_TCP)
cdef object _asyncio_accept_connection = _selector_events.BaseSelectorEventLoop._accept_connection
cdef object _set_result_unless_cancelled = _futures._set_result_unless_cancelled
cdef object _MISSING = object()         # get_extra_info(): no such key
cdef enum:
    DEFAULT_HIGH_WATER = 64 * 1024      # asyncio's write buffer limits
    DEFAULT_LOW_WATER = 16 * 1024
cdef object _DEFAULT_HIGH_WATER = DEFAULT_HIGH_WATER   # as the ints they are given as
cdef object _DEFAULT_LOW_WATER = DEFAULT_LOW_WATER
# Python 3.13's datagram transport sends empty datagrams (earlier ones drop
# them) and counts 8 bytes of header per queued datagram in its buffer size.
cdef bint _SENDS_EMPTY_DATAGRAMS = sys.version_info >= (3, 13)
cdef Py_ssize_t _DATAGRAM_OVERHEAD = 8 if sys.version_info >= (3, 13) else 0
cdef Py_ssize_t _LOG_THRESHOLD_FOR_CONNLOST_WRITES = _constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES


cdef enum:
    ON_READABLE = 1
    ON_WRITABLE = 2

# What the accepting code already knows about a new connection's socket
# (SocketTransport.start's `known`).
cdef enum:
    SOCKNAME_KNOWN = 1      # extra holds its "sockname"
    TCP_KNOWN = 2           # TCP by asyncio's rule: TCP_NODELAY goes on from C


# An IOHandle's step: the transport's on_readable() or on_writable(), called
# through a pointer typed without an exception check so that run() needs no
# try block on its hot path: -1 means an exception is set.
ctypedef int (*io_step)(TransportBase) noexcept


# feed_stream_reader() the same way (-3: an exception is set), for the read
# path of stream connections.
ctypedef ssize_t (*stream_feed)(object, int, Py_ssize_t*, int*) noexcept
cdef stream_feed feed_unchecked = <stream_feed>feed_stream_reader


cdef int readable_step(TransportBase transport) except -1:
    return transport.on_readable()


cdef int writable_step(TransportBase transport) except -1:
    return transport.on_writable()


cdef class TransportHandle(Handle):
    """A handle the loop runs for a transport, standing in for one or two of
    asyncio's plain Handles: its repr is a Handle's."""
    cdef TransportBase transport

    def _repr_info(self):
        info = Handle._repr_info(self)
        info[0] = "Handle"
        return info


cdef class IOHandle(TransportHandle):
    """The fd reader or writer of a transport: run() calls the transport's
    C method in the transport's context, without a Python-level call. As
    asyncio's, its callback is the transport's _read_ready or _write_ready
    (the same step, for Python callers): a bound method made only when
    something asks (a repr, an error report, a read of _callback), which
    costs an allocation per connection otherwise (~600 instructions)."""
    cdef io_step step

    cdef object callback_named(self):
        if self._callback is self.transport:
            self._callback = (self.transport._read_ready if self.step == <io_step>readable_step
                              else self.transport._write_ready)
        return self._callback

    @property
    def _callback(self):
        return self.callback_named()

    def _repr_info(self):
        self.callback_named()
        return TransportHandle._repr_info(self)

    cdef _report(self, exc):
        self.callback_named()
        TransportHandle._report(self, exc)

    cdef int run(self) except -1:
        cdef int rc
        PyContext_Enter(self._context)
        rc = self.step(self.transport)
        PyContext_Exit(self._context)          # leaves a set exception alone
        if rc < 0:
            return self.step_failed()
        return 0

    cdef int step_failed(self) except -1:
        try:
            reraise_current()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._report(exc)
        return 0


@cython.final
cdef class ConnectionMade(TransportHandle):
    """The handle of a new transport's protocol.connection_made(transport),
    which then starts the transport's reading (its _start_reading()): asyncio
    schedules the two as handles back to back, so nothing can run between
    them, and one handle costs less than two."""

    cdef int run(self) except -1:
        cdef TransportBase transport = self.transport
        if transport.joining:
            # Where asyncio's accept task makes the transport, which cannot
            # join a server closed meanwhile (Server._attach()'s assertion,
            # dropped by the task): the connection is closed, its protocol
            # unused.
            transport.joining = False
            if transport.server is not None and not server_is_open(transport.server):
                transport.drop_unjoined()
                return 0
        try:
            Handle.run(self)        # reports what connection_made() raised
        except BaseException:
            # KeyboardInterrupt or SystemExit leaves the loop: reading
            # starts when it runs again, as asyncio's handle would.
            transport.call_soon(transport._start_reading, ())
            raise
        try:
            transport.start_reading_unless_stopped()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            # Reported as the failure of asyncio's second handle would be.
            new_handle(transport._start_reading, (), self._loop, self._context)._report(exc)
        return 0


cdef class TransportBase(WriteSettler):
    """What asyncio's selector transports share: the socket, the protocol,
    reading on/off, the write buffer's flow control, closing. Subclasses
    implement on_readable()/on_writable() and the write methods."""

    cdef LoopCore loop
    cdef object sock                   # the socket object; None once closed
    cdef readonly int _sock_fd
    # An accepted connection's socket object is made only when something
    # asks for it (get_extra_info("socket"), _sock, write_eof()...): until
    # then the transport owns the bare fd, of this family, type and protocol.
    cdef bint sock_deferred
    cdef int sock_family, sock_type, sock_proto
    cdef object protocol
    cdef bint protocol_connected
    cdef dict extra                    # get_extra_info()'s, but for "socket":
    cdef object unwrapped_sock         # its TransportSocket is made on first use
    cdef object server
    # Made by fastloop's acceptor (start_accepted), and not yet where
    # asyncio's accept task would make it and join it to the server: its
    # ConnectionMade handle checks that the server is still open (see also
    # closed_by_protocol_factory).
    cdef bint joining
    # The context reading starts in: a copy of the creator's, as asyncio's
    # first fd reader has. asyncio registers the fd's reader and writer
    # anew, each in a copy of the context current then, at resume_reading()
    # and at the write() that leaves data unsent: so do these.
    cdef object context
    # While writes made during a loop callback are held, and while they are
    # sent (settle_writes()), the variables of the context they were made in
    # (current_context_vars()): the writer registered and the connection_lost()
    # scheduled for them run where asyncio's write() would have put them.
    # (Left set if sending them raised, a KeyboardInterrupt from
    # pause_writing() say, until the next writes are held or sent.)
    cdef object held_vars

    cdef list buffer                   # what is not sent yet, oldest first
    cdef Py_ssize_t buffer_size        # its size, as get_write_buffer_size() counts it
    cdef Py_ssize_t high_water         # the limits, as compared with buffer_size
    cdef Py_ssize_t low_water
    cdef object high_water_given       # and as given (asyncio takes any number)
    cdef object low_water_given
    cdef public bint _protocol_paused  # pause_writing() was called

    # Writes made during a loop callback are sent when it returns (see
    # SocketTransport.settle_writes): `deferred` bytes of them wait, not
    # counted in buffer_size yet. Methods that could tell the difference
    # settle them first. `delivering`: the callback is this transport's own
    # data_received()/buffer_updated(), which settles when it returns.
    cdef bint delivering
    cdef Py_ssize_t deferred

    cdef Py_ssize_t conn_lost          # set when connection_lost() is scheduled
    cdef bint closing                  # close() was called
    cdef bint paused                   # pause_reading() was called
    cdef bint reading_registered
    cdef bint writing_registered
    cdef bint detached                 # connection_lost() ran: no loop any more
    cdef object __weakref__
    # Instance attributes, as asyncio's transports have: tests patch methods
    # on the instance (mock.patch.object(transport, "write")). Made on first
    # use; method look-ups cost nothing more while there is none.
    cdef dict __dict__
    # The TransportMap this transport is an entry of (an owned reference, kept
    # out of the garbage collector's sight so that clearing a cycle cannot
    # drop it before __dealloc__ removes the entry), and the entry's fd.
    cdef PyObject* registered_in
    cdef int registered_fd

    # asyncio reads up to the transport's max_size per recv() (a class
    # attribute there, which programs set per transport to read in smaller
    # pieces); here at most READ_SIZE, the receive buffers' size.
    cdef Py_ssize_t read_limit

    @property
    def max_size(self):
        return self.read_limit

    @max_size.setter
    def max_size(self, value):
        cdef Py_ssize_t size = value
        if size < 1:
            raise ValueError("max_size must be at least 1")
        self.read_limit = min(size, <Py_ssize_t>READ_SIZE)

    cdef setup(self, LoopCore loop, sock, protocol, extra, bint has_sockname=False):
        # has_sockname: the accepting code put the socket's own address in
        # extra (asyncio asks the socket, and so does this otherwise).
        if extra is None:
            extra = {}
        if not has_sockname:
            try:
                extra["sockname"] = sock.getsockname()
            except OSError:
                extra["sockname"] = None
        if "peername" not in extra:
            try:
                extra["peername"] = sock.getpeername()
            except OSError:
                extra["peername"] = None
        self.sock = sock
        self.unwrapped_sock = sock
        self.finish_setup(loop, sock.fileno(), protocol, extra)

    cdef setup_deferred(self, LoopCore loop, int fd, int family, int type_, int proto,
                        protocol, dict extra):
        """setup() for an accepted fd whose socket object is not made yet
        (extra holds both addresses)."""
        self.sock_deferred = True
        self.sock_family = family
        self.sock_type = type_
        self.sock_proto = proto
        self.finish_setup(loop, fd, protocol, extra)

    cdef finish_setup(self, LoopCore loop, int fd, protocol, dict extra):
        """What setup() and setup_deferred() share, once the fd is known."""
        self.extra = extra
        self.loop = loop
        self._sock_fd = fd
        self.read_limit = READ_SIZE
        self.context = PyContext_CopyCurrent()
        self.buffer = []
        self.high_water_given = _DEFAULT_HIGH_WATER
        self.low_water_given = _DEFAULT_LOW_WATER
        self.high_water = DEFAULT_HIGH_WATER
        self.low_water = DEFAULT_LOW_WATER
        self.set_protocol(protocol)
        transports = loop.transports
        if type(transports) is TransportMap:
            self.register_in(<TransportMap>transports, fd)
        else:
            transports[fd] = self

    cdef register_in(self, TransportMap transports, int fd):
        """Be fd's entry in transports until deallocated (see TransportMap)."""
        transports.claim(fd, self)
        Py_INCREF(transports)
        self.registered_in = <PyObject*>transports
        self.registered_fd = fd

    def __dealloc__(self):
        cdef PyObject* transports = self.registered_in
        if transports != NULL:
            self.registered_in = NULL
            (<TransportMap>transports).release(self.registered_fd, <PyObject*>self)
            Py_XDECREF(transports)

    cdef object socket_object(self):
        """The transport's socket object (made now if it was deferred), or
        None once closed."""
        if self.sock_deferred:
            self.sock = new_socket(self.sock_family, self.sock_type, self.sock_proto,
                                   self._sock_fd)
            self.sock_deferred = False
            if "socket" not in self.extra:
                self.unwrapped_sock = self.sock
        return self.sock

    cdef bint socket_open(self):
        return self.sock is not None or self.sock_deferred

    cdef close_own_socket(self):
        """Close the socket (the bare fd, if its object was never made)."""
        cdef int fd = self._sock_fd
        if self.sock_deferred:
            self.sock_deferred = False
            close_owned_fd(fd)
        elif self.sock is not None:
            close_socket(self.sock)
        self.sock = None

    def __repr__(self):
        if self.deferred:
            self.settle_writes()             # so that bufsize is asyncio's
        info = [type(self).__name__]
        if not self.socket_open():
            info.append("closed")
        elif self.closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if not self.detached and not self.loop.is_closed():
            info.append("read=polling" if self.reading_registered else "read=idle")
            state = "polling" if self.writing_registered else "idle"
            info.append(f"write=<{state}, bufsize={self.buffer_size}>")
        return "<{}>".format(" ".join(info))

    def __del__(self):
        if self.socket_open():
            try:
                warn_unclosed_transport(self)
            finally:
                # Also when the warning raises (an "error" filter): a bare fd
                # has no socket object whose own finalizer would close it, as
                # asyncio's socket does.
                self.close_own_socket()
                self.detach_server()

    # ------------------------------------------------------------ plumbing

    cdef inline check_loop_open(self):
        # asyncio's transports reach a closed loop through its call_soon()
        # and _add_reader()/_add_writer(), which refuse.
        if self.loop.closed:
            raise RuntimeError('Event loop is closed')

    cdef call_soon(self, callback, tuple args):
        self.check_loop_open()
        # While held writes are sent, what that schedules (a failed send's
        # connection_lost()) counts as scheduled by those writes' write().
        self.loop.push_ready(new_handle(callback, args, self.loop, self.writes_context()))

    cdef object writes_context(self):
        """A copy of the context the writes being sent were made in (None:
        the current one's)."""
        return None if self.held_vars is None else context_with_vars(self.held_vars)

    cdef IOHandle io_handle(self, int kind, object context):
        cdef IOHandle handle = IOHandle.__new__(IOHandle)
        handle._callback = self          # stands for its _read_ready/_write_ready
        handle._args = ()
        handle._loop = self.loop
        handle._context = context
        handle.transport = self
        handle.step = <io_step>(readable_step if kind == ON_READABLE else writable_step)
        return handle

    cdef start_reading_now(self, object context):
        if not self.reading_registered:
            self.check_loop_open()
            self.loop.set_io_handle(self._sock_fd, READABLE, self.io_handle(ON_READABLE, context))
            self.reading_registered = True

    cdef stop_reading_now(self):
        if self.reading_registered:
            self.reading_registered = False
            self.loop.clear_io_handle(self._sock_fd, READABLE)

    cdef start_writing(self):
        cdef object context
        if not self.writing_registered:
            self.check_loop_open()
            context = self.writes_context()
            if context is None:
                context = PyContext_CopyCurrent()
            self.loop.set_io_handle(self._sock_fd, WRITABLE, self.io_handle(ON_WRITABLE, context))
            self.writing_registered = True

    cdef stop_writing(self):
        if self.writing_registered:
            self.writing_registered = False
            self.loop.clear_io_handle(self._sock_fd, WRITABLE)

    cdef stop_all_writing(self):
        """What asyncio's close() does with loop._remove_writer(fd): stop
        the transport's writing and any other writer on its fd."""
        self.stop_writing()

    cdef schedule_connection_made(self, protocol):
        """protocol.connection_made(self) in the next loop iteration, then
        reading starts (see ConnectionMade)."""
        cdef ConnectionMade handle = ConnectionMade.__new__(ConnectionMade)
        fill_handle(handle, protocol.connection_made, (self,), self.loop, None)
        handle.transport = self
        self.loop.push_ready(handle)

    cdef drop_unjoined(self):
        """Close a connection its server no longer takes, unseen by its
        protocol (no connection_made(), no connection_lost())."""
        self.closing = True
        self.conn_lost += 1
        self.protocol_connected = False
        self.call_connection_lost(None)

    def _start_reading(self):
        self.start_reading_unless_stopped()

    cdef start_reading_unless_stopped(self):
        # As is_reading() answers, without its Python-level call: writes
        # connection_made() made are sent first (asyncio sent them at once,
        # and a failure closes the transport).
        if self.deferred:
            self.settle_writes()
        if not self.closing and not self.paused:
            self.start_reading_now(self.context)

    cdef detach_server(self):
        server = self.server
        if server is not None:
            self.server = None
            server_detach(server, self)

    def is_reading(self):
        if self.deferred:
            self.settle_writes()
        return not self.closing and not self.paused

    def pause_reading(self):
        if self.closing or self.paused:
            return
        self.paused = True
        self.stop_reading_now()
        if self.loop._debug:
            _logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self.closing or not self.paused:
            return
        self.paused = False
        self.start_reading_now(PyContext_CopyCurrent())
        if self.loop._debug:
            _logger.debug("%r resumes reading", self)

    # ------------------------------------------------------------ writing

    cdef count_lost_write(self):
        if self.conn_lost >= _LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            _logger.warning("socket.send() raised exception.")
        self.conn_lost += 1

    cdef drop_buffer(self):
        self.buffer.clear()
        self.buffer_size = 0

    cdef int on_readable(self) except -1:
        raise NotImplementedError

    cdef int on_writable(self) except -1:
        raise NotImplementedError

    def _read_ready(self):
        """What the fd's reader does when the fd is readable (asyncio's
        transports' name for it)."""
        self.on_readable()

    def _write_ready(self):
        """What the fd's writer does when the fd is writable."""
        self.on_writable()

    def _send_held_writes(self):
        # For fastloop._trsock.TransportSocket (Python code cannot call cdef methods).
        if self.deferred:
            self.settle_writes()

    def get_write_buffer_size(self):
        if self.deferred:
            self.settle_writes()
        return self.buffer_size

    def get_write_buffer_limits(self):
        return (self.low_water_given, self.high_water_given)

    cdef set_limits(self, high, low):
        self.high_water_given = high
        self.low_water_given = low
        self.high_water = water_mark(high)
        self.low_water = water_mark(low)

    def set_write_buffer_limits(self, high=None, low=None):
        if self.deferred:
            self.settle_writes()
        if high is None:
            high = 64 * 1024 if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.set_limits(high, low)
        self.maybe_pause_protocol()

    cdef maybe_pause_protocol(self):
        if self.buffer_size <= self.high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        self.tell_protocol(True)

    cdef maybe_resume_protocol(self):
        if not self._protocol_paused or self.buffer_size > self.low_water:
            return
        self._protocol_paused = False
        self.tell_protocol(False)

    cdef tell_protocol(self, bint pause):
        """protocol.pause_writing() or resume_writing(); what it raises goes
        to the exception handler, as asyncio reports it."""
        try:
            if pause:
                self.protocol.pause_writing()
            else:
                self.protocol.resume_writing()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self.loop.call_exception_handler({
                "message": f"protocol.{'pause' if pause else 'resume'}_writing() failed",
                "exception": exc,
                "transport": self,
                "protocol": self.protocol,
            })

    # ------------------------------------------------------------ closing

    def is_closing(self):
        if self.deferred:
            self.settle_writes()
        return self.closing

    def close(self):
        """Stop reading; connection_lost(None) follows once every byte
        written so far has been sent."""
        if self.deferred:
            self.settle_writes()
        if self.closing:
            return
        self.closing = True
        self.stop_reading_now()
        if not self.buffer:
            self.conn_lost += 1
            self.stop_all_writing()
            self.call_soon(self._call_connection_lost, (None,))

    def abort(self):
        """Close at once, dropping unsent data."""
        self.force_close(None)

    def _force_close(self, exc):
        self.force_close(exc)

    cdef force_close(self, exc):
        if self.deferred:
            # What asyncio would have sent by now goes out before the close.
            self.settle_writes()
        if self.conn_lost:
            return
        if self.buffer:
            self.drop_buffer()
            self.stop_writing()
        if not self.closing:
            self.closing = True
            self.stop_reading_now()
        self.conn_lost += 1
        self.call_soon(self._call_connection_lost, (exc,))

    cdef fatal_error(self, exc, str message):
        if isinstance(exc, OSError):
            # Resets and the like are the peer's doing, not a bug.
            if self.loop._debug:
                _logger.debug("%r: %s", self, message, exc_info=exc)
        else:
            self.loop.call_exception_handler({
                "message": message,
                "exception": exc,
                "transport": self,
                "protocol": self.protocol,
            })
        self.force_close(exc)

    cdef fatal_error_found(self, exc, str message):
        """fatal_error() of an error found here (a failed system call, a
        check), raised and caught first so that it carries a traceback as
        asyncio's does (raised by the call or check), which the logs print.
        Not an OSError outside debug mode: a reset peer is routine, nothing
        logs it then, and the traceback cost ~2000 instructions per reset
        connection (connect-1k: 15600 -> 17700 per connection).
        Returns it."""
        if isinstance(exc, OSError) and not self.loop._debug:
            self.fatal_error(exc, message)
            return exc
        try:
            raise exc
        except BaseException as raised:
            self.fatal_error(raised, message)
            return raised

    def _call_connection_lost(self, exc):
        self.call_connection_lost(exc)

    cdef call_connection_lost(self, exc):
        if self.detached:
            return
        try:
            if self.protocol_connected:
                self.protocol.connection_lost(exc)
        finally:
            self.stop_reading_now()
            self.stop_writing()
            self.close_own_socket()
            self.protocol = None
            self.detached = True
            self.detach_server()

    # ------------------------------------------------------------ protocol

    # cpdef: a C call from setup() (a Python subclass's override still runs).
    cpdef set_protocol(self, protocol):
        self.protocol = protocol
        self.protocol_connected = True

    def get_protocol(self):
        return self.protocol

    def get_extra_info(self, name, default=None):
        if self.deferred:
            # The caller may go on to use the socket itself (shutdown()...).
            self.settle_writes()
        value = self.extra.get(name, _MISSING)
        if value is _MISSING:
            if name != "socket":
                return default
            value = self.full_extra()["socket"]
        return value

    cdef dict full_extra(self):
        # The "socket" entry (asyncio's TransportSocket wrapper, the same
        # object on every call) is made when first asked for: most protocols
        # never ask, and it costs a Python-level __init__ per connection.
        if "socket" not in self.extra:
            sock = self.unwrapped_sock
            if sock is None:
                sock = self.socket_object()
                if sock is None:
                    sock = self.closed_stand_in()
            self.extra["socket"] = _SettlingTransportSocket(sock, self)
            self.unwrapped_sock = None
        return self.extra

    cdef object closed_stand_in(self):
        """What asyncio's extra "socket" wraps after the connection closed,
        for a transport closed before its socket object was ever made: a
        closed socket.socket of the same family, type and protocol."""
        sock = _Socket(self.sock_family, self.sock_type, self.sock_proto)
        sock.close()
        return sock

    # ------------------------------------------------------------ what asyncio's code reads

    @property
    def _loop(self):
        return None if self.detached else self.loop

    @property
    def _sock(self):
        if self.deferred:
            self.settle_writes()
        return self.socket_object()

    @property
    def _protocol(self):
        return self.protocol

    @property
    def _closing(self):
        return self.closing

    @property
    def _extra(self):
        return self.full_extra()

    # Read by application code as well ("is the connection gone?", "is
    # reading paused?"), so they read as asyncio's do; setting them is not
    # supported.
    @property
    def _conn_lost(self):
        if self.deferred:
            self.settle_writes()
        return self.conn_lost

    @property
    def _paused(self):
        return self.paused

    @property
    def _protocol_connected(self):
        return self.protocol_connected

    @property
    def _server(self):
        return self.server

    @property
    def _high_water(self):
        return self.high_water_given

    @_high_water.setter
    def _high_water(self, value):
        self.set_limits(value, self.low_water_given)

    @property
    def _low_water(self):
        return self.low_water_given

    @_low_water.setter
    def _low_water(self, value):
        self.set_limits(self.high_water_given, value)


cdef str c_type_name(object obj, Py_ssize_t limit=50):
    """The type name CPython's C-level errors give (tp_name, cut at limit)."""
    cdef bytes name = Py_TYPE(obj).tp_name
    return name[:limit].decode()


# Before 3.12 asyncio's writelines() is write(b"".join(list_of_data)): its
# errors are the join's and write()'s; from 3.12 it is the transport's own.
cdef bint _WRITELINES_JOINS = sys.version_info < (3, 12)

cdef object iter_as_join_does(object iterable):
    """iter(iterable), failing as bytes.join() fails on what is not iterable."""
    try:
        return iter(iterable)
    except TypeError:
        raise TypeError("can only join an iterable") from None


# Held in a C variable: a transport collected while the interpreter shuts
# down runs __del__ after its module's globals were set to None.
cdef object warn_unclosed_transport = _unclosed.warn_unclosed_transport


cdef object writelines_piece(object data, Py_ssize_t i):
    """writelines() item i (not bytes) as bytes, taken as asyncio takes it:
    any contiguous buffer; a non-contiguous one is None from 3.12 (it fails
    when sent); anything else raises asyncio's TypeError."""
    cdef Py_buffer view
    if PyObject_CheckBuffer(data):
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except BufferError:
            if not _WRITELINES_JOINS:
                return None
        else:
            try:
                return PyBytes_FromStringAndSize(<char*>view.buf, view.len)
            finally:
                PyBuffer_Release(&view)
    if _WRITELINES_JOINS:
        raise TypeError(f"sequence item {i}: expected a bytes-like object, "
                        f"{c_type_name(data, 80)} found")
    raise TypeError(f"memoryview: a bytes-like object is required, not '{c_type_name(data, 200)}'")


cdef Py_ssize_t water_mark(object limit) except? -1:
    """A write buffer limit as buffer sizes compare with it: asyncio accepts
    any number (a float, an int past the C range)."""
    cdef int overflow = 0
    cdef long long n
    if type(limit) is not int:
        limit = _math.floor(limit) if limit != _math.inf else sys.maxsize
    n = PyLong_AsLongLongAndOverflow(limit, &overflow)
    if overflow > 0 or n > PY_SSIZE_T_MAX:
        return PY_SSIZE_T_MAX
    if overflow < 0 or n < PY_SSIZE_T_MIN:
        return PY_SSIZE_T_MIN
    return <Py_ssize_t>n


# The protocol methods a stream transport calls per read.
cdef str _DATA_RECEIVED = sys.intern("data_received")
cdef str _GET_BUFFER = sys.intern("get_buffer")
cdef str _BUFFER_UPDATED = sys.intern("buffer_updated")
# _attrs.h's layouts, as _streams checked them against this interpreter.
fl_inline_attrs_on = _streams_module.INLINE_ATTRS


cdef object plain_method(object protocol, str name, fl_attr* at):
    """What protocol's type has under name if it is a plain method (a
    function or a method descriptor, which a look-up binds to the instance),
    else None; at is reset to record where the type keeps it."""
    cdef PyObject* found
    at.name = <PyObject*>name
    at.version = 0
    # Resolving the record looks the name up once (fl_attr_type_value()).
    if not fl_attr_type_value(protocol, at, &found):
        found = _PyType_Lookup(Py_TYPE(protocol), name)
    if found == NULL:
        return None
    func = <object>found
    if PyFunction_Check(func) or PyType_HasFeature(Py_TYPE(func), Py_TPFLAGS_METHOD_DESCRIPTOR):
        return func
    return None


cdef class SocketTransport(TransportBase):
    """A TCP or Unix stream transport (asyncio.Transport's interface)."""

    # The protocol's methods: what its type had under each name when
    # set_protocol() ran (None: not a plain method, so looked up at every
    # call, as asyncio looks them all up), called while a look-up would
    # still find it (fl_call_method_at()).
    cdef object data_received
    cdef object get_buffer
    cdef object buffer_updated
    cdef fl_attr data_received_at      # where the type keeps them (_attrs.h)
    cdef fl_attr get_buffer_at
    cdef fl_attr buffer_updated_at
    cdef bint buffered                 # BufferedProtocol: read into its buffer
    cdef bint feeds_stream             # StreamReaderProtocol: feed its reader in C
    cdef Py_ssize_t read_hint          # how much to read for it (see _streams.pxd)
    cdef object empty_waiter           # loop.sendfile() waits for the buffer to drain
    cdef object pending                # the first deferred write (see settle_writes)
    cdef object pending_second         # and the second (a header, then a body)
    cdef Py_ssize_t sent_of_first      # bytes of buffer[0] already sent
    cdef bint eof                      # write_eof() was called

    _start_tls_compatible = True
    _sendfile_compatible = _constants._SendfileMode.TRY_NATIVE

    @property
    def _eof(self):                    # as asyncio's transport has it
        return self.eof

    def __init__(self, LoopCore loop not None, sock, protocol, waiter=None,
                 extra=None, server=None):
        self.start(loop, sock, protocol, waiter, extra, server, 0)

    cdef start(self, LoopCore loop, sock, protocol, waiter, extra, server, int known):
        self.setup(loop, sock, protocol, extra, known & SOCKNAME_KNOWN)
        self.begin(protocol, waiter, server, known)

    cdef begin(self, protocol, waiter, server, int known):
        """The rest of start(), once set up (either way)."""
        if server is not None:
            server_attach(server, self)
            self.server = server         # counted: detached when it goes
        if known & TCP_KNOWN:
            if fl_set_tcp_nodelay(self._sock_fd) < 0:
                raise os_error(errno)
        elif self.sock is not None:
            set_nodelay(self.sock)
        # (A deferred socket not known to be TCP is not TCP by asyncio's
        # rule, which accept_inet() applied: nothing to set.)
        # As asyncio: connection_made() first, then reading starts, then the
        # waiter learns the connection is up.
        self.schedule_connection_made(protocol)
        if waiter is not None:
            self.call_soon(_set_result_unless_cancelled, (waiter, None))

    # ------------------------------------------------------------ reading

    cdef int on_readable(self) except -1:
        cdef ssize_t n
        cdef int err
        if self.conn_lost:
            return 0
        if self.buffered:
            return self.read_into_protocol_buffer()
        # The stream path stands in for asyncio's StreamReaderProtocol.
        # data_received, while a look-up would still find it.
        if (self.feeds_stream and self.read_limit == READ_SIZE
                and method_is(self.protocol, &self.data_received_at, self.data_received)
                and self.fed_stream_reader()):
            return 0
        while True:
            n = read_some(self._sock_fd, self.read_limit)
            if n >= 0:
                break
            err = errno
            if err == EINTR:
                continue
            return self.read_failed(err)
        if n == 0:
            return self.on_eof()
        return self.deliver(received(n))

    cdef int read_failed(self, int err) except -1:
        """A read's recv() failed with err: nothing to read yet, or the
        connection's fatal read error."""
        if not would_block(err):
            self.fatal_error_found(os_error(err), "Fatal read error on socket transport")
        return 0

    cdef int deliver(self, bytes data) except -1:
        """Hand what was read to the protocol's data_received()."""
        # Called without a try block (which costs its exception-state
        # bookkeeping on every call); a failure is handled out of line.
        cdef PyObject* result
        self.delivering = True
        result = fl_call_method_at(self.protocol, &self.data_received_at, self.data_received,
                                   data)
        self.delivering = False
        if result == NULL:
            return self.protocol_failed("Fatal error: protocol.data_received() call failed.")
        Py_XDECREF(result)
        if self.deferred:
            return self.settle_writes()
        return 0

    cdef int protocol_failed(self, str message) except -1:
        """A protocol callback raised (its exception is set): close the
        transport as asyncio does, or let KeyboardInterrupt/SystemExit out."""
        try:
            reraise_current()
        except BaseException as exc:
            return self.protocol_raised(exc, message)

    cdef int protocol_raised(self, exc, str message) except -1:
        """protocol_failed() for the exception a callback raised."""
        if self.deferred:
            # asyncio would have sent what the callback wrote before it raised.
            self.settle_writes()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise exc
        self.fatal_error(exc, message)
        return 0

    cdef bint fed_stream_reader(self) except -1:
        """A read for a StreamReaderProtocol, run in C (see _streams.pyx);
        False when it must go through data_received() instead."""
        cdef ssize_t n
        cdef int err = 0
        self.delivering = True
        while True:
            n = feed_unchecked(self.protocol, self._sock_fd, &self.read_hint, &err)
            if n != -1 or err != EINTR:
                break
        self.delivering = False
        if n == -3:
            self.protocol_failed("Fatal error: protocol.data_received() call failed.")
        elif n > 0:
            if self.deferred:
                self.settle_writes()
        elif n == 0:
            self.on_eof()
        elif n == -2:
            return False
        else:
            self.read_failed(err)
        return True

    cdef int read_into_protocol_buffer(self) except -1:
        cdef ssize_t n
        cdef int err = 0
        cdef Py_buffer view
        cdef Py_ssize_t size
        cdef bint unfillable = False
        # The protocol's callbacks are called as in deliver(): no try block
        # on the per-read path.
        cdef PyObject* result = fl_call_method_at(self.protocol, &self.get_buffer_at,
                                                  self.get_buffer, _NO_SIZE_HINT)
        if result == NULL:
            return self.protocol_failed("Fatal error: protocol.get_buffer() call failed.")
        buf = <object>result
        Py_XDECREF(result)
        size = object_size(buf)
        if size < 0:
            return self.protocol_failed("Fatal error: protocol.get_buffer() call failed.")
        if size == 0:
            self.fatal_error_found(RuntimeError("get_buffer() returned an empty buffer"),
                                   "Fatal error: protocol.get_buffer() call failed.")
            return 0
        try:
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
        except BaseException:
            unfillable = True
        if unfillable:
            # asyncio's recv_into(buf) raises this, from its argument parsing
            # (raised out here: it has no __context__).
            self.fatal_error_found(
                TypeError(f"recv_into() argument 1 must be read-write bytes-like object, "
                          f"not {c_type_name(buf)}"),
                "Fatal read error on socket transport")
            return 0
        while True:
            n = recv(self._sock_fd, view.buf, view.len, 0)
            if n >= 0 or errno != EINTR:
                err = errno
                break
        PyBuffer_Release(&view)
        if n < 0:
            return self.read_failed(err)
        if n == 0:
            return self.on_eof()
        self.delivering = True
        result = fl_call_method_at(self.protocol, &self.buffer_updated_at, self.buffer_updated, n)
        self.delivering = False
        if result == NULL:
            return self.protocol_failed("Fatal error: protocol.buffer_updated() call failed.")
        Py_XDECREF(result)
        if self.deferred:
            return self.settle_writes()
        return 0

    cdef int on_eof(self) except -1:
        if self.loop._debug:
            _logger.debug("%r received EOF", self)
        try:
            keep_open = self.protocol.eof_received()
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self.fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return 0
        if keep_open:
            # The protocol may still write; there is nothing more to read.
            self.stop_reading_now()
        else:
            self.close()
        return 0

    # ------------------------------------------------------------ writing

    def write(self, data):
        cdef Py_buffer view
        if type(data) is bytes:              # the common case: no buffer protocol
            if self.eof or self.empty_waiter is not None:
                self.check_writable("write")
            return self.write_bytes(data, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        self.check_writable("write")
        try:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        except BufferError as exc:
            # A memoryview that is not contiguous: asyncio's send() of it
            # fails, a fatal write error.
            if len(data) == 0:
                return
            if self.conn_lost:
                self.count_lost_write()
                return
            if self.deferred:
                self.settle_writes()
            self.fatal_error(exc, "Fatal write error on socket transport")
            return
        try:
            self.write_bytes(data, <char*>view.buf, view.len)
        finally:
            PyBuffer_Release(&view)

    cdef write_bytes(self, object data, char* buf, Py_ssize_t size):
        """write() of size bytes at buf, which `data` holds."""
        if size == 0:
            return
        if self.conn_lost:
            self.count_lost_write()
            return
        if self.deferred:
            self.defer_another(data, buf, size)
        elif self.buffer:
            # Queued behind unsent data: the fd's writer sends it.
            self.keep_unsent(data, buf, size, 0)
        elif (size <= self.high_water and (self.delivering or self.loop.batching_writes)
              and self.may_hold_writes()):
            self.pending = data if type(data) is bytes else PyBytes_FromStringAndSize(buf, size)
            self.deferred = size
            if not self.delivering:
                # Sent once the callback returns, outside its context.
                self.held_vars = current_context_vars()
                if not self.queued:
                    self.queue_on_loop()
        else:
            self.send_now(data, buf, size)

    cdef send_now(self, object data, char* buf, Py_ssize_t size):
        """Send with nothing queued; keep what the kernel does not take."""
        cdef ssize_t n
        while True:
            n = send(self._sock_fd, buf, size, FL_MSG_NOSIGNAL)
            if n >= 0 or errno != EINTR:
                break
        if n != size:
            self.sent_short(n, errno, data, buf, size, None)

    cdef send_pair(self, bytes first, bytes second):
        """send_now() of two pieces, in one writev()."""
        cdef iovec iov[2]
        cdef ssize_t n
        iov[0].iov_base = PyBytes_AS_STRING(first)
        iov[0].iov_len = PyBytes_GET_SIZE(first)
        iov[1].iov_base = PyBytes_AS_STRING(second)
        iov[1].iov_len = PyBytes_GET_SIZE(second)
        while True:
            n = writev(self._sock_fd, iov, 2)
            if n >= 0 or errno != EINTR:
                break
        if n != <ssize_t>(iov[0].iov_len + iov[1].iov_len):
            self.sent_short(n, errno, first, <char*>iov[0].iov_base, iov[0].iov_len, second)

    cdef sent_short(self, ssize_t n, int err, object data, char* buf, Py_ssize_t size,
                    bytes then):
        """send_now() or send_pair() sent n bytes (-1: errno err) of data's
        size at buf and then's: fail, or keep the rest for the fd's writer."""
        if n < 0:
            if not would_block(err):
                self.fatal_error_found(os_error(err), "Fatal write error on socket transport")
                return
            n = 0
        self.start_writing()
        if n < size:
            self.keep_unsent(data, buf, size, n)
            n = size
        if then is not None:
            self.keep_unsent(then, PyBytes_AS_STRING(then), PyBytes_GET_SIZE(then), n - size)

    cdef keep_unsent(self, object data, char* buf, Py_ssize_t size, Py_ssize_t sent):
        # Kept as bytes we own: a caller may reuse its bytearray right after
        # write() returns.
        if sent == 0 and type(data) is bytes:
            self.buffer.append(data)
        else:
            self.buffer.append(PyBytes_FromStringAndSize(buf + sent, size - sent))
        self.buffer_size += size - sent
        self.maybe_pause_protocol()

    # Writes made while nothing is queued, during a loop callback (the
    # protocol's data_received(), a task step, a call_soon() callback), are
    # sent when that callback returns, by settle_writes(): a response written
    # in pieces leaves in one writev(), and the system call runs from the
    # loop rather than from inside the protocol's Python code. The transport's
    # own data_received() settles when it returns; any other callback, when
    # the loop regains control (LoopCore.settle_writes). The first piece
    # waits in `pending`, the second in `pending_second` (so the usual
    # header-then-body pair needs no list), any others in `buffer`;
    # `deferred` is their size, which buffer_size does not count until they
    # are settled. Anything that could see the difference from asyncio's
    # write-at-once (the buffer size, closing, the socket itself, the
    # callback raising) settles them first.
    # Writes made while the loop is not running a callback (before it runs,
    # from a signal handler during a poll) are sent at once.

    cdef queue_on_loop(self):
        # Settled by the loop once the callback returns (see WriteSettler).
        cdef LoopCore loop = self.loop
        if loop.settlers_tail is None:
            loop.settlers_head = self
        else:
            loop.settlers_tail.next_settler = self
        loop.settlers_tail = self
        self.queued = True

    cdef defer_another(self, object data, char* buf, Py_ssize_t size):
        if type(data) is not bytes:
            data = PyBytes_FromStringAndSize(buf, size)
        if self.pending_second is None:
            self.pending_second = data
        else:
            self.buffer.append(data)
        self.deferred += size
        if self.deferred > self.high_water:
            # A protocol writing this much at once gets pause_writing() during
            # the write that crossed the mark, as in asyncio.
            self.settle_writes()

    cdef int settle_writes(self) except -1:
        """Send the deferred writes (see above)."""
        cdef object first = self.pending, second = self.pending_second
        cdef Py_ssize_t size = self.deferred
        cdef Py_ssize_t writes               # the write() calls held
        if not size:
            return 0
        self.pending = self.pending_second = None
        self.deferred = 0
        if second is None:
            self.send_now(first, PyBytes_AS_STRING(first), size)
            self.forget_held_context()
            return 0
        if not self.reading_registered:
            # Reading stopped since the first was held (the poller's hint
            # cannot change during a callback: see may_hold_writes()).
            self.send_each(first, second)
            self.forget_held_context()
            return 0
        if not self.buffer:
            writes = 2
            self.send_pair(first, second)
        else:
            writes = 2 + len(self.buffer)
            self.buffer[0:0] = (first, second)
            self.buffer_size += size
            if self.flush() and self.buffer:
                self.start_writing()
                self.maybe_pause_protocol()
        if self.conn_lost:
            # The send failed: in asyncio the first write() did, and each
            # later one counted as a write after the loss (logged past 5).
            for _ in range(writes - 1):
                self.count_lost_write()
        self.forget_held_context()
        return 0

    cdef inline void forget_held_context(self) noexcept:
        if self.held_vars is not None:
            self.held_vars = None

    cdef inline bint may_hold_writes(self) noexcept:
        """Whether writes may be held: not once the peer may have shut down
        its side (the poller reported it, or does not watch for it now:
        reading is paused or over). A peer that closed its socket answers
        the first send() with a reset, which (over loopback, at once) fails
        the next send() in asyncio: each write is then sent at once, as
        asyncio sends it, so that a failure closes the transport at the
        same write() and connection_lost() is scheduled at the same point."""
        return self.reading_registered and not self.loop.peer_closed(self._sock_fd)

    cdef int send_each(self, bytes first, bytes second) except -1:
        """settle_writes() of two or more writes held before reading paused
        (see may_hold_writes()): each is sent as asyncio's write() sent it.
        One writev() of them all would succeed where asyncio's second send()
        to a closed peer fails. write_bytes() holds none of them now."""
        cdef list held = [first, second]
        cdef bytes data
        if self.buffer:                      # the writes held after the second
            held += self.buffer
            self.buffer.clear()
        for data in held:
            self.write_bytes(data, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
        return 0

    def writelines(self, list_of_data):
        """Write the pieces with one writev() (a join, without the copy)."""
        cdef list pieces = []
        cdef Py_ssize_t i = -1
        cdef bint unsendable = False
        if self.deferred:
            self.settle_writes()
        if _WRITELINES_JOINS:
            list_of_data = iter_as_join_does(list_of_data)
        else:
            self.check_writable("writelines")
            if not list_of_data:
                return                           # 3.12+: even for a non-iterable
        for data in list_of_data:
            i += 1
            if type(data) is not bytes:
                data = writelines_piece(data, i)
                if data is None:
                    unsendable = True
                    continue
            if PyBytes_GET_SIZE(data):
                pieces.append(data)
        if _WRITELINES_JOINS:
            self.check_writable("write")         # 3.11: write(b"".join(list_of_data))
        if unsendable and not self.conn_lost:
            # 3.12+ keeps a memoryview of each piece; sending one that is
            # not contiguous fails, a fatal write error.
            self.fatal_error_found(BufferError("memoryview: underlying buffer is not C-contiguous"),
                                   "Fatal write error on socket transport")
            return
        if not pieces:
            return
        if self.conn_lost:
            self.count_lost_write()
            return
        was_empty = not self.buffer
        for data in pieces:
            self.buffer.append(data)
            self.buffer_size += PyBytes_GET_SIZE(data)
        if was_empty:
            if not self.flush():
                return
            if self.buffer:
                self.start_writing()
        self.maybe_pause_protocol()

    cdef check_writable(self, str method):
        if self.eof:
            raise RuntimeError(f"Cannot call {method}() after write_eof()")
        if self.empty_waiter is not None:
            raise RuntimeError(f"unable to {method}; sendfile is in progress")

    cdef bint flush(self) except -1:
        """Send as much of the buffer as the kernel takes, with writev().
        False if that failed (the transport is then being closed)."""
        cdef iovec iov[64]
        cdef int count = 0, err
        cdef ssize_t n
        cdef Py_ssize_t i, size, done = 0
        cdef list buffer = self.buffer
        cdef PyObject* piece
        count = <int>min(PyList_GET_SIZE(buffer), 64)
        for i in range(count):
            piece = PyList_GET_ITEM(buffer, i)
            iov[i].iov_base = PyBytes_AS_STRING(<object>piece)
            iov[i].iov_len = PyBytes_GET_SIZE(<object>piece)
        iov[0].iov_base = <char*>iov[0].iov_base + self.sent_of_first
        iov[0].iov_len -= self.sent_of_first
        while True:
            if count == 1:
                n = send(self._sock_fd, iov[0].iov_base, iov[0].iov_len, FL_MSG_NOSIGNAL)
            else:
                n = writev(self._sock_fd, iov, count)
            if n >= 0 or errno != EINTR:
                err = errno
                break
        if n < 0:
            if would_block(err):
                return True
            self.stop_writing()
            self.drop_buffer()
            exc = self.fatal_error_found(os_error(err), "Fatal write error on socket transport")
            if self.empty_waiter is not None:
                self.empty_waiter.set_exception(exc)
            return False
        self.buffer_size -= n
        n += self.sent_of_first
        for i in range(count):
            size = PyBytes_GET_SIZE(<object>PyList_GET_ITEM(buffer, i))
            if n < size:
                break
            n -= size
            done += 1
        if done == PyList_GET_SIZE(buffer):
            buffer.clear()               # all sent: cheaper than a slice deletion
        else:
            del buffer[:done]
        self.sent_of_first = n
        return True

    cdef stop_all_writing(self):
        self.stop_writing()
        if self.empty_waiter is not None:
            # A loop.sendfile() in progress waits with a writer of its own
            # on the fd, which asyncio's close() removes too: that sendfile
            # then never ends (as on asyncio), and no stale writer is left
            # to fire for a later socket given the same fd.
            self.loop.clear_io_handle(self._sock_fd, WRITABLE)

    cdef drop_buffer(self):
        TransportBase.drop_buffer(self)
        self.sent_of_first = 0

    cdef int on_writable(self) except -1:
        if self.conn_lost or not self.buffer:
            return 0
        if not self.flush():
            return 0
        self.maybe_resume_protocol()       # may write more
        if not self.buffer:
            self.stop_writing()
            if self.empty_waiter is not None:
                self.empty_waiter.set_result(None)
            if self.closing:
                self.call_connection_lost(None)
            elif self.eof:
                self.socket_object().shutdown(_socket.SHUT_WR)
        return 0

    def write_eof(self):
        if self.deferred:
            self.settle_writes()
        if self.closing or self.eof:
            return
        self.eof = True
        if not self.buffer:
            self.socket_object().shutdown(_socket.SHUT_WR)

    def can_write_eof(self):
        return True

    cdef call_connection_lost(self, exc):
        TransportBase.call_connection_lost(self, exc)
        self.data_received = self.get_buffer = self.buffer_updated = None
        if self.empty_waiter is not None:
            self.empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))

    cpdef set_protocol(self, protocol):
        # As asyncio, nothing is looked up yet: a protocol without
        # data_received() (one that only writes) is fine until data arrives.
        self.data_received = self.get_buffer = self.buffer_updated = None
        self.buffered = isinstance(protocol, _BufferedProtocol)
        if self.buffered:
            self.get_buffer = plain_method(protocol, _GET_BUFFER, &self.get_buffer_at)
            self.buffer_updated = plain_method(protocol, _BUFFER_UPDATED, &self.buffer_updated_at)
        else:
            self.data_received = plain_method(protocol, _DATA_RECEIVED, &self.data_received_at)
        self.feeds_stream = runs_stream_reader_protocol(self.data_received)
        TransportBase.set_protocol(self, protocol)

    def _make_empty_waiter(self):
        # loop.sendfile() waits on this for the buffer to drain.
        if self.deferred:
            self.settle_writes()
        if self.empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self.empty_waiter = self.loop.create_future()
        if not self.buffer:
            self.empty_waiter.set_result(None)
        return self.empty_waiter

    def _reset_empty_waiter(self):
        self.empty_waiter = None


# ------------------------------------------------------- fd -> transport

cdef class TransportMap:
    """loop._transports: which transport owns each fd, held weakly.

    asyncio keeps a weakref.WeakValueDictionary there; this is the part of
    its API asyncio's code and tests use, in C. A fastloop transport's entry
    is a borrowed pointer in an array indexed by fd, which the transport
    clears when it is deallocated (TransportBase.__dealloc__, right after its
    weak references die): no weak reference to make per connection, and
    setting or looking up an entry costs no Python-level call. (One window
    differs: the garbage collector clears the weak references of a whole
    unreachable cycle before running its finalizers, so during those
    asyncio's entry is gone and this one is not; the loop looks nothing up
    then.) Anything else stored here (asyncio's own transports, on a loop
    subclass that makes them, or a transport entered under a second fd) is
    held by a weak reference, as asyncio holds it."""
    cdef PyObject** slots              # fd -> a live TransportBase, borrowed
    cdef Py_ssize_t capacity
    cdef dict refs                     # fd -> weakref, for other objects

    def __cinit__(self):
        self.refs = {}

    def __dealloc__(self):
        # Transports still registered hold a reference to the map, so none is.
        free(self.slots)

    cdef int claim(self, int fd, TransportBase transport) except -1:
        """Register transport as fd's owner (TransportBase.finish_setup)."""
        cdef Py_ssize_t cap
        cdef PyObject** grown
        if fd < 0:
            raise ValueError(f"invalid file descriptor: {fd}")
        if fd >= self.capacity:
            cap = max(64, self.capacity)
            while cap <= fd:
                cap *= 2
            grown = <PyObject**>realloc(self.slots, cap * sizeof(PyObject*))
            if grown == NULL:
                raise MemoryError()
            memset(grown + self.capacity, 0, (cap - self.capacity) * sizeof(PyObject*))
            self.slots = grown
            self.capacity = cap
        if self.refs:
            self.refs.pop(fd, None)
        self.slots[fd] = <PyObject*>transport
        return 0

    cdef void release(self, int fd, PyObject* transport) noexcept:
        """transport is going away: drop its entry, unless fd is another's now."""
        if 0 <= fd < self.capacity and self.slots[fd] == transport:
            self.slots[fd] = NULL

    cdef object live_fd(self, int fd):
        """fd's live transport, or None."""
        if 0 <= fd < self.capacity and self.slots[fd] != NULL:
            # (A transport being deallocated is dead already while its weak
            # references' callbacks run, before it clears its entry.)
            return <object>self.slots[fd] if refcount(self.slots[fd]) > 0 else None
        return self.live_ref(fd) if self.refs else None

    cdef int send_held_writes(self) except -1:
        """Send what each transport holds until the current callback returns."""
        cdef Py_ssize_t fd = 0
        cdef object transport
        while fd < self.capacity:          # (sending may run code that closes others)
            transport = self.live_fd(<int>fd)
            if transport is not None and (<TransportBase>transport).deferred:
                (<TransportBase>transport).settle_writes()
            fd += 1
        return 0

    cdef Py_ssize_t slot_of(self, key) except -2:
        """The slot of a key the mapping API is given, or -1 if it has none."""
        if isinstance(key, int) and 0 <= key < self.capacity:
            return key
        return -1

    cdef object live(self, key):
        """live_fd() for any key the mapping API is given."""
        cdef Py_ssize_t fd = self.slot_of(key)
        if fd >= 0:
            return self.live_fd(<int>fd)
        return self.live_ref(key) if self.refs else None

    cdef object live_ref(self, key):
        ref = self.refs.get(key)
        if ref is None:
            return None
        transport = ref()
        if transport is None:
            del self.refs[key]
        return transport

    def __getitem__(self, fd):
        transport = self.live(fd)
        if transport is None:
            raise KeyError(fd)
        return transport

    def get(self, fd, default=None):
        transport = self.live(fd)
        return default if transport is None else transport

    def __setitem__(self, fd, transport):
        cdef TransportBase own
        if isinstance(transport, TransportBase) and isinstance(fd, int) and fd >= 0:
            own = transport
            if own.registered_in == NULL:
                own.register_in(self, fd)
                return
            if own.registered_in == <PyObject*>self and own.registered_fd == fd:
                self.claim(fd, own)
                return
        # Anything else, and a transport entered under a second fd.
        self.forget(fd)
        self.refs[fd] = PyWeakref_NewRef(transport, None)

    cdef forget(self, key):
        cdef Py_ssize_t fd = self.slot_of(key)
        if fd >= 0:
            self.slots[fd] = NULL
        self.refs.pop(key, None)

    def __delitem__(self, fd):
        if self.live(fd) is None:
            raise KeyError(fd)
        self.forget(fd)

    def __contains__(self, fd):
        return self.live(fd) is not None

    def __len__(self):
        return len(self.items())

    def __iter__(self):
        return iter([fd for fd, _ in self.items()])

    def items(self):
        cdef Py_ssize_t fd
        found = [(fd, <object>self.slots[fd]) for fd in range(self.capacity)
                 if self.slots[fd] != NULL and refcount(self.slots[fd]) > 0]
        found += [(fd, t) for fd, t in ((fd, ref()) for fd, ref in self.refs.items())
                  if t is not None]
        return found


# ---------------------------------------------------------------- accepting

cdef object new_socket(family, type_, proto, int fd):
    """socket.socket(family, type_, proto, fd)."""
    if not _SOCKET_SLOTS_KNOWN or _Socket.__init__ is not _socket_init:
        return _Socket(family, type_, proto, fd)
    sock = fl_new_socket(_Socket, _SocketBase, (family, type_, proto, fd))
    sock._io_refs = 0
    sock._closed = False
    return sock


cdef close_socket(sock):
    """sock.close()."""
    if type(sock) is not _Socket or not _SOCKET_SLOTS_KNOWN or _Socket.close is not _socket_close:
        sock.close()
        return
    sock._closed = True
    if sock._io_refs <= 0:      # no makefile() stream still uses it
        _socket_base_close(sock)


cdef set_nodelay(sock):
    """TCP_NODELAY on a TCP socket, by asyncio's rule (base_events._set_nodelay)."""
    if not issubclass(type(sock), _SocketBase):     # not isinstance: mocks pass that
        _asyncio_set_nodelay(sock)
    elif tcp_by_asyncio_rule(_raw_family(sock), _raw_type(sock), _raw_proto(sock)):
        sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)


cdef bint tcp_by_asyncio_rule(family, type_, proto) except -1:
    """Whether asyncio sets TCP_NODELAY on a socket of this family, type and
    protocol (the plain ints, not the enum members socket.socket's
    properties build)."""
    return (_TCP_NODELAY is not None and family in _INET_FAMILIES
            and type_ == _SOCK_STREAM and proto == _IPPROTO_TCP)


cdef tuple accept_one(sock):
    """sock.accept() of a plain socket.socket, without its enum lookups."""
    if type(sock) is not _Socket:
        return sock.accept()
    fd, addr = sock._accept()
    conn = _Socket(_raw_family(sock), _raw_type(sock), _raw_proto(sock), fileno=fd)
    return conn, addr


cdef object accept_connections(LoopCore loop, protocol_factory, sock, server, Py_ssize_t backlog):
    """Accept up to `backlog` pending connections on the listening socket and
    start a transport for each, as asyncio's plain (non-TLS) servers do, but
    without a task per connection: the transport is made here, and the
    protocol's connection_made() runs in the next iteration.

    Returns True when accept() failed with an error that is not "nothing
    pending": asyncio's own accept code then runs, meets the same error and
    reports it (or backs off on EMFILE and friends) the way asyncio does."""
    cdef Py_ssize_t i
    if FL_HAVE_ACCEPT4 and type(sock) is _Socket and _raw_family(sock) in _INET_FAMILIES:
        return accept_inet(loop, protocol_factory, sock, server, backlog)
    cdef list batch = []
    for i in range(backlog):
        try:
            conn, addr = accept_one(sock)
            conn.setblocking(False)
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False
        except OSError:
            return True
        batch.append(start_accepted(loop, protocol_factory, conn, {'peername': addr}, server, 0))
        if _raw_fileno(sock) < 0:
            return closed_by_protocol_factory(batch)
    return False


cdef bint closed_by_protocol_factory(list batch) except -1:
    """A protocol factory closed the server while a batch of connections was
    accepted. The batch ends there (the listening socket is gone), and its
    earlier connections stay: asyncio's accept tasks call the factory and
    join the server one connection after the other, so theirs had joined
    before the close."""
    for transport in batch:
        if transport is not None:
            (<TransportBase>transport).joining = False
    return False


@cython.final
cdef class Acceptor:
    """The reader of a plain (non-TLS) server's listening socket, as
    Loop._start_serving() registers it: each wake-up accepts the pending
    connections with accept_connections(), without the Python-level call of
    the loop's _accept_connection() that asyncio registers (whose fastloop
    version runs an Acceptor too). Debug mode (its logging) and accept()
    errors run asyncio's own _accept_connection()."""
    cdef LoopCore loop
    cdef object protocol_factory
    cdef object sock
    cdef object server
    cdef Py_ssize_t backlog
    cdef tuple ssl_timeouts

    def __init__(self, LoopCore loop not None, protocol_factory, sock, server,
                 Py_ssize_t backlog, tuple ssl_timeouts):
        self.loop = loop
        self.protocol_factory = protocol_factory
        self.sock = sock
        self.server = server
        self.backlog = backlog
        self.ssl_timeouts = ssl_timeouts

    def __call__(self):
        # With a task factory, asyncio's accept tasks are the factory's to
        # make (and an eager one makes each transport at once).
        if self.loop._debug or self.loop._task_factory is not None or accept_connections(
                self.loop, self.protocol_factory, self.sock, self.server, self.backlog):
            _asyncio_accept_connection(self.loop, self.protocol_factory, self.sock, None,
                                       self.server, self.backlog, *self.ssl_timeouts)

    def __repr__(self):
        # What the reader handle's repr (slow-callback warnings) shows.
        return f"<accepting connections on {self.sock!r}>"


cdef object accept_inet(LoopCore loop, protocol_factory, sock, server, Py_ssize_t backlog):
    """accept_connections() for a TCP listener (the common server): accept4()
    makes the socket non-blocking in the same call, "nothing pending" costs
    no exception (the socket module raises BlockingIOError, whose message
    alone costs more than accepting), and the two addresses are built here."""
    cdef Py_ssize_t i
    cdef int listen_fd = sock.fileno(), fd, err
    cdef sockaddr_storage peer
    cdef socklen_t peer_len
    family = _raw_family(sock)
    # SOCK_NONBLOCK in the type: the socket object starts with timeout 0,
    # as setblocking(False) would leave it, and does not keep the flag.
    type_ = _raw_type(sock)
    nonblocking_type = type_ | SOCK_NONBLOCK
    proto = _raw_proto(sock)
    # An accepted socket has its listener's family, type and protocol, so
    # asyncio's TCP_NODELAY rule gives the same answer for all of them.
    cdef int known = SOCKNAME_KNOWN
    if tcp_by_asyncio_rule(family, type_, proto):
        known |= TCP_KNOWN
    # The transport is made here and the fd checked against loop._transports
    # in C: it can own the bare fd (TransportBase.sock_deferred).
    cdef bint deferred = type(loop.transports) is TransportMap
    cdef list batch = []
    for i in range(backlog):
        while True:
            fd = fl_accept_nonblocking(listen_fd, &peer, &peer_len)
            if fd >= 0 or errno != EINTR:
                break
        if fd < 0:
            err = errno
            return not (would_block(err) or err == ECONNABORTED)
        extra = {"peername": inet_address(&peer), "sockname": own_inet_address(fd)}
        if deferred:
            transport = start_accepted_fd(loop, protocol_factory, fd, family, nonblocking_type,
                                          proto, extra, server, known)
        else:
            try:
                conn = new_socket(family, nonblocking_type, proto, fd)
            except BaseException:
                close_fd(fd)
                raise
            transport = start_accepted(loop, protocol_factory, conn, extra, server, known)
        batch.append(transport)
        if _raw_fileno(sock) != listen_fd:
            return closed_by_protocol_factory(batch)
    return False


# A server's connections share its address: the last one is kept (tuples
# and strs are immutable), as is the text of the last IPv4 host, which a
# server's clients often share too.
cdef sockaddr_in _own_sockaddr
cdef object _own_address = None
cdef unsigned int _host_octets
cdef str _host_text = None


cdef object own_inet_address(int fd):
    """sock.getsockname() of an internet socket, or None as asyncio's
    transports record a failure."""
    global _own_address
    cdef sockaddr_storage addr
    cdef socklen_t size = sizeof(addr)
    if getsockname(fd, <sockaddr*>&addr, &size) < 0:
        return None
    if addr.ss_family != AF_INET:
        return inet_address(&addr)
    if _own_address is not None and memcmp(&_own_sockaddr, &addr, sizeof(sockaddr_in)) == 0:
        return _own_address
    _own_address = inet_address(&addr)
    memcpy(&_own_sockaddr, &addr, sizeof(sockaddr_in))
    return _own_address


cdef object inet_address(sockaddr_storage* addr):
    """The address the socket module gives for an AF_INET or AF_INET6
    sockaddr: (host, port) or (host, port, flowinfo, scope_id). The IPv4
    text is made here: glibc's inet_ntop() formats it with sprintf(), which
    cost more than the rest of the address."""
    cdef char text[64]
    cdef int n = 0, i
    cdef unsigned int octet, raw
    cdef unsigned char* octets
    cdef sockaddr_in6* in6
    global _host_text, _host_octets
    if addr.ss_family == AF_INET:
        octets = <unsigned char*>&(<sockaddr_in*>addr).sin_addr
        memcpy(&raw, octets, 4)
        if _host_text is not None and raw == _host_octets:
            return (_host_text, ntohs((<sockaddr_in*>addr).sin_port))
        for i in range(4):
            octet = octets[i]
            if octet >= 100:
                text[n] = <char>(48 + octet // 100)
                n += 1
            if octet >= 10:
                text[n] = <char>(48 + octet // 10 % 10)
                n += 1
            text[n] = <char>(48 + octet % 10)
            n += 1
            text[n] = 46                          # "."
            n += 1
        _host_text = text[:n - 1].decode("ascii")
        _host_octets = raw
        return (_host_text, ntohs((<sockaddr_in*>addr).sin_port))
    in6 = <sockaddr_in6*>addr
    inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text))
    return (text.decode("ascii"), ntohs(in6.sin6_port), ntohl(in6.sin6_flowinfo),
            in6.sin6_scope_id)


cdef start_accepted(LoopCore loop, protocol_factory, conn, dict extra, server, int known):
    """The transport of an accepted connection (None if making it failed)."""
    # asyncio makes the protocol and transport in a task of their own, so
    # each connection gets a copy of the context: so does it here.
    ctx = PyContext_CopyCurrent()
    PyContext_Enter(ctx)
    try:
        protocol = protocol_factory()
        # What Loop._make_socket_transport does, without two Python calls.
        ensure_no_transport(loop, conn)
        transport = SocketTransport.__new__(SocketTransport)
        (<SocketTransport>transport).start(loop, conn, protocol, None, extra, server, known)
        (<SocketTransport>transport).joining = True
        return transport
    except BaseException as exc:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
        # asyncio (outside debug mode, where this path is not taken) drops
        # the error silently and leaves the socket to the garbage collector;
        # close it now instead.
        conn.close()
    finally:
        PyContext_Exit(ctx)


cdef start_accepted_fd(LoopCore loop, protocol_factory, int fd, int family, int type_,
                       int proto, dict extra, server, int known):
    """start_accepted() for the bare fd of an accepted TCP connection: its
    transport is set up without a socket object (see setup_deferred()).
    The transport, or None."""
    cdef SocketTransport transport = None
    ctx = PyContext_CopyCurrent()
    PyContext_Enter(ctx)
    try:
        protocol = protocol_factory()
        live = (<TransportMap>loop.transports).live_fd(fd)
        if live is not None and not live.is_closing():
            # asyncio's fd-in-use check raises here, and its accept task
            # drops the error outside debug mode (the only mode this runs in).
            close_owned_fd(fd)
            return None
        transport = SocketTransport.__new__(SocketTransport)
        transport.setup_deferred(loop, fd, family, type_, proto, protocol, extra)
        transport.begin(protocol, None, server, known)
        transport.joining = True
        return transport
    except BaseException as exc:
        # As start_accepted(): the connection is closed (a transport that
        # took the fd closes it, and counts as closing from then on).
        if transport is None:
            close_owned_fd(fd)
        else:
            transport.closing = True
            transport.close_own_socket()
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise
    finally:
        PyContext_Exit(ctx)


cdef int close_owned_fd(int fd) except -1:
    """close() of a socket's fd, as socket.close() reports failure (a reset
    connection is not one)."""
    if close_fd(fd) < 0 and errno != ECONNRESET and errno != EINTR:
        raise os_error(errno)
    return 0


cdef ensure_no_transport(LoopCore loop, sock):
    """asyncio's check that a new transport's fd is not a live transport's."""
    transports = loop.transports
    if type(transports) is not TransportMap:      # replaced by a subclass
        return loop._ensure_fd_no_transport(sock)
    transport = (<TransportMap>transports).live(sock.fileno())
    if transport is not None and not transport.is_closing():
        raise RuntimeError(f"File descriptor {sock!r} is used by transport {transport!r}")


cdef class DatagramTransport(TransportBase):
    """A UDP or Unix datagram transport (asyncio.DatagramTransport's
    interface). Addresses are converted by the socket module: recvfrom(),
    send() and sendto() are the socket's own C methods, called directly."""

    cdef object address                # the peer given as remote_addr, or None
    cdef object sock_recvfrom          # the socket's bound methods
    cdef object sock_send
    cdef object sock_sendto

    def __init__(self, LoopCore loop not None, sock, protocol, address=None,
                 waiter=None, extra=None):
        self.setup(loop, sock, protocol, extra)
        self.address = address
        self.sock_recvfrom = sock.recvfrom
        self.sock_send = sock.send
        self.sock_sendto = sock.sendto
        self.schedule_connection_made(protocol)
        if waiter is not None:
            self.call_soon(_set_result_unless_cancelled, (waiter, None))

    cdef int on_readable(self) except -1:
        if self.conn_lost:
            return 0
        try:
            data, addr = self.sock_recvfrom(self.read_limit)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            # ICMP errors (port unreachable...) arrive here, as in asyncio.
            self.protocol.error_received(exc)
            return 0
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self.fatal_error(exc, "Fatal read error on datagram transport")
            return 0
        self.protocol.datagram_received(data, addr)
        return 0

    def sendto(self, data, addr=None):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if not _SENDS_EMPTY_DATAGRAMS and not data:
            return
        if self.address:
            if addr not in (None, self.address):
                raise ValueError(f"Invalid address: must be None or {self.address}")
            addr = self.address
        # asyncio drops a datagram once the connection is lost only on a
        # connected transport; an unconnected one still sends until
        # connection_lost() has run and then raises AttributeError from its
        # own error path (a known asyncio bug, python/cpython PR 28110). Once
        # the socket is gone, the datagram is dropped the same way here.
        if self.conn_lost and (self.address or self.detached):
            self.count_lost_write()
            return
        if not self.buffer:
            # Try to send it right away.
            try:
                if self.extra["peername"]:
                    self.sock_send(data)
                else:
                    self.sock_sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                self.start_writing()
            except OSError as exc:
                self.protocol.error_received(exc)
                return
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                self.fatal_error(exc, "Fatal write error on datagram transport")
                return
        # Buffer an immutable copy.
        self.buffer.append((bytes(data), addr))
        self.buffer_size += len(data) + _DATAGRAM_OVERHEAD
        self.maybe_pause_protocol()

    cdef int on_writable(self) except -1:
        cdef list buffer = self.buffer
        while buffer:
            data, addr = buffer.pop(0)
            self.buffer_size -= len(data) + _DATAGRAM_OVERHEAD
            try:
                if self.extra["peername"]:
                    self.sock_send(data)
                else:
                    self.sock_sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                buffer.insert(0, (data, addr))       # try again later
                self.buffer_size += len(data) + _DATAGRAM_OVERHEAD
                break
            except OSError as exc:
                self.protocol.error_received(exc)
                return 0
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                self.fatal_error(exc, "Fatal write error on datagram transport")
                return 0
        self.maybe_resume_protocol()                 # may queue more
        if not buffer:
            self.stop_writing()
            if self.closing:
                self.call_connection_lost(None)
        return 0

    cdef call_connection_lost(self, exc):
        TransportBase.call_connection_lost(self, exc)
        self.sock_recvfrom = self.sock_send = self.sock_sendto = None

    @property
    def _address(self):                # as asyncio's transport has them
        return self.address

    @property
    def _buffer_size(self):
        return self.buffer_size


# ---------------------------------------------------------------- asyncio.Transport

# Code checks isinstance(transport, asyncio.Transport), and asyncio itself
# requires a transports._FlowControlMixin for loop.sendfile()'s fallback:
# the transports stand in for those classes (_originals.stand_in_for()). Every
# slot they declare (_extra, _loop, _protocol_paused, _high_water,
# _low_water) is shadowed above by the transport's own descriptor.
cdef _adopt_asyncio_mro(type cls, object interface):
    class Shape(_transports._FlowControlMixin, interface):
        __slots__ = ()
    stand_in_for(cls, Shape.__mro__[1:-1])
    for name in _INHERITED_IN_ASYNCIO:
        # getattr() on the class: fastloop's own method descriptor, found
        # before asyncio's classes in the MRO.
        shadow_with(cls, name, PatchableMethod(Shape, name, getattr(cls, name)))


# The public methods asyncio's selector transports (stream and datagram) do
# not define but inherit from asyncio's base classes, so that a patch of
# asyncio.Transport.get_extra_info (as test suites make with mock.patch)
# reaches them. fastloop's transports define their own: each gets a
# PatchableMethod, which gives asyncio's method in its place when patched.
cdef tuple _INHERITED_IN_ASYNCIO = (
    "get_extra_info", "get_write_buffer_limits", "set_write_buffer_limits")


cdef class PatchableMethod:
    """A transport's own method standing for one asyncio's transports
    inherit: looked up on an instance, it is the transport's method while
    asyncio's classes still have their own, and whatever asyncio's lookup
    finds (bound as Python would bind it) once they have been patched."""
    cdef type shape        # a class with asyncio's transport MRO and nothing of its own
    cdef str name
    cdef object own        # the transport's method (a method descriptor)
    cdef object asyncio_original

    def __cinit__(self, type shape, str name, own):
        self.shape = shape
        self.name = name
        self.own = own
        self.asyncio_original = <object>_PyType_Lookup(<PyTypeObject*>shape, name)

    def __get__(self, obj, objtype):
        # The type's method cache makes the look-up a few loads.
        cdef PyObject* found = _PyType_Lookup(<PyTypeObject*>self.shape, self.name)
        if found is NULL or <object>found is self.asyncio_original:
            return self.own.__get__(obj, objtype)
        bind = getattr(type(<object>found), "__get__", None)
        return <object>found if bind is None else bind(<object>found, obj, objtype)


cdef int shadow_with(type cls, str name, value) except -1:
    """Set cls.name on a C type (whose attributes Python code cannot set)."""
    (<dict>(<_TypeDict*>cls).tp_dict)[name] = value
    PyType_Modified(cls)
    return 0


_adopt_asyncio_mro(SocketTransport, _transports.Transport)
_adopt_asyncio_mro(DatagramTransport, _transports.DatagramTransport)


def _send_held_writes_before_fork():
    # os.fork() in a callback that wrote would copy the writes held until it
    # returns into the child, which sends them again when its copy of the
    # callback returns: send them now, as asyncio's write() already did.
    # Only this thread's loop: another thread's may be inside a send.
    loop = _get_running_loop()
    if loop is not None:
        transports = getattr(loop, "_transports", None)
        if type(transports) is TransportMap:
            (<TransportMap>transports).send_held_writes()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_send_held_writes_before_fork)
