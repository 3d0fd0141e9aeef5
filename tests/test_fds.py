"""File descriptor watching: add_reader/add_writer/remove_reader/remove_writer
on real sockets and pipes, the order of I/O callbacks within an iteration,
and a loop used in a forked child.

Every test runs on stdlib asyncio and on fastloop (see conftest.py) and must
behave the same on both.
"""
import asyncio
import errno
import fcntl
import os
import socket
import threading
import time
import warnings

import pytest

WAIT = 10.0


class FileLike:
    """An object that is not an int but has fileno(), as selectors accepts."""

    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


class BadFileno:
    def __init__(self, value):
        self.value = value

    def fileno(self):
        return self.value


@pytest.fixture
def pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    fds = [r, w]
    yield fds
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _read(src):
    if isinstance(src, socket.socket):
        return src.recv(65536)
    return os.read(src, 65536)


def _write(dst, data):
    if isinstance(dst, socket.socket):
        return dst.send(data)
    return os.write(dst, data)


def _endpoints(kind, sockpair, pipe):
    """(read end, write end, what to register for reading, for writing)."""
    if kind.startswith("socket"):
        r, w = sockpair
    else:
        r, w = pipe
    if kind == "socket-int":
        return r, w, r.fileno(), w.fileno()
    if kind == "socket-object":
        return r, w, r, w
    if kind == "pipe-int":
        return r, w, r, w
    return r, w, FileLike(r), FileLike(w)      # pipe-filelike


KINDS = ["socket-int", "socket-object", "pipe-int", "pipe-filelike"]


def _run_until(loop, fut):
    return loop.run_until_complete(asyncio.wait_for(fut, WAIT))


def _iterations(loop, n):
    """Run exactly n more loop iterations (each sleep(0) is one round trip)."""
    async def spin():
        for _ in range(n):
            await asyncio.sleep(0)
    loop.run_until_complete(spin())


# ------------------------------------------------------- readers and writers

@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_add_reader(loop, sockpair, pipe, kind):
    r, w, reg, _ = _endpoints(kind, sockpair, pipe)
    fut = loop.create_future()

    def on_readable(*args):
        data = _read(r)
        loop.remove_reader(reg)
        fut.set_result((args, data))

    loop.add_reader(reg, on_readable, "arg1", 2)
    _write(w, b"hello")
    assert _run_until(loop, fut) == (("arg1", 2), b"hello")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("kind", KINDS)
def test_add_writer(loop, sockpair, pipe, kind):
    r, w, _, reg = _endpoints(kind, sockpair, pipe)
    fut = loop.create_future()

    def on_writable(*args):
        _write(w, b"written")
        loop.remove_writer(reg)
        fut.set_result(args)

    loop.add_writer(reg, on_writable, "x", None)
    assert _run_until(loop, fut) == ("x", None)
    assert _read(r) == b"written"


@pytest.mark.timeout(30)
def test_add_reader_returns_none_and_registration_by_int_or_object_is_shared(loop, sockpair):
    a, b = sockpair
    assert loop.add_reader(a, lambda: None) is None
    # The fd is what counts: the object and its fileno() are the same entry.
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a) is False
    assert loop.add_writer(a.fileno(), lambda: None) is None
    assert loop.remove_writer(FileLike(a.fileno())) is True
    assert loop.remove_writer(a) is False


@pytest.mark.timeout(30)
def test_add_reader_replaces_callback(loop, sockpair):
    a, b = sockpair
    calls = []
    fut = loop.create_future()

    def old():
        calls.append("old")

    def new(arg):
        calls.append(arg)
        a.recv(100)
        loop.remove_reader(a)
        fut.set_result(None)

    loop.add_reader(a, old)
    loop.add_reader(a, new, "new")
    b.send(b"x")
    _run_until(loop, fut)
    assert calls == ["new"]


@pytest.mark.timeout(30)
def test_add_writer_replaces_callback(loop, sockpair):
    a, b = sockpair
    calls = []
    fut = loop.create_future()

    def new():
        calls.append("new")
        loop.remove_writer(a)
        fut.set_result(None)

    loop.add_writer(a, calls.append, "old")
    loop.add_writer(a, new)
    _run_until(loop, fut)
    _iterations(loop, 3)
    assert calls == ["new"]


