"""The socket operations (loop.sock_recv, sock_recv_into, sock_sendall) in C.

Each call first tries the system call; only if it would block does it make
a future and register a SockWait as the fd's reader or writer. SockWait.run()
retries the call when the poller reports the fd ready and completes the
future. On completion the handle is released but its interest stays
registered with the poller for the same socket (LoopCore.release_io_handle),
so a loop of sock_recv()/sock_sendall() on one socket costs no epoll_ctl()
calls. The Python-level coroutines (loop.py) keep asyncio's signatures,
argument checks and cancellation behaviour; they call in here for plain
socket.socket objects.
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.errno cimport errno, EINTR

from fastloop._futures cimport future_done, future_set_result
from fastloop._handles cimport Handle
from fastloop._core cimport LoopCore
from fastloop._poller cimport READABLE, WRITABLE
from fastloop._recvbuf cimport READ_SIZE, read_some, received
from fastloop._sysio cimport ssize_t, recv, send, FL_MSG_NOSIGNAL, os_error, would_block

cdef extern from "Python.h":
    bint PyObject_CheckBuffer(object obj)


cdef enum Op:
    RECV = 1
    RECV_INTO = 2
    SENDALL = 3


cdef object try_recv(object sock, int fd, Py_ssize_t n):
    """recv() once: bytes, None if it would block; raises OSError."""
    cdef ssize_t got
    if n > READ_SIZE:
        # Rare: let the socket module size the bytes object.
        try:
            return sock.recv(n)
        except (BlockingIOError, InterruptedError):
            return None
    while True:
        got = read_some(fd, n)
        if got >= 0 or errno != EINTR:
            break
    if got < 0:
        if would_block(errno):
            return None
        raise os_error(errno)
    return received(got)


cdef Py_ssize_t writable_size(object buf):
    """The size of buf's writable, contiguous buffer (what recv_into()
    accepts), or -1 without an exception if it has none."""
    cdef Py_buffer view
    cdef Py_ssize_t size
    if not PyObject_CheckBuffer(buf):
        return -1
    try:
        PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    except BufferError:
        return -1
    size = view.len
    PyBuffer_Release(&view)
    return size


cdef object try_recv_into(object buf, int fd):
    """recv() into buf once: the count, None if it would block."""
    cdef Py_buffer view
    cdef ssize_t got
    cdef int err
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
    while True:
        got = recv(fd, view.buf, view.len, 0)
        if got >= 0 or errno != EINTR:
            err = errno
            break
    PyBuffer_Release(&view)
    if got < 0:
        if would_block(err):
            return None
        raise os_error(err)
    return got


cdef Py_ssize_t try_send(object data, int fd, Py_ssize_t start, Py_ssize_t* total) except -2:
    """send() from data[start:] once: bytes sent, -1 if it would block;
    *total is set to the size of data."""
    cdef Py_buffer view
    cdef ssize_t sent
    cdef int err
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    total[0] = view.len
    if start >= view.len:
        PyBuffer_Release(&view)
        return 0
    while True:
        sent = send(fd, <char*>view.buf + start, view.len - start, FL_MSG_NOSIGNAL)
        if sent >= 0 or errno != EINTR:
            err = errno
            break
    PyBuffer_Release(&view)
    if sent < 0:
        if would_block(err):
            return -1
        raise os_error(err)
    return sent


cdef class SockWait(Handle):
    """A pending sock_* call: the fd's reader (recv) or writer (sendall)."""
    cdef LoopCore loop_core
    cdef object sock
    cdef object fut
    cdef object target        # recv_into's buffer, sendall's data
    cdef Py_ssize_t nbytes    # recv's size, or sendall's progress
    cdef int fd
    cdef Op op

    cdef int run(self) except -1:
        cdef object result
        cdef Py_ssize_t sent, total
        fut = self.fut
        if future_done(fut):                 # cancelled meanwhile
            self.finish()
            return 0
        try:
            if self.op == RECV:
                result = try_recv(self.sock, self.fd, self.nbytes)
            elif self.op == RECV_INTO:
                result = try_recv_into(self.target, self.fd)
            else:
                sent = try_send(self.target, self.fd, self.nbytes, &total)
                if sent < 0:
                    return 0
                self.nbytes += sent
                if self.nbytes < total:
                    return 0
                result = False               # done (None means "would block")
        except BaseException as exc:
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self.finish()
            fut.set_exception(exc)
            return 0
        if result is None:
            return 0
        self.finish()
        future_set_result(fut, None if self.op == SENDALL else result)
        return 0

    cdef finish(self):
        # Leave the interest registered for this socket's next operation.
        self.loop_core.release_io_handle(
            self.fd, WRITABLE if self.op == SENDALL else READABLE, self.sock)
        self.fut = self.target = None


