"""Edge cases of the stream transport, each as asyncio behaves: errors from
unusual arguments, writes held until a callback returns (see
SocketTransport.settle_writes) seen from outside, protocol methods looked
up at each call. Run on asyncio and on fastloop with each poller."""
import asyncio
import logging
import socket
import sys

import pytest

from helpers import run, spin

pytestmark = pytest.mark.timeout(30)


async def make_transport(loop, proto, sock):
    tr, p = await loop.connect_accepted_socket(lambda: proto, sock)
    return tr, p


def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def handler_into(loop, events):
    def handler(lp, ctx):
        events.append(("handler", ctx.get("message"), type(ctx.get("exception")).__name__,
                       str(ctx.get("exception")), sorted(ctx)))
    loop.set_exception_handler(handler)


def test_set_protocol_none_raises_later(loop):
    events = []
    a, b = pair()
    handler_into(loop, events)

    class P(asyncio.Protocol):
        def connection_lost(self, exc):
            events.append(("lost", type(exc).__name__))

    async def main():
        tr, p = await make_transport(loop, P(), a)
        try:
            tr.set_protocol(object())
            events.append("set ok")
        except Exception as e:
            events.append(("set raised", type(e).__name__))
        b.send(b"hi")
        await asyncio.sleep(0.05)
        events.append(("closing", tr.is_closing()))
        tr.abort()
        await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    assert events[0] == "set ok", events


def test_write_noncontiguous_memoryview(loop):
    events = []
    a, b = pair()
    handler_into(loop, events)

    class P(asyncio.Protocol):
        def connection_lost(self, exc):
            events.append(("lost", type(exc).__name__))

    async def main():
        tr, p = await make_transport(loop, P(), a)
        await spin(2)
        mv = memoryview(b"abcdef")[::2]
        try:
            tr.write(mv)
            events.append("write returned")
        except Exception as e:
            events.append(("write raised", type(e).__name__, str(e)))
        events.append(("closing", tr.is_closing()))
        await spin(3)
        if not tr.is_closing():
            tr.close()
            await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    assert events[:2] == [
        ("handler", "Fatal write error on socket transport", "BufferError",
         "memoryview: underlying buffer is not C-contiguous",
         ["exception", "message", "protocol", "transport"]),
        "write returned"], events


def test_writelines_str_message(loop):
    events = []
    a, b = pair()

    async def main():
        tr, p = await make_transport(loop, asyncio.Protocol(), a)
        await spin(2)
        try:
            tr.writelines([b"a", "x"])
        except Exception as e:
            events.append((type(e).__name__, str(e)))
        tr.close()
        await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    if sys.version_info >= (3, 12):
        expected = "memoryview: a bytes-like object is required, not 'str'"
    else:
        expected = "sequence item 1: expected a bytes-like object, str found"
    assert events == [("TypeError", expected)]


def test_writelines_after_write_eof_message(loop):
    events = []
    a, b = pair()

    async def main():
        tr, p = await make_transport(loop, asyncio.Protocol(), a)
        await spin(2)
        tr.write_eof()
        try:
            tr.writelines([b"a"])
        except Exception as e:
            events.append((type(e).__name__, str(e)))
        tr.close()
        await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    method = "writelines" if sys.version_info >= (3, 12) else "write"
    assert events == [("RuntimeError", f"Cannot call {method}() after write_eof()")]


def test_writelines_noncontiguous(loop):
    events = []
    a, b = pair()
    handler_into(loop, events)

    class P(asyncio.Protocol):
        def connection_lost(self, exc):
            events.append(("lost", type(exc).__name__))

    async def main():
        tr, p = await make_transport(loop, P(), a)
        await spin(2)
        try:
            tr.writelines([b"a", memoryview(b"abcd")[::2]])
            events.append("returned")
        except Exception as e:
            events.append((type(e).__name__, str(e)))
        await spin(3)
        tr.close()
        await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    if sys.version_info >= (3, 12):
        expected = [("handler", "Fatal write error on socket transport", "BufferError",
                     "memoryview: underlying buffer is not C-contiguous",
                     ["exception", "message", "protocol", "transport"]),
                    "returned", ("lost", "BufferError")]
    else:
        expected = [("TypeError",
                     "sequence item 1: expected a bytes-like object, memoryview found"),
                    ("lost", "NoneType")]
    assert events == expected