@pytest.mark.timeout(30)
def test_replace_reader_inside_its_callback(loop, sockpair):
    a, b = sockpair
    calls = []
    fut = loop.create_future()

    def first():
        calls.append("first")
        # Do not read: the data is still there for the new reader.
        loop.add_reader(a, second)

    def second():
        calls.append("second")
        assert a.recv(100) == b"data"
        loop.remove_reader(a)
        fut.set_result(None)

    loop.add_reader(a, first)
    b.send(b"data")
    _run_until(loop, fut)
    assert calls == ["first", "second"]


@pytest.mark.timeout(30)
def test_remove_reader_writer_return_values(loop, sockpair):
    a, b = sockpair
    # Nothing registered.
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    assert loop.remove_reader(b.fileno()) is False
    # Registered, then removed once.
    loop.add_reader(a, lambda: None)
    assert loop.remove_writer(a) is False        # only a reader on a
    assert loop.remove_reader(a) is True
    assert loop.remove_reader(a) is False
    loop.add_writer(a, lambda: None)
    assert loop.remove_reader(a) is False        # only a writer on a
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a) is False
    # Both, removed independently.
    loop.add_reader(b, lambda: None)
    loop.add_writer(b, lambda: None)
    assert loop.remove_reader(b) is True
    assert loop.remove_reader(b) is False
    assert loop.remove_writer(b) is True
    assert loop.remove_writer(b) is False


def test_remove_on_closed_loop_returns_false(loop, sockpair):
    a, b = sockpair
    loop.add_reader(a, lambda: None)
    loop.add_writer(b, lambda: None)
    loop.close()
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(b) is False
    assert loop.remove_reader(b) is False
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_reader(a, lambda: None)
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.add_writer(a, lambda: None)


BAD_FDS = [
    (-1, "Invalid file descriptor: -1"),
    (-5, "Invalid file descriptor: -5"),
    (BadFileno(-1), "Invalid file descriptor: -1"),
    (object(), "Invalid file object: <object object at"),
    (BadFileno("not a number"), "Invalid file object: "),
    (BadFileno(None), "Invalid file object: "),
    ("7", "Invalid file object: '7'"),
    (3.0, "Invalid file object: 3.0"),
]


@pytest.mark.parametrize("method", ["add_reader", "add_writer"])
def test_add_bad_fd(loop, method):
    for bad, message in BAD_FDS:
        with pytest.raises(ValueError) as info:
            getattr(loop, method)(bad, lambda: None)
        assert str(info.value).startswith(message), (bad, str(info.value))
    # Nothing was registered.
    assert loop.run_until_complete(asyncio.sleep(0, "still fine")) == "still fine"


@pytest.mark.parametrize("method", ["remove_reader", "remove_writer"])
def test_remove_bad_fd(loop, method):
    for bad, message in BAD_FDS:
        with pytest.raises(ValueError) as info:
            getattr(loop, method)(bad)
        assert str(info.value).startswith(message), (bad, str(info.value))


TOO_LARGE_FDS = [2 ** 31, 2 ** 40, 2 ** 64, BadFileno(2 ** 31)]


def _refused_registration_story(loop, path):
    """add_reader()/add_writer() of a regular file (epoll refuses those),
    what stays registered, and a socket that then takes its fd number."""
    import selectors
    seen = []
    a, b = socket.socketpair()      # (made first: it must not take the file's number)
    try:
        with open(path, "rb") as f:
            fd = f.fileno()
            for add in (loop.add_reader, loop.add_writer):
                try:
                    add(fd, print)
                    seen.append("added")
                except OSError as exc:
                    seen.append(type(exc).__name__)
            try:
                seen.append(("key", loop._selector.get_key(fd).events))
            except KeyError:
                seen.append("no key")
            seen.append(loop.remove_reader(fd))
            seen.append(loop.remove_writer(fd))
        os.dup2(a.fileno(), fd)     # a socket under the file's number
        try:
            received = loop.create_future()
            loop.add_reader(fd, lambda: received.done() or received.set_result(os.read(fd, 10)))
            seen.append(("key", loop._selector.get_key(fd).events == selectors.EVENT_READ))
            b.send(b"ping")
            seen.append(loop.run_until_complete(asyncio.wait_for(received, 10)))
            seen.append(loop.remove_reader(fd))
        finally:
            os.close(fd)
    finally:
        a.close()
        b.close()
    return seen


