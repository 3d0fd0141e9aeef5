"""Edge cases of the stream transport, each as asyncio behaves: unusual
arguments and the errors they get, writes held until a callback returns
(SocketTransport.settle_writes) as seen from outside, a protocol that is not
a protocol. Run on asyncio and on fastloop with each poller (conftest)."""
import asyncio
import logging
import os
import socket
import subprocess
import sys
import textwrap
import warnings

import pytest

from helpers import LostWrites, asyncio_log, run, spin, tcp_connection

pytestmark = pytest.mark.timeout(30)

FATAL_WRITE = "Fatal write error on socket transport"
FATAL_READ = "Fatal read error on socket transport"
NOT_CONTIGUOUS = "memoryview: underlying buffer is not C-contiguous"


class Recorder(asyncio.Protocol):
    """Records connection_lost() and what reaches the exception handler."""

    def __init__(self, loop, events):
        self.events = events
        loop.set_exception_handler(
            lambda lp, ctx: events.append(("handler", ctx["message"],
                                           type(ctx.get("exception")).__name__,
                                           str(ctx.get("exception")), sorted(ctx))))

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__))


def handled(message, exc_type, text):
    return ("handler", message, exc_type, text, ["exception", "message", "protocol", "transport"])


async def transport_on(loop, sock, protocol):
    tr, _ = await loop.connect_accepted_socket(lambda: protocol, sock)
    await spin(2)                            # connection_made() has run
    return tr


async def finish(tr):
    tr.abort()
    await spin(3)


def writelines_outcome(loop, sock, arg):
    """What writelines(arg) does on a transport over sock, then its end."""
    events = []

    async def main():
        tr = await transport_on(loop, sock, Recorder(loop, events))
        outcome(events, lambda: tr.writelines(arg))
        await finish(tr)

    run(loop, main())
    return events


def outcome(events, call):
    """call(), recorded as returning or as the exception it raised."""
    try:
        call()
        events.append("returned")
    except Exception as exc:
        events.append((type(exc).__name__, str(exc)))


def test_set_protocol_to_a_non_protocol_fails_when_data_arrives(loop, sockpair):
    a, b = sockpair
    events = []

    async def main():
        tr = await transport_on(loop, a, Recorder(loop, events))
        outcome(events, lambda: tr.set_protocol(object()))
        b.send(b"hi")
        await asyncio.sleep(0.05)
        events.append(("closing", tr.is_closing()))
        await finish(tr)

    run(loop, main())
    # Then connection_lost() is called on it, which fails too.
    lost_failed = events[2][:4]
    assert events[:2] + [events[3]] == [
        "returned",
        handled("Fatal error: protocol.data_received() call failed.", "AttributeError",
                "'object' object has no attribute 'data_received'"),
        ("closing", True)]
    assert lost_failed[0] == "handler" and lost_failed[2:] == (
        "AttributeError", "'object' object has no attribute 'connection_lost'")
    assert "SocketTransport._call_connection_lost(" in lost_failed[1]


def test_write_of_a_non_contiguous_memoryview_is_a_fatal_write_error(loop, sockpair):
    a, b = sockpair
    events = []

    async def main():
        tr = await transport_on(loop, a, Recorder(loop, events))
        outcome(events, lambda: tr.write(memoryview(b"abcdef")[::2]))
        await spin(3)

    run(loop, main())
    assert events == [handled(FATAL_WRITE, "BufferError", NOT_CONTIGUOUS), "returned",
                      ("lost", "BufferError")]


@pytest.mark.parametrize("pieces", [[b"a", "x"], [b"a", memoryview(b"abcd")[::2]], [b"a", 7]],
                         ids=["str", "non-contiguous", "int"])
def test_writelines_of_what_cannot_be_sent(loop, sockpair, pieces):
    # Before 3.12 asyncio's writelines() is write(b"".join(pieces)); from
    # 3.12 it keeps a memoryview of each piece.
    events = writelines_outcome(loop, sockpair[0], pieces)
    name = type(pieces[1]).__name__
    if sys.version_info < (3, 12):
        expected = [("TypeError", f"sequence item 1: expected a bytes-like object, {name} found"),
                    ("lost", "NoneType")]
    elif name == "memoryview":
        expected = [handled(FATAL_WRITE, "BufferError", NOT_CONTIGUOUS), "returned",
                    ("lost", "BufferError")]
    else:
        expected = [("TypeError", f"memoryview: a bytes-like object is required, not '{name}'"),
                    ("lost", "NoneType")]
    assert events == expected