cdef object wait(LoopCore loop, object sock, int fd, Op op, object target, Py_ssize_t nbytes):
    cdef int kind = WRITABLE if op == SENDALL else READABLE
    cdef SockWait handle
    if loop.closed:
        raise RuntimeError("Event loop is closed")
    if not loop.has_left_interest(fd, kind, sock):
        loop._ensure_fd_no_transport(fd)
    fut = loop.new_future()
    handle = SockWait.__new__(SockWait)
    handle._loop = loop
    handle._args = ()
    handle.loop_core = loop
    handle.sock = sock
    handle.fut = fut
    handle.target = target
    handle.nbytes = nbytes
    handle.fd = fd
    handle.op = op
    loop.set_owned_io_handle(fd, kind, handle, sock)
    return fut


def sock_recv(LoopCore loop, sock, Py_ssize_t n):
    """The data, or a future of it."""
    cdef int fd = sock.fileno()
    if n <= 0 or fd < 0:
        # The socket module's error, or its b"" for n == 0 at once (no
        # system call, so nothing to wait for).
        return sock.recv(n)
    data = try_recv(sock, fd, n)
    if data is not None:
        return data
    return wait(loop, sock, fd, RECV, None, n)


def sock_recv_into(LoopCore loop, sock, buf):
    """The byte count, or a future of it."""
    cdef int fd = sock.fileno()
    if fd < 0 or writable_size(buf) <= 0:
        # The socket module's TypeError for a buffer it cannot fill, or its
        # 0 for an empty one at once.
        return sock.recv_into(buf)
    count = try_recv_into(buf, fd)
    if count is not None:
        return count
    return wait(loop, sock, fd, RECV_INTO, buf, 0)


cdef inline int settle_held_writes(LoopCore loop) except -1:
    """Send what transports hold until the running callback returns (see
    SocketTransport.settle_writes): a sock_sendall() on a transport's own
    socket then comes after its write()s, as in asyncio, which sent them."""
    if loop.settlers_head is not None:
        loop.settle_writes()
    return 0


def send_held_writes(LoopCore loop):
    settle_held_writes(loop)


def sock_sendall(LoopCore loop, sock, data):
    """None, or a future that completes when all of data is sent."""
    cdef int fd = sock.fileno()
    cdef Py_ssize_t sent, total
    settle_held_writes(loop)
    if fd < 0 or not PyObject_CheckBuffer(data):
        return sock.send(data)               # the socket module's error
    sent = try_send(data, fd, 0, &total)
    if sent < 0:
        sent = 0
    elif sent == total:
        return None
    # While it waits, data is held by a memoryview (as asyncio holds it):
    # a bytearray cannot be resized under the send.
    return wait(loop, sock, fd, SENDALL, memoryview(data), sent)


def abandon(LoopCore loop, int fd, fut):
    """A sock_* call's future was cancelled: unregister its handle from fd
    (where it waited: the socket may be closed by now), as asyncio's done
    callback does, unless something else replaced it."""
    cdef int kind
    if fd < 0:
        return
    for kind in (READABLE, WRITABLE):
        handle = loop.io_handle_of(fd, kind)
        if isinstance(handle, SockWait) and (<SockWait>handle).fut is fut:
            (<SockWait>handle).fut = (<SockWait>handle).target = None
            loop.clear_io_handle(fd, kind)