@pytest.mark.timeout(30)
def test_a_registration_the_poller_refuses_leaves_nothing_registered(loop, impl, tmp_path):
    # epoll refuses a regular file (EPERM): asyncio's selector then keeps no
    # key for the fd, so nothing is registered for the next file under that
    # number (before, fastloop kept the refused interest, and a socket that
    # took the number and only read had EPOLLOUT too: a busy loop).
    import selectors
    path = tmp_path / "regular"
    path.write_bytes(b"data")
    seen = _refused_registration_story(loop, path)
    if impl == "asyncio" or impl == "fastloop-epoll":
        assert seen == ["PermissionError", "PermissionError", "no key", False, False,
                        ("key", True), b"ping", True]
    else:
        # Other pollers take regular files, as the matching selector does.
        name = {"poll": "PollSelector", "kqueue": "KqueueSelector"}[impl.split("-", 1)[1]]
        if not hasattr(selectors, name):
            pytest.skip(f"no selectors.{name} to compare with")
        twin = asyncio.SelectorEventLoop(getattr(selectors, name)())
        try:
            assert seen == _refused_registration_story(twin, path)
        finally:
            twin.close()


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_a_number_past_any_fd(loop, kind):
    # asyncio's selector takes it, and its poller cannot: OverflowError when
    # registering; looking it up finds nothing.
    for fd in TOO_LARGE_FDS:
        with pytest.raises(OverflowError, match="^Python int too large to convert to C int$"):
            getattr(loop, "add_" + kind)(fd, lambda: None)
        assert getattr(loop, "remove_" + kind)(fd) is False
        with pytest.raises(KeyError):
            loop._selector.get_key(fd)
    assert loop.run_until_complete(asyncio.sleep(0, "still fine")) == "still fine"


def test_add_reader_closed_socket_object(loop):
    a, b = socket.socketpair()
    a.close()
    b.close()
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        loop.add_reader(a, lambda: None)
    with pytest.raises(ValueError, match="Invalid file descriptor: -1"):
        loop.remove_reader(a)


@pytest.mark.parametrize("kind", ["reader", "writer"])
def test_remove_socket_closed_after_registration(loop, kind):
    # selectors finds a closed file object it registered by identity, so
    # asyncio can unregister a socket after closing it: code that closes a
    # socket before removing its reader relies on this.
    a, b = socket.socketpair()
    try:
        getattr(loop, "add_" + kind)(a, lambda: None)
        a.close()
        assert getattr(loop, "remove_" + kind)(a) is True
        # Now truly gone: a later reader on the same fd number works.
        c, d = socket.socketpair()
        try:
            fut = loop.create_future()
            if kind == "reader":
                loop.add_reader(c, lambda: fut.done() or fut.set_result(c.recv(10)))
                d.send(b"new")
                expected = b"new"
            else:
                loop.add_writer(c, lambda: fut.done() or fut.set_result("writable"))
                expected = "writable"
            assert _run_until(loop, fut) == expected
            assert getattr(loop, "remove_" + kind)(c) is True
        finally:
            c.close()
            d.close()
    finally:
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_reader_and_writer_on_same_fd(loop, sockpair):
    a, b = sockpair
    events = []
    fut = loop.create_future()

    def check_done():
        if "read" in events and "write" in events and not fut.done():
            fut.set_result(None)

    def on_read():
        events.append("read")
        assert a.recv(100) == b"ping"
        loop.remove_reader(a)
        check_done()

    def on_write():
        events.append("write")
        a.send(b"pong")
        loop.remove_writer(a)
        check_done()

    loop.add_reader(a, on_read)
    loop.add_writer(a, on_write)
    b.send(b"ping")
    _run_until(loop, fut)
    assert sorted(events) == ["read", "write"]
    assert b.recv(100) == b"pong"


@pytest.mark.timeout(30)
def test_removing_writer_keeps_reader(loop, sockpair):
    a, b = sockpair
    writes = []
    fut = loop.create_future()
    loop.add_writer(a, writes.append, "w")
    loop.add_reader(a, lambda: fut.set_result(a.recv(100)) if not fut.done() else None)
    assert loop.remove_writer(a) is True
    b.send(b"still reading")
    assert _run_until(loop, fut) == b"still reading"
    assert loop.remove_reader(a) is True
    assert writes == []