def test_writelines_after_write_eof(loop, sockpair):
    a, b = sockpair
    events = []

    async def main():
        tr = await transport_on(loop, a, asyncio.Protocol())
        tr.write_eof()
        outcome(events, lambda: tr.writelines([b"a"]))
        await finish(tr)

    run(loop, main())
    method = "writelines" if sys.version_info >= (3, 12) else "write"
    assert events == [("RuntimeError", f"Cannot call {method}() after write_eof()")]


def skip_on_buggy_writelines(impl, issue):
    """3.12/3.13's asyncio writelines() has bugs CPython fixed later (README,
    known differences); fastloop behaves as the fixed asyncio does."""
    if impl == "asyncio" and sys.version_info >= (3, 12):
        pytest.skip(f"asyncio's writelines() on Python 3.12+ before CPython {issue} was fixed")


async def read_to_eof(loop, sock):
    data = b""
    while chunk := await loop.sock_recv(sock, 65536):
        data += chunk
    return data


def test_writelines_with_an_empty_piece_then_close(loop, sockpair, impl):
    skip_on_buggy_writelines(impl, "gh-155888")
    a, b = sockpair
    events = []

    async def main():
        tr = await transport_on(loop, a, Recorder(loop, events))
        tr.writelines([b"hello", b""])
        tr.close()
        return await read_to_eof(loop, b)

    assert run(loop, main()) == b"hello"
    assert events == [("lost", "NoneType")]


def test_writelines_after_close_is_sent_before_the_eof(loop, sockpair, impl):
    # close() with writes pending waits for them; what is written meanwhile
    # goes out too, before the EOF.
    skip_on_buggy_writelines(impl, "gh-115514")
    a, b = sockpair
    events = []

    async def main():
        tr = await transport_on(loop, a, Recorder(loop, events))
        tr.set_write_buffer_limits(high=1 << 30)
        tr.write(b"x" * 2_000_000)          # more than the socket buffers hold
        tr.close()
        tr.writelines([b"y", b"z"])
        data = await read_to_eof(loop, b)
        await spin(3)
        return data

    assert run(loop, main()) == b"x" * 2_000_000 + b"yz"
    assert events == [("lost", "NoneType")]


def test_writelines_after_the_connection_was_lost_is_counted(loop, sockpair, impl, caplog):
    # As write() after the connection was lost: dropped, and logged from the
    # fifth call on.
    skip_on_buggy_writelines(impl, "gh-136234")
    a, b = sockpair
    events = []

    async def main():
        tr = await transport_on(loop, a, Recorder(loop, events))
        b.close()
        tr.write(b"x")              # meets the broken pipe
        await spin(3)
        for _ in range(9):
            tr.writelines([b"y"])
        await spin(3)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(loop, main())
    assert [r.getMessage() for r in caplog.records] == ["socket.send() raised exception."] * 5
    assert [e for e in events if e[0] == "lost"] == [("lost", "BrokenPipeError")]


def test_writelines_takes_any_contiguous_buffer(loop, sockpair):
    import array
    a, b = sockpair

    async def main():
        tr = await transport_on(loop, a, asyncio.Protocol())
        tr.writelines([b"ab", bytearray(b"cd"), memoryview(b"ef"), array.array("B", b"gh")])
        await spin(3)
        got = b.recv(100)
        await finish(tr)
        return got

    assert run(loop, main()) == b"abcdefgh"


@pytest.mark.parametrize("kind", ["bytes", "list", "memoryview"])
def test_get_buffer_returning_what_recv_into_cannot_fill(loop, sockpair, kind):
    a, b = sockpair
    events = []
    unusable = {"bytes": b"12345678", "list": [0] * 8,
                "memoryview": memoryview(bytearray(16))[::2]}[kind]

    class P(asyncio.BufferedProtocol, Recorder):
        def get_buffer(self, hint):
            return unusable

        def buffer_updated(self, n):
            events.append(("updated", n))

    async def main():
        tr = await transport_on(loop, a, P(loop, events))
        b.send(b"hi")
        await asyncio.sleep(0.05)
        await spin(3)

    run(loop, main())
    text = f"recv_into() argument 1 must be read-write bytes-like object, not {kind}"
    assert events == [handled(FATAL_READ, "TypeError", text), ("lost", "TypeError")]


def test_writes_after_the_connection_was_lost_are_counted(loop, sockpair, caplog):
    # asyncio's first write() meets the broken pipe; each later one counts
    # as a write to a lost connection, logged from the fifth on. fastloop
    # sends the ten in one go when the task step ends: the same count.
    a, b = sockpair

    async def main():
        tr = await transport_on(loop, a, asyncio.Protocol())
        b.close()
        for _ in range(10):
            tr.write(b"x")
        await spin(3)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(loop, main())
    assert [r.getMessage() for r in caplog.records] == ["socket.send() raised exception."] * 5