def test_set_write_buffer_limits_float(loop):
    events = []
    a, b = pair()

    async def main():
        tr, p = await make_transport(loop, asyncio.Protocol(), a)
        for kw in (dict(high=1000.0), dict(low=10.5), dict(high=2**70)):
            try:
                tr.set_write_buffer_limits(**kw)
                events.append(tr.get_write_buffer_limits())
            except Exception as e:
                events.append((type(e).__name__, str(e)))
        tr.close()
        await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    assert events == [(250.0, 1000.0), (10.5, 42.0), (2**68, 2**70)]


@pytest.mark.parametrize("kind", ["bytes", "list", "memoryview"])
def test_get_buffer_readonly(loop, kind):
    events = []
    a, b = pair()
    handler_into(loop, events)

    class P(asyncio.BufferedProtocol):
        def get_buffer(self, hint):
            if kind == "memoryview":
                return memoryview(bytearray(16))[::2]
            return b"12345678" if kind == "bytes" else [0] * 8

        def buffer_updated(self, n):
            events.append(("updated", n))

        def connection_lost(self, exc):
            events.append(("lost", type(exc).__name__, str(exc)))

    async def main():
        tr, p = await make_transport(loop, P(), a)
        b.send(b"hi")
        await asyncio.sleep(0.05)
        await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    if kind == "memoryview":
        assert events == [
            ("handler", "Fatal read error on socket transport", "TypeError",
             "recv_into() argument 1 must be read-write bytes-like object, not memoryview",
             ["exception", "message", "protocol", "transport"]),
            ("lost", "TypeError",
             "recv_into() argument 1 must be read-write bytes-like object, not memoryview")], events
        return
    assert events == [
        ("handler", "Fatal read error on socket transport", "TypeError",
         f"recv_into() argument 1 must be read-write bytes-like object, not {kind}",
         ["exception", "message", "protocol", "transport"]),
        ("lost", "TypeError",
         f"recv_into() argument 1 must be read-write bytes-like object, not {kind}")], events


def test_lost_writes_warning(loop, caplog):
    a, b = pair()

    async def main():
        tr, p = await make_transport(loop, asyncio.Protocol(), a)
        await spin(2)
        b.close()
        for _ in range(10):
            tr.write(b"x")
        await spin(3)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(loop, main())
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs == ["socket.send() raised exception."] * 5, msgs


def test_kept_socket_shutdown_after_write(loop):
    events = []
    a, b = pair()

    class P(asyncio.Protocol):
        def connection_made(self, tr):
            self.tr = tr
            self.sock = tr.get_extra_info("socket")

        def data_received(self, data):
            self.tr.write(b"reply")
            self.sock.shutdown(socket.SHUT_WR)

        def connection_lost(self, exc):
            events.append(("lost", type(exc).__name__))

    async def main():
        tr, p = await make_transport(loop, P(), a)
        b.send(b"q")
        got = b""
        for _ in range(100):
            await asyncio.sleep(0.01)
            try:
                chunk = b.recv(100)
            except BlockingIOError:
                continue
            if not chunk:
                events.append(("peer got", got))
                break
            got += chunk
        tr.close()
        await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    assert events == [("peer got", b"reply"), ("lost", "NoneType")], events


def test_repr_after_unsent_write(loop):
    events = []
    a, b = pair()
    try:
        while True:
            a.send(b"x" * 65536)
    except BlockingIOError:
        pass

    async def main():
        tr, p = await make_transport(loop, asyncio.Protocol(), a)
        await spin(2)
        tr.write(b"y")
        r = repr(tr)
        events.append(r[r.index("read="):])
        events.append(tr.get_write_buffer_size())
        tr.abort()
        await spin(3)

    try:
        run(loop, main())
    finally:
        b.close()
    assert events == ["read=polling write=<polling, bufsize=1>>", 1], events