@pytest.mark.timeout(30)
def test_removing_reader_keeps_writer(loop, sockpair):
    a, b = sockpair
    reads = []
    fut = loop.create_future()
    loop.add_reader(a, reads.append, "r")
    loop.add_writer(a, lambda: None if fut.done() else fut.set_result("writable"))
    assert loop.remove_reader(a) is True
    b.send(b"unread data")                      # would wake the reader
    assert _run_until(loop, fut) == "writable"
    _iterations(loop, 3)
    assert loop.remove_writer(a) is True
    assert reads == []


@pytest.mark.timeout(30)
def test_remove_reader_inside_its_callback(loop, sockpair):
    a, b = sockpair
    calls = []
    fut = loop.create_future()

    def on_read():
        calls.append(1)
        # Leave the data unread: a reader still registered would fire again.
        fut.set_result(loop.remove_reader(a))

    loop.add_reader(a, on_read)
    b.send(b"x")
    assert _run_until(loop, fut) is True
    _iterations(loop, 5)
    assert calls == [1]
    assert a.recv(10) == b"x"


@pytest.mark.timeout(30)
def test_remove_writer_inside_its_callback(loop, sockpair):
    a, b = sockpair
    calls = []
    fut = loop.create_future()

    def on_write():
        calls.append(1)
        fut.set_result(loop.remove_writer(a))

    loop.add_writer(a, on_write)
    assert _run_until(loop, fut) is True
    _iterations(loop, 5)
    assert calls == [1]


@pytest.mark.timeout(30)
def test_reader_is_level_triggered(loop, sockpair):
    a, b = sockpair
    calls = []
    fut = loop.create_future()

    def on_read():
        calls.append(1)
        if len(calls) == 5:          # only now consume the data
            assert a.recv(100) == b"x"
            loop.remove_reader(a)
            fut.set_result(None)

    loop.add_reader(a, on_read)
    b.send(b"x")
    _run_until(loop, fut)
    assert len(calls) == 5


@pytest.mark.timeout(30)
def test_writer_waits_for_buffer_space(loop, sockpair):
    a, b = sockpair
    # Fill a's send buffer (and b's receive buffer) completely.
    chunk = b"\0" * 65536
    sent = 0
    while True:
        try:
            sent += a.send(chunk)
        except BlockingIOError:
            break
    assert sent > 0
    calls = []
    fut = loop.create_future()

    def on_write():
        calls.append(1)
        loop.remove_writer(a)
        fut.set_result(None)

    loop.add_writer(a, on_write)
    _iterations(loop, 5)
    assert calls == []               # no room: not writable
    received = 0
    while received < sent:
        try:
            received += len(b.recv(1 << 20))
        except BlockingIOError:
            break
    assert received == sent
    _run_until(loop, fut)
    assert calls == [1]


@pytest.mark.timeout(30)
def test_reader_callback_exception_goes_to_handler(loop, sockpair):
    a, b = sockpair
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    calls = []
    fut = loop.create_future()

    def on_read():
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("reader failed")
        assert a.recv(10) == b"x"
        loop.remove_reader(a)
        fut.set_result(None)

    loop.add_reader(a, on_read)
    b.send(b"x")
    _run_until(loop, fut)
    # The reader stayed registered after the exception and fired again.
    assert calls == [1, 1]
    assert len(contexts) == 1
    assert isinstance(contexts[0]["exception"], ValueError)
    assert contexts[0]["message"].startswith("Exception in callback ")
    assert "handle" in contexts[0]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_base_exception_in_reader_leaves_loop(loop, sockpair, exc_type):
    a, b = sockpair
    calls = []

    def on_read():
        calls.append(1)
        if len(calls) == 1:
            raise exc_type()
        assert a.recv(10) == b"x"
        loop.remove_reader(a)
        loop.stop()

    loop.add_reader(a, on_read)
    b.send(b"x")
    with pytest.raises(exc_type):
        loop.run_forever()
    assert calls == [1]
    assert not loop.is_running()
    # Still registered: the next run delivers the (still pending) data.
    loop.run_forever()
    assert calls == [1, 1]