def test_the_socket_object_sends_held_writes_first(loop, sockpair):
    # A protocol that kept get_extra_info("socket") from connection_made()
    # and shuts it down right after a write: the data goes out first.
    a, b = sockpair
    events = []

    class P(Recorder):
        def connection_made(self, tr):
            self.tr = tr
            self.sock = tr.get_extra_info("socket")

        def data_received(self, data):
            self.tr.write(b"reply")
            self.sock.shutdown(socket.SHUT_WR)

    async def main():
        tr = await transport_on(loop, a, P(loop, events))
        b.send(b"q")
        got = b""
        for _ in range(200):
            await asyncio.sleep(0.005)
            try:
                chunk = b.recv(100)
            except BlockingIOError:
                continue
            if not chunk:
                break
            got += chunk
        events.append(("peer got", got))
        tr.close()
        await spin(3)

    run(loop, main())
    assert events == [("peer got", b"reply"), ("lost", "NoneType")]


def test_repr_counts_a_held_write(loop, sockpair):
    a, b = sockpair
    try:
        while True:                          # fill the kernel's buffer first
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass

    async def main():
        tr = await transport_on(loop, a, asyncio.Protocol())
        tr.write(b"y")
        text = repr(tr)
        size = tr.get_write_buffer_size()
        await finish(tr)
        return text[text.index("read="):], size

    assert run(loop, main()) == ("read=polling write=<polling, bufsize=1>>", 1)


# ------------------------------------------ writes held for a peer that closed
#
# A peer that closed its socket answers the next data it is sent with a
# reset. Over loopback the reset arrives during the send() that drew it, so
# of two write()s asyncio's second fails (EPIPE): the transport closes with
# BrokenPipeError, and each later write() counts as one to a lost connection.
# fastloop holds a callback's writes and would send them in one writev(),
# which succeeds. So once the poller has reported the peer's FIN, or while
# it is not watching (reading paused or over), it holds none: each goes out
# during write(), as in asyncio; writes it held before reading paused go out
# one by one.

async def _write_to_a_closed_peer(loop, case):
    """case: (where the writes are made, how many). Returns what the server
    side saw and how many lost writes were logged."""
    where, writes = case
    events = []

    def write_all(tr):
        for _ in range(writes):
            tr.write(b"x" * 100)
        if where == "paused after":
            # Held (the poller has not reported the FIN), and then sent one
            # by one, as the poller stops watching: the second still fails.
            tr.pause_reading()
        else:
            # After the failed write's connection_lost(), as asyncio queues them.
            loop.call_soon(events.append, "queued after the writes")
        events.append(("closing", tr.is_closing()))

    class P(Recorder):
        def connection_made(self, tr):
            self.tr = tr

        def data_received(self, data):
            events.append(("data", data))
            write_all(self.tr)

        def eof_received(self):
            events.append("eof")

    peer, ours = tcp_connection()
    with LostWrites() as lost_writes, peer, ours:
        ours.setblocking(False)
        tr = await transport_on(loop, ours, P(loop, events))
        if where == "data_received":
            peer.sendall(b"request")
            peer.close()                  # the FIN comes right after the data
        else:
            if where == "paused":         # the poller is not told to watch
                tr.pause_reading()
            peer.close()
            if where != "paused after":
                # The poll that reports the FIN runs before this task step does.
                await asyncio.sleep(0)
            write_all(tr)
        await spin(4)
        tr.abort()
        await spin(2)
    return events, lost_writes.count


@pytest.mark.parametrize("case", [("task step", 2), ("task step", 7), ("paused", 3),
                                  ("paused after", 7), ("data_received", 2),
                                  ("data_received", 9)])
def test_writes_held_for_a_peer_that_closed_fail_as_in_asyncio(loop, impl, case):
    if impl == "fastloop-poll" and not sys.platform.startswith("linux"):
        pytest.skip("poll() reports no peer shutdown (POLLRDHUP) here: see README")
    got = run(loop, _write_to_a_closed_peer(loop, case))
    if impl != "asyncio":
        assert got == asyncio_log(_write_to_a_closed_peer, case, like=loop)
    if sys.platform.startswith("linux"):
        where, writes = case
        # The first write() is sent; the rest count as lost from the second
        # on, logged from the sixth write to the lost connection.
        seen = [("data", b"request")] if where == "data_received" else []
        queued = [] if where == "paused after" else ["queued after the writes"]
        assert got == (seen + [("closing", True), ("lost", "BrokenPipeError")] + queued,
                       max(0, writes - 6))


