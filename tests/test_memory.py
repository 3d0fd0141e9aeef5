"""No leaks: rounds of the same work leave the same number of live memory
blocks, on fastloop as on asyncio (sys.getallocatedblocks() counts every
object and buffer CPython's allocator hands out)."""
import asyncio
import contextlib
import contextvars
import gc
import socket
import sys
import threading
import weakref

import pytest

from helpers import RecordingProtocol

pytestmark = pytest.mark.timeout(120)

VAR = contextvars.ContextVar("VAR", default=0)


def _one_round(loop):
    out = []

    def append(x):
        out.append(x)

    def change_context(x):
        VAR.set(x)          # forces a context of its own (shared-copy path)

    for i in range(2000):
        loop.call_soon(append, i)
        loop.call_soon(change_context, i)
    timers = [loop.call_later(0.001 * (i % 5), append, i) for i in range(2000)]
    for t in timers[::2]:
        t.cancel()
    ctx = contextvars.copy_context()
    for i in range(500):
        loop.call_soon(append, i, context=ctx)
    thread = threading.Thread(target=lambda: [loop.call_soon_threadsafe(append, i)
                                              for i in range(500)])
    thread.start()
    thread.join()

    async def task(i):
        await asyncio.sleep(0)
        fut = loop.create_future()
        loop.call_soon(fut.set_result, i)
        return await fut

    async def main():
        return await asyncio.gather(*(task(i) for i in range(500)))

    assert loop.run_until_complete(main()) == list(range(500))
    loop.run_until_complete(asyncio.sleep(0.01))
    # every callback ran once: 2000 + 1000 uncancelled timers + 500 + 500
    assert len(out) == 4000


def _blocks():
    gc.collect()
    gc.collect()
    return sys.getallocatedblocks()


def test_repeated_work_does_not_grow_memory(loop):
    for _ in range(3):              # warm up caches, free lists, the ring
        _one_round(loop)
    before = _blocks()
    for _ in range(5):
        _one_round(loop)
    growth = _blocks() - before
    # A leak of one object per callback would be thousands of blocks per
    # round; allow a little noise from interpreter caches.
    assert growth < 500, f"{growth} more memory blocks after 5 rounds"


def test_many_loops_created_and_closed_do_not_leak(loop_factory):
    def cycle():
        loop = loop_factory()
        loop.call_soon(lambda: None)
        loop.call_later(10, lambda: None)
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    for _ in range(20):
        cycle()
    before = _blocks()
    for _ in range(100):
        cycle()
    growth = _blocks() - before
    assert growth < 300, f"{growth} more memory blocks after 100 loops"


def test_closed_loop_is_freed_without_the_cycle_collector(loop_factory):
    # Nothing the loop keeps while running (such as the keyword dict it
    # hands Future() and Task()) may leave a reference cycle through it.
    loop = loop_factory()

    async def main():
        fut = loop.create_future()
        loop.call_soon(fut.set_result, 1)
        await fut
        await loop.create_task(asyncio.sleep(0))

    gc.disable()
    try:
        loop.run_until_complete(main())
        loop.close()
        ref = weakref.ref(loop)
        del loop
        assert ref() is None
    finally:
        gc.enable()


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def _network_round(loop, port, n):
    # Stream connections, sock_* calls (one of them cancelled) and datagram
    # endpoints: every kind of C transport and socket operation, opened and
    # closed n times.
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for size in (100, 20_000):      # the reader fed by copying, and directly
            writer.write(b"x" * size)
            await reader.readexactly(size)
        writer.close()
        await writer.wait_closed()
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            b.send(b"y")
            await loop.sock_recv(a, 10)
            pending = asyncio.ensure_future(loop.sock_recv(a, 10))
            await asyncio.sleep(0)
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pending
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        transport.close()
        await asyncio.sleep(0)


@pytest.mark.timeout(120)
def test_connections_and_socket_operations_do_not_leak(loop):
    async def main():
        server = await loop.create_server(_Echo, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        await _network_round(loop, port, 50)        # warm up
        before = _blocks()
        await _network_round(loop, port, 300)
        await asyncio.sleep(0.05)
        growth = _blocks() - before
        server.close()
        await server.wait_closed()
        return growth

    growth = loop.run_until_complete(asyncio.wait_for(main(), 100))
    # A leaked transport, handle or socket per round would be 300+ objects.
    assert growth < 300, f"{growth} more memory blocks after 300 rounds"


class _EchoOrRaise(_Echo):
    def data_received(self, data):
        if data == b"raise":
            raise RuntimeError("boom")      # to the exception handler; closes
        super().data_received(data)


class _BufferedEcho(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(7)          # tiny: many reads per message

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.buffer[:nbytes]))


async def _edge_round(loop, tcp_port, unix_path, refused_port, payload_file, n):
    # The less travelled paths of the C transports: errors raised by the
    # protocol, resets, abort() with writes pending, half-close, writelines,
    # BufferedProtocol with a tiny buffer over a unix socket, sendfile(),
    # pause/resume_reading, set_protocol() and refused connections.
    for _ in range(n):
        transport, proto = await loop.create_unix_connection(
            lambda: RecordingProtocol(loop), unix_path)
        transport.writelines([b"a" * 50, b"b" * 50])
        transport.pause_reading()
        transport.resume_reading()
        while len(proto.data) < 100:
            await asyncio.sleep(0)
        transport.write_eof()
        transport.close()
        await proto.lost

        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", tcp_port)
        transport.write(b"raise")              # the server's protocol raises: closed
        await proto.lost

        transport, proto = await loop.create_connection(
            lambda: RecordingProtocol(loop), "127.0.0.1", tcp_port)
        await loop.sendfile(transport, payload_file, fallback=False)
        transport.set_protocol(proto)
        transport.write(b"z" * 200_000)        # more than the socket takes at once
        transport.abort()
        await proto.lost

        sock = socket.create_connection(("127.0.0.1", tcp_port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.send(b"x" * 1000)
        sock.close()                           # a reset, from the server's view

        with contextlib.suppress(ConnectionRefusedError):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", refused_port)
    await asyncio.sleep(0.01)


@pytest.mark.timeout(120)
def test_error_paths_and_less_common_transport_calls_do_not_leak(loop, tmp_path):
    payload = tmp_path / "payload"
    payload.write_bytes(b"p" * 5000)
    unix_path = str(tmp_path / "sock")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused_port = probe.getsockname()[1]     # closed again: nobody listens
    errors = []
    loop.set_exception_handler(lambda loop, context: errors.append(type(context.get("exception"))))

    async def main():
        server = await loop.create_server(_EchoOrRaise, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        unix_server = await loop.create_unix_server(_BufferedEcho, unix_path)
        with open(payload, "rb") as f:
            await _edge_round(loop, port, unix_path, refused_port, f, 30)   # warm up
            before = _blocks()
            await _edge_round(loop, port, unix_path, refused_port, f, 200)
        await asyncio.sleep(0.05)
        growth = _blocks() - before
        for s in (server, unix_server):
            s.close()
            await s.wait_closed()
        return growth

    growth = loop.run_until_complete(asyncio.wait_for(main(), 100))
    assert errors and set(errors) == {RuntimeError}   # only the protocol's raise
    # A transport, handle, buffer or exception leaked per round would be 200+
    # (measured: about 0 on every loop).
    assert growth < 100, f"{growth} more memory blocks after 200 rounds"