@pytest.mark.timeout(30)
def test_reader_removed_by_earlier_callback_in_same_iteration(loop):
    # Both fds are ready in the same iteration; whichever reader runs first
    # removes the other, whose already-polled event must then be dropped.
    p1, p2 = socket.socketpair(), socket.socketpair()
    try:
        calls = []
        socks = {"r1": p1[0], "r2": p2[0]}

        def on_read(name):
            calls.append(name)
            for other, sock in socks.items():
                loop.remove_reader(sock)
            loop.call_soon(loop.stop)

        loop.add_reader(p1[0], on_read, "r1")
        loop.add_reader(p2[0], on_read, "r2")
        p1[1].send(b"x")
        p2[1].send(b"x")
        loop.call_later(WAIT, loop.stop)         # a bound, not expected to fire
        loop.run_forever()
        _iterations(loop, 3)
        assert len(calls) == 1 and calls[0] in socks
    finally:
        for s in p1 + p2:
            s.close()


def test_close_leaves_registered_fds_open(loop, sockpair):
    a, b = sockpair
    loop.add_reader(a, lambda: None)
    loop.add_writer(b, lambda: None)
    loop.close()
    b.send(b"still open")
    assert a.recv(100) == b"still open"
    os.fstat(a.fileno())
    os.fstat(b.fileno())


@pytest.mark.timeout(30)
def test_debug_slow_io_callback_warning(loop, sockpair, caplog):
    import logging
    import re
    caplog.set_level(logging.WARNING, logger="asyncio")
    a, b = sockpair
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01
    fut = loop.create_future()

    def slow_reader():
        time.sleep(0.05)
        a.recv(10)
        loop.remove_reader(a)
        fut.set_result(None)

    loop.add_reader(a, slow_reader)
    b.send(b"x")
    _run_until(loop, fut)
    messages = [r.getMessage() for r in caplog.records
                if r.name == "asyncio" and r.levelno == logging.WARNING
                and "<locals>.slow_reader(" in r.getMessage()]
    assert len(messages) == 1, messages
    assert re.fullmatch(r"Executing <Handle .*slow_reader.*> took \d+\.\d{3} seconds",
                        messages[0], re.S), messages[0]


# ---------------------------------------------------------------- EOF, errors

@pytest.mark.timeout(30)
def test_reader_fires_on_socket_eof(loop, sockpair):
    a, b = sockpair
    fut = loop.create_future()

    def on_read():
        data = a.recv(100)
        if data == b"":
            loop.remove_reader(a)
            fut.set_result("eof")

    loop.add_reader(a, on_read)
    b.send(b"last words")
    b.shutdown(socket.SHUT_WR)
    assert _run_until(loop, fut) == "eof"


@pytest.mark.timeout(30)
def test_reader_fires_when_peer_socket_closed(loop, sockpair):
    a, b = sockpair
    fut = loop.create_future()
    b.close()

    def on_read():
        loop.remove_reader(a)
        fut.set_result(a.recv(100))

    loop.add_reader(a, on_read)
    assert _run_until(loop, fut) == b""


@pytest.mark.timeout(30)
def test_reader_fires_on_pipe_eof(loop, pipe):
    # A pipe whose write end is closed reports only a hang-up (no POLLIN on
    # Linux): that must still wake its reader.
    r, w = pipe
    os.close(w)
    pipe.remove(w)
    fut = loop.create_future()

    def on_read():
        loop.remove_reader(r)
        fut.set_result(os.read(r, 100))

    loop.add_reader(r, on_read)
    assert _run_until(loop, fut) == b""


@pytest.mark.timeout(30)
def test_writer_fires_on_broken_pipe(loop, pipe):
    # The read end is gone: the writer is woken, and writing fails with EPIPE
    # (Python ignores SIGPIPE).
    r, w = pipe
    os.close(r)
    pipe.remove(r)
    fut = loop.create_future()

    def on_write():
        loop.remove_writer(w)
        try:
            os.write(w, b"x")
        except BrokenPipeError as exc:
            fut.set_result(exc.errno)
        else:
            fut.set_result(None)

    loop.add_writer(w, on_write)
    assert _run_until(loop, fut) == errno.EPIPE


# ---------------------------------------------------------------- many fds

@pytest.mark.timeout(60)
def test_many_socketpairs(loop):
    n = 200
    pairs = [socket.socketpair() for _ in range(n)]
    try:
        received = {}
        fut = loop.create_future()

        def on_read(i, sock):
            received[i] = sock.recv(100)
            assert loop.remove_reader(sock) is True
            if len(received) == n:
                fut.set_result(None)

        for i, (a, b) in enumerate(pairs):
            a.setblocking(False)
            loop.add_reader(a, on_read, i, a)
        for i, (a, b) in enumerate(pairs):
            b.send(b"msg %d" % i)
        _run_until(loop, fut)
        assert received == {i: b"msg %d" % i for i in range(n)}
    finally:
        for a, b in pairs:
            a.close()
            b.close()