def test_held_writes_after_the_peer_shut_down_its_side_all_arrive(loop):
    # A peer that only shut down its sending side still reads: every write
    # arrives, whether the transport knows of the FIN or not.
    events = []

    class P(Recorder):
        def connection_made(self, tr):
            self.tr = tr

        def eof_received(self):
            events.append("eof")
            return True                      # keep the transport open to write

    async def main():
        peer, ours = tcp_connection()
        with peer, ours:
            ours.setblocking(False)
            proto = P(loop, events)
            tr = await transport_on(loop, ours, proto)
            peer.shutdown(socket.SHUT_WR)
            await asyncio.sleep(0)           # the poll reports the FIN first
            for piece in (b"head", b"body", b"tail"):
                tr.write(piece)
            await spin(3)                    # the EOF has been read
            for piece in (b"more", b"again"):
                tr.write(piece)
            tr.close()
            await spin(3)
            peer.settimeout(5)
            got = b""
            while chunk := peer.recv(100):
                got += chunk
            events.append(("peer got", got))

    run(loop, main())
    assert events == ["eof", ("lost", "NoneType"), ("peer got", b"headbodytailmoreagain")]


@pytest.mark.parametrize("failure", ["read", "write", "buffered write", "empty buffer",
                                     "unfillable buffer", "writelines"])
def test_a_fatal_errors_exception_carries_a_traceback(loop, sockpair, failure):
    """The exception a failed system call or check hands to connection_lost()
    and the exception handler was raised (asyncio's by its socket call or
    check), so the logs of the fatal error print a traceback with it. (In
    debug mode, where a failed system call is logged: outside it fastloop
    hands over that OSError as made, see the README.)"""
    if failure == "writelines" and sys.version_info < (3, 12):
        pytest.skip("before 3.12 writelines() joins the pieces: the join raises to the caller")
    a, b = sockpair
    events = []

    class P(asyncio.BufferedProtocol):
        def __init__(self):
            loop.set_exception_handler(
                lambda lp, ctx: events.append(("handler", type(ctx["exception"]).__name__,
                                               ctx["exception"].__traceback__ is not None)))

        def get_buffer(self, hint):
            return {"empty buffer": bytearray(), "unfillable buffer": b"12345678"}.get(
                failure, bytearray(1024))

        def buffer_updated(self, n):
            pass

        def connection_lost(self, exc):
            events.append(("lost", isinstance(exc, OSError) and "OSError" or type(exc).__name__,
                           exc.__traceback__ is not None))

    async def main():
        tr = await transport_on(loop, a, P())
        loop.set_debug(True)
        if failure == "read":
            tr.write(b"left unread")        # closing with it unread resets
            await asyncio.sleep(0.05)
            b.close()
        elif failure == "write":
            tr.pause_reading()
            b.close()
            tr.write(b"x" * 100)
        elif failure == "buffered write":
            tr.pause_reading()
            tr.write(b"x" * 4 * 1024 * 1024)  # more than the socket takes
            await spin(3)
            b.close()
        elif failure == "writelines":
            tr.writelines([b"a", memoryview(b"abcdef")[::2]])
        else:
            b.send(b"hi")
        await asyncio.sleep(0.05)
        await spin(3)
        if not tr.is_closing():
            await finish(tr)

    run(loop, main())
    if failure in ("read", "write", "buffered write"):
        assert events == [("lost", "OSError", True)]
    else:
        kind = {"empty buffer": "RuntimeError", "unfillable buffer": "TypeError",
                "writelines": "BufferError"}[failure]
        assert events == [("handler", kind, True), ("lost", kind, True)]


# ------------------------------------------------- found by comparing with asyncio

@pytest.mark.parametrize("arg", [None, 0, 7], ids=["None", "zero", "int"])
def test_writelines_of_a_non_iterable(loop, sockpair, arg):
    # Before 3.12 asyncio joins first (bytes.join's error); from 3.12 it
    # returns at once when given anything false, and fails iterating the rest.
    events = writelines_outcome(loop, sockpair[0], arg)
    if sys.version_info < (3, 12):
        first = ("TypeError", "can only join an iterable")
    elif arg:
        first = ("TypeError", "'int' object is not iterable")
    else:
        first = "returned"
    assert events == [first, ("lost", "NoneType")]


