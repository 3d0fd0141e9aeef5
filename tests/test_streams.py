"""asyncio's streams on the loop.

While a transport's protocol is asyncio's StreamReaderProtocol and the code it
would run is asyncio's own, fastloop feeds the StreamReader in C
(fastloop/_streams.pyx): small reads are copied onto the end of its buffer,
large ones are received straight into it. That must not be observable: the
same data in the same order, the same wake-ups and flow control, the same
errors, and patched or overridden methods still called. Every test runs on
stdlib asyncio and on fastloop (conftest.py) and must pass on both.
"""
import asyncio
import random
import socket
import sys

import pytest

from helpers import run, spin

# Small, large (fed straight into the buffer) and back, and one above asyncio's
# 256 KiB per recv().
SIZES = [1, 100, 5000, 300_000, 10, 70_000, 3, 1 << 20, 7, 4096, 4095]


def payloads(sizes=SIZES):
    rnd = random.Random(1)
    return [bytes(rnd.getrandbits(8) for _ in range(min(n, 512))) * (n // 512 + 1)
            for n in sizes]


async def connected(**kwargs):
    """A stream (reader, writer) on one end of a socket pair, and the other
    end as a non-blocking socket."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    reader, writer = await asyncio.open_connection(sock=ours, **kwargs)
    return reader, writer, peer


async def connected_with(protocol_factory):
    """A transport made with protocol_factory on one end of a socket pair,
    and the other end as a non-blocking socket."""
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(protocol_factory, sock=ours)
    return transport, peer


async def disconnect(transport, peer):
    transport.close()
    await spin(3)
    peer.close()


async def close(writer, peer):
    """Close both ends; what wait_closed() raised (the connection's error),
    or None."""
    try:
        writer.close()
        await writer.wait_closed()
    except Exception as exc:
        return exc
    finally:
        peer.close()


async def send_all(peer, chunks, eof=True):
    loop = asyncio.get_running_loop()
    for chunk in chunks:
        await loop.sock_sendall(peer, chunk)
        await asyncio.sleep(0)
    if eof:
        peer.shutdown(socket.SHUT_WR)


async def closes_soon(transport, steps=100):
    """Whether the transport is closing within `steps` loop iterations (a
    fatal protocol error closes it from the read that raised)."""
    for _ in range(steps):
        if transport.is_closing():
            return True
        await asyncio.sleep(0)
    return transport.is_closing()


def record_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda loop, context: contexts.append(context))
    return contexts


@pytest.mark.timeout(60)
def test_mixed_sizes_arrive_whole_and_in_order(loop):
    chunks = [p[:n] for p, n in zip(payloads(), SIZES)]

    async def main():
        reader, writer, peer = await connected(limit=1 << 22)
        sender = asyncio.ensure_future(send_all(peer, chunks))
        got = bytearray()
        n = 1
        while True:
            data = await reader.read(n)
            if not data:
                break
            got += data
            n = n * 7 % 100_003 + 1         # reads of every size
        await sender
        await close(writer, peer)
        return bytes(got)

    assert run(loop, main(), timeout=50) == b"".join(chunks)


@pytest.mark.timeout(30)
def test_readuntil_and_readexactly_across_small_and_large_reads(loop):
    lines = [b"a" * n + b"\n" for n in (3, 200_000, 0, 9000, 5)]

    async def main():
        reader, writer, peer = await connected(limit=1 << 20)
        sender = asyncio.ensure_future(send_all(peer, lines + [b"tail!"]))
        got = [await reader.readuntil(b"\n") for _ in lines]
        tail = await reader.readexactly(5)
        at_eof = await reader.read() == b"" and reader.at_eof()
        await sender
        await close(writer, peer)
        return got, tail, at_eof

    assert run(loop, main()) == (lines, b"tail!", True)


@pytest.mark.timeout(30)
def test_reader_limit_pauses_and_resumes_reading(loop):
    """Past twice its limit the reader pauses the transport; reading the
    buffer down resumes it. Nothing is lost."""
    data = payloads([200_000])[0][:200_000]

    async def main():
        reader, writer, peer = await connected(limit=1000)
        transport = writer.transport
        sender = asyncio.ensure_future(send_all(peer, [data]))
        for _ in range(1000):
            if not transport.is_reading():
                break
            await asyncio.sleep(0)
        paused = not transport.is_reading()
        buffered = len(reader._buffer)
        got = bytearray()
        while len(got) < len(data):
            got += await reader.read(700)
        resumed = transport.is_reading()
        await sender
        await close(writer, peer)
        return paused, buffered > 2000, resumed, bytes(got)

    assert run(loop, main()) == (True, True, True, data)


class Limit(int):
    pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("limit, pauses", [
    (1000.0, True), (Limit(1000), True), (1 << 80, False)], ids=str)
def test_reader_limit_of_any_number_type(loop, limit, pauses):
    """feed_data() compares the buffer with twice its reader's _limit, of
    whatever number type it is (fastloop compares an int in C)."""
    data = payloads([200_000])[0][:200_000]

    async def main():
        reader, writer, peer = await connected()
        reader._limit = limit
        transport = writer.transport
        sender = asyncio.ensure_future(send_all(peer, [data]))
        while transport.is_reading() and len(reader._buffer) < len(data):
            await asyncio.sleep(0)
        paused = not transport.is_reading()
        got = bytearray()
        while len(got) < len(data):
            got += await reader.read(700)
        await sender
        await close(writer, peer)
        return paused, bytes(got)

    assert run(loop, main()) == (pauses, data)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["instance attributes", "subclass"])
def test_waiter_methods_replaced_on_the_future_are_called(loop, how):
    """The reader's waiter (a future from loop.create_future()) is woken
    through its cancelled() and set_result() as Python would look them up."""
    calls = []

    class Waiter(asyncio.Future):
        def cancelled(self):
            calls.append("cancelled")
            return super().cancelled()

        def set_result(self, result):
            calls.append("set_result")
            super().set_result(result)

    def create_future():
        if how == "subclass":
            return Waiter(loop=loop)
        future = asyncio.Future(loop=loop)
        cancelled, set_result = future.cancelled, future.set_result

        def recorded_cancelled():
            calls.append("cancelled")
            return cancelled()

        def recorded_set_result(result):
            calls.append("set_result")
            set_result(result)

        future.cancelled = recorded_cancelled
        future.set_result = recorded_set_result
        return future

    async def main():
        reader, writer, peer = await connected()
        loop.create_future = create_future
        try:
            pending = asyncio.ensure_future(reader.read(10))
            await spin(2)
            await loop.sock_sendall(peer, b"woken")
            got = await pending
        finally:
            del loop.create_future
        await close(writer, peer)
        return got

    assert run(loop, main()) == b"woken"
    assert calls == ["cancelled", "set_result"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("owner, name, when", [
    ("StreamReader", "feed_data", "before"),
    ("StreamReader", "feed_data", "while connected"),
    ("StreamReader", "_wakeup_waiter", "before"),
    ("StreamReader", "_wakeup_waiter", "while connected"),
    # A transport takes its protocol's data_received when it is given the
    # protocol (as uvloop's do; see the README's known differences).
    ("StreamReaderProtocol", "data_received", "before"),
])
def test_patched_methods_are_called(loop, monkeypatch, owner, name, when):
    """A method patched on asyncio's classes (as test doubles and tracing tools
    do) is what runs."""
    cls = getattr(asyncio, owner)
    original = getattr(cls, name)
    calls = []

    def wrapper(self, *args):
        calls.append(name)
        return original(self, *args)

    chunks = [b"x" * 10, b"y" * 100_000, b"z"]

    async def main():
        if when == "before":
            monkeypatch.setattr(cls, name, wrapper)
        reader, writer, peer = await connected()
        await loop.sock_sendall(peer, chunks[0])
        first = await reader.readexactly(10)
        if when != "before":
            monkeypatch.setattr(cls, name, wrapper)
        await send_all(peer, chunks[1:], eof=False)
        rest = await reader.readexactly(100_001)
        called = bool(calls)        # before EOF and closing call them too
        await close(writer, peer)
        return first + rest, called

    assert run(loop, main()) == (b"".join(chunks), True)


@pytest.mark.timeout(30)
def test_patched_stream_reader_property_is_used(loop, monkeypatch):
    """data_received() finds its reader through the _stream_reader property:
    a replaced property decides where the data goes."""
    async def main():
        diverted = asyncio.StreamReader()
        monkeypatch.setattr(asyncio.StreamReaderProtocol, "_stream_reader",
                            property(lambda self: diverted))
        reader, writer, peer = await connected()
        await loop.sock_sendall(peer, b"to the other reader")
        for _ in range(100):
            if diverted._buffer:
                break
            await asyncio.sleep(0)
        own = bytes(reader._buffer)
        await close(writer, peer)
        return own, bytes(diverted._buffer)

    assert run(loop, main()) == (b"", b"to the other reader")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["feed_data", "_wakeup_waiter"])
@pytest.mark.parametrize("before", [[], [10, 20_000]], ids=["first", "after reads"])
def test_methods_set_on_the_reader_instance_are_called(loop, name, before):
    """Set before the first read, or after reads went through fastloop's path
    (which recorded where the reader's attributes are): the next read calls
    them."""
    calls = []

    async def main():
        reader, writer, peer = await connected()
        for size in before:
            await loop.sock_sendall(peer, b"e" * size)
            await reader.readexactly(size)
        original = getattr(reader, name)

        def wrapper(*args):
            calls.append(args)
            return original(*args)

        setattr(reader, name, wrapper)
        await loop.sock_sendall(peer, b"a" * 50_000)
        got = await reader.readexactly(50_000)
        called = bool(calls)        # before closing calls them too
        await close(writer, peer)
        return got, called

    assert run(loop, main()) == (b"a" * 50_000, True)


@pytest.mark.timeout(30)
def test_reader_state_replaced_between_reads_is_used(loop):
    """The buffer and limit the reader has at each read are the ones used,
    however they were replaced."""
    async def main():
        reader, writer, peer = await connected()
        await loop.sock_sendall(peer, b"first")
        first = await reader.readexactly(5)
        reader._buffer = bytearray(b"kept:")
        reader._limit = 4                      # 2 * limit is exceeded: pause
        await loop.sock_sendall(peer, b"0123456789")
        await spin(5)
        paused = not writer.transport.is_reading()
        rest = await reader.readexactly(15)
        await close(writer, peer)
        return first, rest, paused

    assert run(loop, main()) == (b"first", b"kept:0123456789", True)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("when", ["before", "between reads"])
def test_reader_with_a_dict_of_its_own_is_fed(loop, when):
    """Looking at a reader's __dict__ moves its attributes into a dict object:
    reads go on, through the ordinary look-ups."""
    async def main():
        reader, writer, peer = await connected()
        if when == "before":
            vars(reader)
        got = []
        for size in (10, 20_000, 10):
            await loop.sock_sendall(peer, b"g" * size)
            got.append(await reader.readexactly(size))
            vars(reader)["_limit"] = 1 << 20      # through the dict itself
        await close(writer, peer)
        return [len(x) for x in got], reader._limit

    assert run(loop, main()) == ([10, 20_000, 10], 1 << 20)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("others", [0, 40], ids=["dict", "dict past the shared keys"])
def test_method_put_in_the_readers_dict_is_called(loop, others):
    """feed_data placed through the reader's __dict__ (after enough other
    names that the class's shared key table cannot take it) shadows the
    class's."""
    calls = []

    async def main():
        reader, writer, peer = await connected()
        await loop.sock_sendall(peer, b"x" * 10)
        await reader.readexactly(10)
        original = reader.feed_data
        attrs = vars(reader)
        for i in range(others):
            attrs[f"other{i}"] = i
        attrs["feed_data"] = lambda data: (calls.append(len(data)), original(data))
        await loop.sock_sendall(peer, b"y" * 10)
        got = await reader.readexactly(10)
        await close(writer, peer)
        return got

    assert run(loop, main()) == b"y" * 10
    assert calls


@pytest.mark.timeout(30)
def test_reader_subclass_with_a_property_for_its_state_is_read_through_it(loop):
    """A data descriptor on the reader's class decides what an attribute
    is, over any value the instance has."""
    reads = []

    class Reader(asyncio.StreamReader):
        @property
        def _limit(self):
            reads.append(1)
            return self.real_limit

        @_limit.setter
        def _limit(self, value):
            self.real_limit = value

    async def main():
        reader = Reader(limit=8)
        transport, peer = await connected_with(lambda: asyncio.StreamReaderProtocol(reader))
        await loop.sock_sendall(peer, b"h" * 100)
        await spin(5)
        paused = not transport.is_reading()
        got = await reader.readexactly(100)
        await disconnect(transport, peer)
        return got, paused

    assert run(loop, main()) == (b"h" * 100, True)
    assert reads


@pytest.mark.timeout(30)
def test_subclass_overriding_data_received_is_called(loop):
    seen = []

    class Counting(asyncio.StreamReaderProtocol):
        def data_received(self, data):
            seen.append(len(data))
            super().data_received(data)

    async def main():
        reader = asyncio.StreamReader()
        transport, peer = await connected_with(lambda: Counting(reader))
        await loop.sock_sendall(peer, b"b" * 30_000)
        got = await reader.readexactly(30_000)
        await disconnect(transport, peer)
        return got

    assert run(loop, main()) == b"b" * 30_000
    assert sum(seen) == 30_000


@pytest.mark.timeout(30)
def test_data_received_borrowed_from_another_protocol_is_called(loop):
    """A protocol whose data_received is another StreamReaderProtocol's bound
    method feeds that one's reader, as asyncio calls it."""
    async def main():
        ours, theirs = asyncio.StreamReader(), asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(ours)
        protocol.data_received = asyncio.StreamReaderProtocol(theirs).data_received
        transport, peer = await connected_with(lambda: protocol)
        await loop.sock_sendall(peer, b"elsewhere")
        got = await theirs.readexactly(9)
        left = bytes(ours._buffer)
        await disconnect(transport, peer)
        return got, left

    assert run(loop, main()) == (b"elsewhere", b"")


@pytest.mark.timeout(30)
def test_reader_subclass_overriding_feed_data_is_called(loop):
    seen = []

    class Reader(asyncio.StreamReader):
        def feed_data(self, data):
            seen.append(len(data))
            super().feed_data(data.upper())

    async def main():
        reader = Reader()
        transport, peer = await connected_with(lambda: asyncio.StreamReaderProtocol(reader))
        await loop.sock_sendall(peer, b"shout")
        got = await reader.readexactly(5)
        await disconnect(transport, peer)
        return got

    assert run(loop, main()) == b"SHOUT"
    assert seen == [5]


@pytest.mark.timeout(30)
def test_exported_buffer_fails_the_transport_as_asyncio_does(loop):
    """A memoryview held on the reader's buffer makes asyncio's extend() raise
    BufferError in data_received(): a fatal protocol error."""
    contexts = record_handler(loop)

    async def main():
        reader, writer, peer = await connected()
        view = memoryview(reader._buffer)
        await loop.sock_sendall(peer, b"c" * 10_000)
        try:
            await reader.read(10)
        except BufferError as exc:
            raised = type(exc)
        view.release()
        closing = writer.transport.is_closing()
        closed_with = await close(writer, peer)
        return raised, closing, type(closed_with)

    assert run(loop, main()) == (BufferError, True, BufferError)
    assert [(c["message"], type(c["exception"])) for c in contexts] == [
        ("Fatal error: protocol.data_received() call failed.", BufferError)]


@pytest.mark.timeout(30)
def test_reader_state_failing_mid_read_fails_the_transport_as_asyncio_does(loop):
    """feed_data() raising part-way (here: the reader has no _waiter to read)
    is a fatal protocol error; the data it took stays in the buffer."""
    contexts = record_handler(loop)

    async def main():
        reader, writer, peer = await connected()
        await loop.sock_sendall(peer, b"one")
        first = await reader.readexactly(3)
        del reader._waiter
        await loop.sock_sendall(peer, b"two")
        closing = await closes_soon(writer.transport)
        kept = bytes(reader._buffer)
        reader._waiter = None
        closed_with = await close(writer, peer)
        return first, kept, closing, type(closed_with)

    assert run(loop, main()) == (b"one", b"two", True, AttributeError)
    assert [(c["message"], type(c["exception"])) for c in contexts] == [
        ("Fatal error: protocol.data_received() call failed.", AttributeError)]


@pytest.mark.timeout(30)
@pytest.mark.skipif(not __debug__, reason="feed_data's check is an assert")
def test_data_after_feed_eof_fails_as_asyncio_does(loop):
    contexts = record_handler(loop)

    async def main():
        reader, writer, peer = await connected()
        reader.feed_eof()
        await loop.sock_sendall(peer, b"late")
        closing = await closes_soon(writer.transport)
        closed_with = await close(writer, peer)
        return closing, type(closed_with)

    assert run(loop, main()) == (True, AssertionError)
    assert [(c["message"], type(c["exception"]).__name__, str(c["exception"]))
            for c in contexts] == [
        ("Fatal error: protocol.data_received() call failed.",
         "AssertionError", "feed_data after feed_eof")]


@pytest.mark.timeout(30)
def test_data_for_a_collected_reader_is_dropped(loop):
    """A StreamReaderProtocol holds its reader weakly (without a connected
    callback): once the reader is gone, data goes nowhere, without error."""
    contexts = record_handler(loop)

    async def main():
        protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader())
        transport, peer = await connected_with(lambda: protocol)
        for size in (10, 100_000, 10):
            await loop.sock_sendall(peer, b"d" * size)
            await spin(5)
        state = protocol._stream_reader, transport.is_closing()
        await disconnect(transport, peer)
        return state

    assert run(loop, main()) == (None, False)
    assert contexts == []


@pytest.mark.timeout(30)
def test_a_waiting_read_returns_all_of_a_message_sent_at_once(loop):
    """A read() waiting when a message arrives returns all of it, as one of
    asyncio's 256 KiB recv() calls brings it, whatever the sizes of the
    reads before (fastloop sizes its reads into the buffer by those)."""
    sizes = [5000, 70000, 100, 70000, 5000, 5700, 100000, 4096, 100000]

    async def main():
        reader, writer, peer = await connected()
        got = []
        for size in sizes:
            pending = asyncio.ensure_future(reader.read(1 << 20))
            await spin(2)
            assert peer.send(b"m" * size) == size
            got.append(len(await pending))
        await close(writer, peer)
        return got

    assert run(loop, main()) == sizes


@pytest.mark.timeout(30)
def test_cancelled_read_leaves_the_data_for_the_next(loop):
    async def main():
        reader, writer, peer = await connected()
        pending = asyncio.ensure_future(reader.read(10))
        await spin(2)
        pending.cancel()
        await spin(1)
        await loop.sock_sendall(peer, b"kept")
        got = await reader.read(10)
        await close(writer, peer)
        return pending.cancelled(), got

    assert run(loop, main()) == (True, b"kept")


@pytest.mark.timeout(30)
def test_feeding_is_visible_to_profilers_only_on_asyncio(loop, is_fastloop):
    """The documented difference: on fastloop, the reads of a connection whose
    StreamReaderProtocol runs asyncio's own code do not run data_received()
    and feed_data() as Python frames, so profilers and tracers do not see
    those two calls."""
    calls = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_name in ("data_received", "feed_data"):
            calls.append(frame.f_code.co_name)

    async def main():
        reader, writer, peer = await connected()
        sys.setprofile(profile)
        try:
            await loop.sock_sendall(peer, b"e" * 100)
            got = await reader.readexactly(100)
        finally:
            sys.setprofile(None)
        await close(writer, peer)
        return got

    assert run(loop, main()) == b"e" * 100
    assert (calls == []) == is_fastloop


@pytest.mark.skipif(sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info < (3, 14)
                    or not getattr(sys, "_is_gil_enabled", lambda: True)(),
                    reason="attribute values are read in place on CPython 3.11-3.13 only")
def test_attribute_values_are_read_in_place_here():
    """fastloop/_attrs.h's view of CPython's attribute values agrees with this
    interpreter, so the tests above exercise the in-place path."""
    from fastloop import _streams
    assert _streams._inline_attrs_work()


@pytest.mark.timeout(20)
def test_reader_state_is_read_only_when_asyncio_would_read_it(loop):
    # asyncio touches the reader only once recv() returned data (not at EOF),
    # and reads _limit only for a reader with a transport that is not
    # paused: a broken attribute elsewhere goes unnoticed, as there.
    contexts = record_handler(loop)

    class NoLimit(asyncio.StreamReader):
        @property
        def _limit(self):
            raise RuntimeError("not read by asyncio here")

        @_limit.setter
        def _limit(self, value):
            pass

    async def main():
        reader = NoLimit()
        transport, peer = await connected_with(lambda: asyncio.StreamReaderProtocol(reader))
        reader._transport = None                 # as for a reader never paused
        await loop.sock_sendall(peer, b"abc")
        got = await reader.readexactly(3)
        del reader._eof                          # broken, and only EOF follows
        peer.shutdown(socket.SHUT_WR)
        await spin(20)
        eof = reader.__dict__.get("_eof")        # feed_eof() set it again
        await disconnect(transport, peer)
        return got, eof

    assert run(loop, main()) == (b"abc", True)
    assert contexts == []