@pytest.mark.timeout(60)
def test_many_socketpairs_readers_and_writers_repeatedly(loop):
    # Every pair echoes a counter 20 times: readers and writers are added and
    # removed over and over on 50 fds at once.
    n, rounds = 50, 20
    pairs = [socket.socketpair() for _ in range(n)]
    try:
        for a, b in pairs:
            a.setblocking(False)
            b.setblocking(False)
        counts = [0] * n
        finished = set()
        fut = loop.create_future()

        def send(i):
            a, b = pairs[i]
            loop.remove_writer(a)
            a.send(b"%d" % counts[i])
            loop.add_reader(b, receive, i)

        def receive(i):
            a, b = pairs[i]
            assert b.recv(100) == b"%d" % counts[i]
            loop.remove_reader(b)
            counts[i] += 1
            if counts[i] == rounds:
                finished.add(i)
                if len(finished) == n:
                    fut.set_result(None)
            else:
                loop.add_writer(a, send, i)

        for i, (a, b) in enumerate(pairs):
            loop.add_writer(a, send, i)
        _run_until(loop, fut)
        assert counts == [rounds] * n
    finally:
        for a, b in pairs:
            a.close()
            b.close()


@pytest.mark.timeout(30)
def test_high_fd_number(loop, sockpair):
    a, b = sockpair
    try:
        high = fcntl.fcntl(a.fileno(), fcntl.F_DUPFD_CLOEXEC, 3000)
    except OSError as exc:
        pytest.skip(f"cannot get a high fd: {exc}")
    try:
        assert high >= 3000
        fut = loop.create_future()

        def on_read():
            loop.remove_reader(high)
            fut.set_result(os.read(high, 100))

        loop.add_reader(high, on_read)
        b.send(b"high")
        assert _run_until(loop, fut) == b"high"
    finally:
        os.close(high)


# ---------------------------------------------------------------- ordering

@pytest.mark.timeout(30)
def test_order_within_iteration(loop, sockpair):
    # One iteration runs: the callbacks ready before the poll (FIFO), then the
    # I/O callbacks the poll reported, then the timers that were due. What
    # those schedule waits for the next iteration, in the order scheduled.
    a, b = sockpair
    order = []

    def ready_cb():
        order.append("ready")
        loop.call_soon(order.append, "scheduled by ready")

    def on_read():
        order.append("reader")
        assert a.recv(100) == b"data"
        loop.remove_reader(a)
        loop.call_soon(order.append, "scheduled by reader")

    def timer_cb():
        order.append("timer")
        loop.call_soon(order.append, "scheduled by timer")
        loop.call_soon(loop.stop)

    loop.add_reader(a, on_read)
    loop.call_soon(ready_cb)                   # scheduled before the data arrives
    b.send(b"data")
    loop.call_at(loop.time() - 1, timer_cb)    # due at the first poll
    loop.run_forever()
    assert order == [
        "ready", "reader", "timer",                                   # iteration 1
        "scheduled by ready", "scheduled by reader", "scheduled by timer",  # iteration 2
    ]


@pytest.mark.timeout(30)
def test_reader_scheduled_callbacks_run_after_other_readers(loop):
    # Two readers ready in the same iteration: what the first schedules runs
    # after the second reader (in whichever order the poll reported them).
    p1, p2 = socket.socketpair(), socket.socketpair()
    try:
        order = []

        def on_read(name, sock):
            assert sock.recv(10) == b"x"
            loop.remove_reader(sock)
            order.append(name)
            loop.call_soon(order.append, "after " + name)
            if len(order) == 2:
                loop.call_soon(loop.stop)

        loop.add_reader(p1[0], on_read, "r1", p1[0])
        loop.add_reader(p2[0], on_read, "r2", p2[0])
        p1[1].send(b"x")
        p2[1].send(b"x")
        loop.call_later(WAIT, loop.stop)        # a bound, not expected to fire
        loop.run_forever()
        assert len(order) == 4
        first, second = order[:2]
        assert {first, second} == {"r1", "r2"}
        assert order[2:] == ["after " + first, "after " + second]
    finally:
        for s in p1 + p2:
            s.close()