def test_transport_methods_after_the_loop_closed(loop, sockpair, recwarn):
    # A transport left open when its loop closes: what would schedule or
    # register something raises the closed loop's RuntimeError, as asyncio's
    # call_soon()/_add_reader() do, and nothing keeps the transport alive:
    # dropped, it warns and closes its socket.
    a, b = sockpair
    events = []

    async def main():
        tr = await transport_on(loop, a, Recorder(loop, events))
        tr.pause_reading()
        return tr

    tr = run(loop, main())
    loop.close()
    outcome(events, tr.resume_reading)
    outcome(events, tr.close)
    outcome(events, tr.pause_reading)
    assert tr.is_closing()
    a.close()                                # the transport has its own socket object now
    del tr
    import gc
    gc.collect()
    assert events == [("RuntimeError", "Event loop is closed"),
                      ("RuntimeError", "Event loop is closed"), "returned"]
    assert [str(w.message).split(" ")[:2] for w in recwarn
            if issubclass(w.category, ResourceWarning)
            and "transport" in str(w.message)] == [["unclosed", "transport"]]
    b.setblocking(True)
    b.settimeout(5)
    assert b.recv(10) == b""                 # the peer sees the socket closed


@pytest.mark.parametrize("max_size", [1, 10, 300000])
def test_max_size_bounds_each_read(loop, sockpair, max_size):
    # asyncio recv()s up to the transport's max_size; a program may set it
    # per transport (256 KiB is the most fastloop reads at once).
    a, b = sockpair
    chunks = []

    class Reader(asyncio.Protocol):
        def connection_made(self, transport):
            assert transport.max_size == 256 * 1024
            transport.max_size = max_size

        def data_received(self, data):
            chunks.append(len(data))

    async def main():
        tr, _ = await loop.connect_accepted_socket(Reader, a)
        b.send(b"x" * 100)
        for _ in range(200):
            await asyncio.sleep(0)
            if sum(chunks) == 100:
                break
        assert tr.max_size == max_size if max_size <= 256 * 1024 else tr.max_size >= 256 * 1024
        tr.close()
        await spin(2)

    run(loop, main())
    assert sum(chunks) == 100 and max(chunks) <= max_size
    assert len(chunks) == (100 if max_size == 1 else 10 if max_size == 10 else 1)


def test_max_size_of_a_stream_transport(loop):
    # Streams read through the same transport: a smaller max_size holds too.
    async def main():
        got = []

        async def serve(reader, writer):
            writer.transport.max_size = 4
            while True:
                data = await reader.read(1000)
                if not data:
                    break
                got.append(len(data))
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await spin(5)
        writer.write(b"y" * 20)
        await writer.drain()
        writer.write_eof()
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got

    got = run(loop, main())
    assert sum(got) == 20 and max(got) <= 4


def what_the_peer_gets(loop, sockpair, data, then):
    """The peer's bytes after tr.write(data) and `await then(tr, sock)` in
    one task step."""
    a, b = sockpair

    async def main():
        tr = await transport_on(loop, a, asyncio.Protocol())
        tr.write(data)
        await then(tr, a)
        await spin(2)
        got = b.recv(10)
        tr.close()
        await spin(2)
        return got

    return run(loop, main())


def test_sock_sendall_after_write_on_the_transport_socket(loop, sockpair):
    # asyncio's write() has sent "A" by the time sock_sendall() sends "B".
    async def then(tr, sock):
        await loop.sock_sendall(sock, b"B")

    assert what_the_peer_gets(loop, sockpair, b"A", then) == b"AB"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_right_after_write_sends_the_data_once(loop, sockpair):
    # A child forked by the callback that wrote does not send it again.
    async def then(tr, sock):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # 3.12+: fork with threads
            pid = os.fork()
        if pid == 0:
            try:
                tr.get_write_buffer_size()           # would send what the copy still held
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    assert what_the_peer_gets(loop, sockpair, b"X", then) == b"X"


@pytest.mark.parametrize("set_loop", [False, True], ids=["loop-only", "set_event_loop"])
def test_exit_with_a_transport_open_prints_nothing(impl, set_loop):
    # A script that ends with its loop and a connection still open: the
    # transport is collected while the interpreter shuts down, after its
    # module's globals are gone; its ResourceWarning is ignored by default.
    child = textwrap.dedent(f"""
        import asyncio, socket
        import fastloop
        loop = (asyncio.SelectorEventLoop() if {impl!r} == "asyncio"
                else fastloop.Loop(poller={impl!r}.split("-", 1)[-1]))
        if {set_loop}:
            asyncio.set_event_loop(loop)
        async def main():
            a, b = socket.socketpair()
            t, p = await loop.connect_accepted_socket(asyncio.Protocol, a)
            main.keep = (b, t)
        loop.run_until_complete(main())
        """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=20)
    assert (proc.returncode, proc.stderr) == (0, "")