@pytest.mark.timeout(30)
def test_data_arriving_while_callbacks_run(loop, sockpair):
    # Data sent by a ready callback is seen by the next poll: the reader runs
    # after the callbacks that were already queued behind the sender.
    a, b = sockpair
    order = []
    fut = loop.create_future()

    def on_read():
        order.append("reader")
        a.recv(100)
        loop.remove_reader(a)
        fut.set_result(None)

    loop.add_reader(a, on_read)
    loop.call_soon(lambda: (order.append("sender"), b.send(b"x")))
    loop.call_soon(order.append, "queued after sender")
    _run_until(loop, fut)
    assert order == ["sender", "queued after sender", "reader"]


# ---------------------------------------------------------------- fork

def _wait_child(pid, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("forked child did not finish")
        time.sleep(0.01)


def _fork():
    with warnings.catch_warnings():
        # 3.12+ warns when forking a process that has threads.
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.timeout(60)
def test_fd_registered_before_fork_works_in_child_and_parent(loop, sockpair):
    a, b = sockpair
    got = []
    waiter = [None]

    def on_read():
        data = a.recv(100)
        got.append(data)
        fut = waiter[0]
        if fut is not None and not fut.done():
            fut.set_result(data)

    loop.add_reader(a, on_read)
    # The loop has run before the fork.
    loop.run_until_complete(asyncio.sleep(0))
    report_r, report_w = os.pipe()
    pid = _fork()
    if pid == 0:                                   # child
        code = 1
        try:
            os.close(report_r)
            waiter[0] = loop.create_future()
            b.send(b"child")
            data = loop.run_until_complete(asyncio.wait_for(waiter[0], 5))
            # Timers work in the child too.
            later = loop.run_until_complete(asyncio.sleep(0.01, "timer ok"))
            # So does waking the child's loop from a thread of the child.
            woken = loop.create_future()
            thread = threading.Thread(target=lambda: (
                time.sleep(0.02), loop.call_soon_threadsafe(woken.set_result, b"woken")))
            thread.start()
            woken = loop.run_until_complete(asyncio.wait_for(woken, 5))
            thread.join()
            os.write(report_w, b"%s|%s|%s" % (data, later.encode(), woken))
            code = 0
        except BaseException as exc:
            try:
                os.write(report_w, repr(exc).encode()[:500])
            except BaseException:
                pass
        finally:
            os._exit(code)
    # parent
    os.close(report_w)
    try:
        status = _wait_child(pid)
        report = b""
        while True:
            chunk = os.read(report_r, 1000)
            if not chunk:
                break
            report += chunk
    finally:
        os.close(report_r)
    assert (status, report) == (0, b"child|timer ok|woken")
    # The child consumed its own data; the parent's loop still sees new data.
    assert got == []
    waiter[0] = loop.create_future()
    b.send(b"parent")
    assert _run_until(loop, waiter[0]) == b"parent"
    assert got == [b"parent"]
    assert loop.remove_reader(a) is True
    # And the parent's loop is still woken by its threads.
    woken = loop.create_future()
    thread = threading.Thread(target=lambda: (
        time.sleep(0.02), loop.call_soon_threadsafe(woken.set_result, "parent woken")))
    thread.start()
    assert _run_until(loop, woken) == "parent woken"
    thread.join(WAIT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.timeout(60)
def test_new_loop_in_forked_child(loop, loop_factory, sockpair):
    # A loop that exists (and has an fd registered) in the parent does not get
    # in the way of a fresh loop in the child.
    a, b = sockpair
    loop.add_reader(a, lambda: None)
    report_r, report_w = os.pipe()
    pid = _fork()
    if pid == 0:                                   # child
        code = 1
        try:
            os.close(report_r)
            child_loop = loop_factory()
            c, d = socket.socketpair()
            c.setblocking(False)
            fut = child_loop.create_future()
            child_loop.add_reader(c, lambda: fut.set_result(c.recv(100)))
            d.send(b"fresh loop")
            data = child_loop.run_until_complete(asyncio.wait_for(fut, 5))
            os.write(report_w, data)
            code = 0
        except BaseException as exc:
            try:
                os.write(report_w, repr(exc).encode()[:500])
            except BaseException:
                pass
        finally:
            os._exit(code)
    os.close(report_w)
    try:
        status = _wait_child(pid)
        report = os.read(report_r, 1000)
    finally:
        os.close(report_r)
    assert (status, report) == (0, b"fresh loop")
    assert loop.remove_reader(a) is True
