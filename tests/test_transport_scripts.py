"""Random scripts of stream-transport operations, and of asyncio streams
over them, run on stdlib asyncio and on fastloop (each poller): what the
protocol is told (and in which step's context), the transport's state after
every step, what the calls return or raise and the bytes each side gets
must be the same.

A transport script is drawn from a seeded generator: server-side writes
(past the write buffer's high-water mark and the kernel's buffers; two
small ones in a step too), writelines, loop.sendfile(), pause/resume
reading, buffer limits, write_eof, close, abort, and a protocol that
closes, pauses, half-closes or raises from inside its data callback; the
peer is a plain non-blocking socket that sends, reads some or all,
half-closes, closes or resets. A streams script (below) reads in every way a
StreamReader can. One seed in four runs over a Unix socket instead of TCP.
After each step the loop runs until nothing changes any more (every pending
read and write has gone as far as the kernel lets it), so a step's outcome
does not depend on timing.

What is recorded does not depend on how a loop splits the stream into
reads (asyncio reads up to 256 KiB at a time, fastloop may read less):
once the protocol has acted on one chunk (closed, paused, raised), the byte
counts after that are left out.
"""
import asyncio
import concurrent.futures
import contextvars
import errno
import random
import socket
import struct
import sys
import tempfile
import zlib

import pytest

from helpers import (WAIT, asyncio_log, message_of, over_unix, quiesce, remove_socket_dir, spin,
                     start_serving, stream_client_socket, unread)

pytestmark = pytest.mark.timeout(60)

# The index of the script step running. The protocol logs it from its
# callbacks: asyncio runs each in a copy of the context current where the
# transport registered what calls it (its fd reader at creation and at
# resume_reading(), its fd writer at the write that left data unsent) or
# scheduled it (connection_lost() at close() or abort()).
STEP = contextvars.ContextVar("step", default=None)

SEEDS = range(16)
SNDBUF = RCVBUF = 64 * 1024     # fixed kernel buffers: no autotuning between runs
# A Unix stream socket has no receive buffer: what waits unread is charged
# to the sender's, with each send's overhead, so a larger one keeps the
# small writes below (which fastloop may send as one where asyncio sends
# several) far inside it, and 2 MB writes far beyond it.
UNIX_SNDBUF = 256 * 1024

# Sizes of the server's writes: what the kernel takes of them while the
# peer does not read depends on how the sends were packed into buffers,
# which differs between loops that write in different pieces. So writes are
# either small enough that even 24 of them fit in the kernel's buffers
# (SNDBUF and RCVBUF, each doubled by Linux) or far too large to, and the
# peer's partial reads are too small to drain a large one: whether the write
# buffer is empty, and when pause_writing() is called, never depends on
# the last few hundred bytes.
WRITE_SIZES = (1, 100, 5000, 2000000)
PIECE_SIZES = (0, 1, 100, 5000)
PEER_READ_SIZES = (1, 1000, 65536)

# On 3.12+ asyncio's writelines() is its own code (it was write() of the
# joined pieces), and the 3.12/3.13 releases here have bugs in it that
# CPython has since fixed and fastloop does not have (README, known
# differences): it does not call pause_writing() (gh-127655), fails after
# close() (gh-115514) or once the connection is lost (gh-136234), and never
# sends an empty piece, so the transport never finishes closing (gh-155888).
# There the scripts' writelines steps write the joined pieces on both loops;
# tests/test_transport_edges.py covers fastloop's writelines() on 3.12+.
WRITELINES_IS_JOINED_WRITE = sys.version_info < (3, 12)

# What a step does, and how its argument is drawn.
OPS = {
    "write": lambda r: r.choice(WRITE_SIZES),
    # Two write()s in one step, as a header and a body: fastloop holds them
    # and sends them together, asyncio one by one. Both small: how much of
    # a large one the kernel takes depends on how it was packed with the
    # other (tests/test_network.py covers held writes meeting back-pressure).
    "write_pair": lambda r: (r.choice(WRITE_SIZES[:-1]), r.choice(WRITE_SIZES[:-1])),
    "write_empty": lambda r: None,
    "writelines": lambda r: [r.choice(PIECE_SIZES) for _ in range(r.randint(0, 4))],
    "pause_reading": lambda r: None,
    "resume_reading": lambda r: None,
    "limits": lambda r: r.choice(((None, None), (0, 0), (100, 10), (100000, 1000), (1 << 20, None))),
    "write_eof": lambda r: None,
    "close": lambda r: None,
    "abort": lambda r: None,
    "set_protocol": lambda r: None,
    "extra_info": lambda r: None,
    "in_callback": lambda r: r.choice(("close", "pause_reading", "write_eof", "raise")),
    "peer_send": lambda r: r.choice((1, 100, 5000, 70000, 300000, 2000000)),
    "peer_recv": lambda r: r.choice(PEER_READ_SIZES),
    "peer_recv_all": lambda r: None,
    "peer_shutdown": lambda r: None,
    "peer_close": lambda r: None,
    "peer_reset": lambda r: None,
    # loop.sendfile(transport, file, offset, count): (offset, count), the
    # count small, far too large for the kernel's buffers, or to the end.
    "sendfile": lambda r: (r.choice((0, 7)), r.choice((100, 5000, 2000000, None))),
}
FILE_SIZE = 2100000


def make_script(seed):
    """(steps, what eof_received() returns, whether the protocol is buffered)."""
    r = random.Random(seed)
    steps = []
    for _ in range(r.randint(4, 24)):
        op = r.choice(sorted(OPS))
        steps.append((op, OPS[op](r)))
    return steps, r.random() < 0.5, r.random() < 0.5


class ScriptProtocol(asyncio.Protocol):
    """Logs its callbacks; does what the script asked on the next data."""

    def __init__(self, log, eof_result):
        self.log = log
        self.eof_result = eof_result
        self.transport = None
        self.received = 0
        self.crc = 0
        self.on_next_data = None     # an in_callback step's action
        self.split_dependent = False  # byte counts now depend on read sizes
        self.lost = False

    def connection_made(self, transport):
        self.transport = transport
        set_sndbuf(transport.get_extra_info("socket"))
        self.log.append(("made",))

    def data_received(self, data):
        self.received += len(data)
        self.crc = zlib.crc32(data, self.crc)
        action, self.on_next_data = self.on_next_data, None
        if action is None:
            return
        self.split_dependent = True
        self.log.append(("in_callback", action, STEP.get()))
        if action == "raise":
            raise RuntimeError("raised by data_received")
        if action == "write_eof":
            self.transport.write(b"last words")
            self.transport.write_eof()
        else:
            getattr(self.transport, action)()

    def counts(self):
        return "-" if self.split_dependent else (self.received, self.crc)

    def eof_received(self):
        self.log.append(("eof_received", self.counts(), STEP.get()))
        return self.eof_result

    def pause_writing(self):
        self.log.append(("pause_writing", STEP.get()))

    def resume_writing(self):
        self.log.append(("resume_writing", STEP.get()))

    def connection_lost(self, exc):
        self.lost = True
        self.log.append(("connection_lost", type(exc).__name__ if exc else None, self.counts(),
                         STEP.get()))


class BufferedScriptProtocol(ScriptProtocol, asyncio.BufferedProtocol):
    def __init__(self, log, eof_result):
        super().__init__(log, eof_result)
        self.buffer = bytearray(1000)

    def get_buffer(self, sizehint):
        return memoryview(self.buffer)

    def buffer_updated(self, nbytes):
        self.data_received(bytes(self.buffer[:nbytes]))


def set_sndbuf(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF,
                    UNIX_SNDBUF if sock.family == socket.AF_UNIX else SNDBUF)


class Peer:
    """The client end: a plain non-blocking socket, driven by the script."""

    def __init__(self, address, log):
        """address: a TCP (host, port), a Unix socket's path, or the other
        end of a socketpair() to use as it is."""
        self.log = log
        paired = isinstance(address, socket.socket)
        self.sock = address if paired else stream_client_socket(address)
        if self.sock.family == socket.AF_UNIX:
            set_sndbuf(self.sock)
        else:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        if not paired:
            self.sock.connect(address)
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()
        self.closed = False
        self.sent = 0
        self.received = 0
        self.crc = 0
        self.eof = False
        # Whether what arrives is known to the byte: not after a reset, or
        # after a send was abandoned half-way (how much of it the kernel
        # had taken depends on how it packed the sends).
        self.exact = True

    def counts(self):
        return (self.received, self.crc) if self.exact else "-"

    def waiting(self):
        return -1 if self.closed else unread(self.sock)

    def read(self, limit):
        got = 0
        while got < limit and not self.eof:
            try:
                data = self.sock.recv(min(limit - got, 1 << 20))
            except BlockingIOError:
                return
            except OSError as exc:
                # How much arrived before a reset depends on how the kernel
                # packed the sends: the count is not the loop's to match.
                self.log.append(("peer_recv_error", type(exc).__name__))
                self.eof = True
                self.exact = False
                return
            if not data:
                self.eof = True
                self.log.append(("peer_eof", self.counts()))
            got += len(data)
            self.received += len(data)
            self.crc = zlib.crc32(data, self.crc)

    async def read_to_eof(self):
        for _ in range(int(WAIT / 0.001)):
            self.read(1 << 40)
            if self.eof:
                return
            await asyncio.sleep(0.001)

    def do(self, op, arg):
        if self.closed:
            return
        if op == "peer_send":
            try:
                sent = self.sock.send(b"p" * arg if type(arg) is int else arg)
                self.sent += sent
                self.log.append(("peer_sent", sent))
            except OSError as exc:
                self.log.append(("peer_send_error", type(exc).__name__))
        elif op == "peer_recv":
            self.read(arg)
        elif op == "peer_recv_all":
            self.read(1 << 40)
        elif op == "peer_shutdown":
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError as exc:      # the server reset the connection
                self.log.append(("peer_shutdown_error", type(exc).__name__))
        else:
            if op == "peer_reset":
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.close()
            self.closed = True


def written(step_index, size):
    """A write's bytes: each step's differ, so the peer's checksum tells
    whether writes arrived whole and in order."""
    return bytes([65 + step_index % 26]) * size


async def play(loop, seed):
    steps, eof_result, buffered = make_script(seed)
    log = []
    loop.set_exception_handler(lambda lp, ctx: log.append(
        ("exception_handler", message_of(ctx), type(ctx.get("exception")).__name__)))
    protocols = []

    def factory():
        protocols.append((BufferedScriptProtocol if buffered else ScriptProtocol)(log, eof_result))
        return protocols[-1]

    server, address, directory = await start_serving(
        seed, lambda host, port: loop.create_server(factory, host, port),
        lambda path: loop.create_unix_server(factory, path))
    peer = Peer(address, log)
    sendfiles = None
    try:
        while not protocols or protocols[0].transport is None:
            await asyncio.sleep(0.001)
        proto = protocols[0]
        transport = proto.transport
        sendfiles = SendfileCalls(loop, log, proto, peer)

        def state():
            return (len(log), proto.received, peer.waiting(), transport.get_write_buffer_size(),
                    transport.is_closing(), transport.is_reading(), sendfiles.running())

        def undelivered():
            """Whether TCP data the peer sent is not in the server's
            receive queue yet (held back by its window)."""
            if peer.closed or proto.lost or over_unix(seed):
                return False
            return peer.sent > proto.received + unread(transport.get_extra_info("socket"))

        await quiesce(state)
        packed_apart = False
        for i, (op, arg) in enumerate(steps):
            log.append(("step", op, arg))
            STEP.set(i)
            if packed_apart and (op in ("abort", "sendfile") or arg == "raise"):
                # Since a write_pair (one send on fastloop, two on asyncio),
                # the kernel's buffers hold differently packed segments. So
                # how much of a send left unfinished here (dropped by an
                # abort or a protocol's error, cut short or stranded in a
                # sendfile) the peer gets depends on the loop.
                peer.exact = False
            if op.startswith("peer_"):
                if op in ("peer_close", "peer_reset") and undelivered():
                    # Resetting or closing with data unread (a reset too)
                    # drops what the server's window had not taken yet, and
                    # how much that is when a paused server's window closes
                    # depends on timing.
                    proto.split_dependent = True
                peer.do(op, arg)
            elif op == "in_callback":
                proto.on_next_data = arg
            else:
                try:
                    if op == "write":
                        transport.write(written(i, arg))
                    elif op == "write_pair":
                        packed_apart = True
                        transport.write(written(i, arg[0]))
                        transport.write(written(i + 1, arg[1]))
                    elif op == "write_empty":
                        transport.write(b"")
                    elif op == "writelines":
                        pieces = [written(i + j, n) for j, n in enumerate(arg)]
                        if WRITELINES_IS_JOINED_WRITE:
                            transport.writelines(pieces)
                        else:
                            transport.write(b"".join(pieces))
                    elif op == "limits":
                        transport.set_write_buffer_limits(*arg)
                    elif op == "sendfile":
                        sendfiles.start(transport, *arg)
                    elif op == "set_protocol":
                        transport.set_protocol(transport.get_protocol())
                    elif op == "extra_info":
                        log.append(("extra_info", transport.get_extra_info("peername") == peer.address,
                                    transport.get_extra_info("sockname") is not None,
                                    transport.can_write_eof()))
                    else:
                        getattr(transport, op)()
                except Exception as exc:
                    log.append(("raised", type(exc).__name__, str(exc)))
            await quiesce(state)
            sendfiles.log_finished()
            log.append(("state", transport.is_closing(), transport.is_reading(),
                        transport.get_write_buffer_size() > 0, transport.get_write_buffer_limits()))
        if not peer.closed:
            # Everything the transport still holds reaches the peer when it
            # reads and the transport is closed: nothing is lost.
            transport.close()
            await peer.read_to_eof()
            log.append(("peer_got", peer.counts()))
        await quiesce(state)
        sendfiles.log_finished()
        if not transport.is_closing():
            transport.abort()
        await spin(3)
    finally:
        if not peer.closed:
            peer.sock.close()
        server.close()
        await server.wait_closed()
        if sendfiles is not None:
            await sendfiles.close()
        remove_socket_dir(directory)
    return log


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, counting its jobs until the loop has
    seen them finish: loop.sendfile()'s fallback reads the file in it, and
    a script's step is not over while a read is under way."""

    def __init__(self, loop):
        super().__init__(max_workers=1)
        self.loop = loop
        self.pending = 0

    def submit(self, fn, /, *args, **kwargs):
        future = super().submit(fn, *args, **kwargs)
        self.pending += 1
        future.add_done_callback(lambda _: self.loop.call_soon_threadsafe(self.finished))
        return future

    def finished(self):
        self.pending -= 1


class SendfileCalls:
    """loop.sendfile() calls a script started, each in a task of its own
    while the script goes on (writes meanwhile raise; the peer's reads let
    it progress). Outcomes are logged at the end of the step they finished
    in: which of the loop's callbacks ran first in that step would be a
    matter of iteration counts, not behaviour.

    A call still waiting to send when the transport closes (the peer does
    not read) is stranded, on asyncio as on fastloop: close() removes its
    writer, and it never ends; after abort() it waits on a closed fd, which
    epoll drops (it never ends) and poll reports invalid (it fails with
    EBADF; so fastloop's poll backend is compared with asyncio's
    PollSelector). Such calls are counted, not logged, and cancelled at
    the end. How much of the file a stranded call had sent depends on how
    far the kernel had moved it by then, so the peer's count is not kept."""

    def __init__(self, loop, log, protocol, peer):
        self.loop = loop
        self.log = log
        self.protocol = protocol
        self.peer = peer
        self.file = tempfile.TemporaryFile()
        self.file.write(bytes(range(256)) * (FILE_SIZE // 256) + bytes(FILE_SIZE % 256))
        self.file.flush()
        self.tasks = []
        self.executor = CountingExecutor(loop)
        loop.set_default_executor(self.executor)
        self.stranded = 0           # left waiting on the closed fd

    def start(self, transport, offset, count):
        self.tasks.append(self.loop.create_task(
            self.loop.sendfile(transport, self.file, offset, count)))

    def running(self):
        """For the step's state: which never looks settled while a file
        read is under way (a busy machine may not run its thread for a
        while)."""
        return sum(not task.done() for task in self.tasks), object() if self.executor.pending else None

    def log_finished(self):
        if self.protocol.lost and self.running()[0]:
            self.peer.exact = False         # a call still under way is stranded
        for task in [task for task in self.tasks if task.done()]:
            self.tasks.remove(task)
            exc = task.exception()
            if self.protocol.lost and isinstance(exc, OSError) and exc.errno == errno.EBADF:
                self.stranded += 1
                self.peer.exact = False
            elif isinstance(exc, KeyError):
                # A second call while one runs: asyncio's KeyError is the
                # fd, whose number differs between loops.
                self.log.append(("sendfile_done", "KeyError"))
            else:
                self.log.append(("sendfile_done", task.result() if exc is None
                                 else (type(exc).__name__, str(exc))))

    async def close(self):
        self.log_finished()
        if self.protocol.lost:
            self.stranded += len(self.tasks)
        for task in self.tasks:
            task.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=WAIT)
        self.log.append(("sendfiles_stranded", self.stranded))
        self.file.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_random_transport_script_behaves_as_on_asyncio(loop, seed):
    expected = asyncio_log(play, seed, like=loop)
    got = loop.run_until_complete(asyncio.wait_for(play(loop, seed), 30))
    assert any(entry[0] == "connection_lost" for entry in got), "the script never closed"
    assert got == expected


# ------------------------------------------------------------------ streams
#
# The same over asyncio's streams (start_server()), where fastloop feeds
# the StreamReader in C (fastloop/_streams.pyx): reads of every kind,
# separators, the limit, EOF, cancellation of a waiting read, and writes,
# drain() and close() against a peer that reads or does not. The peer sends
# at most twice the limit in all, so the reader never pauses the transport
# (when it would is a matter of read sizes, tests/test_streams.py covers it).

STREAM_OPS = {
    "read": lambda r: r.choice((-1, 0, 1, 100, 5000, 100000)),
    "readexactly": lambda r: r.choice((0, 1, 100, 5000, 100000)),
    "readline": lambda r: None,
    "readuntil": lambda r: r.choice((b"\n", b"XY")),
    "write": lambda r: r.choice(WRITE_SIZES),
    "drain": lambda r: None,
    "write_eof": lambda r: None,
    "close": lambda r: None,
    "pause_reading": lambda r: None,
    "resume_reading": lambda r: None,
    # (bytes, a newline every so many of them, whether they end in b"XY")
    "peer_send": lambda r: (r.choice((1, 100, 5000, 70000)), r.choice((None, 1, 50, 1000, 100000)),
                            r.random() < 0.3),
    "peer_recv": OPS["peer_recv"],
    "peer_recv_all": OPS["peer_recv_all"],
    "peer_shutdown": OPS["peer_shutdown"],
    "peer_close": OPS["peer_close"],
    "peer_reset": OPS["peer_reset"],
}


# How often each is drawn (1 if not named): mostly data and reads; the
# steps that end the connection, rarely.
STREAM_WEIGHTS = {"peer_send": 8, "read": 3, "readexactly": 3, "readline": 3, "readuntil": 3,
                  "peer_close": 0.3, "peer_reset": 0.3, "close": 0.5}


def make_stream_script(seed):
    """(steps, the reader's limit)."""
    r = random.Random(seed)
    names = sorted(STREAM_OPS)
    weights = [STREAM_WEIGHTS.get(name, 1) for name in names]
    steps = []
    for _ in range(r.randint(4, 30)):
        op = r.choices(names, weights)[0]
        steps.append((op, STREAM_OPS[op](r)))
    return steps, r.choice((100, 1000, 70000))


def lines(size, line_length, xy):
    data = bytearray(b"s" * size)
    if line_length:
        data[line_length - 1::line_length] = b"\n" * len(range(line_length - 1, size, line_length))
    if xy:
        data[-2:] = b"XY"
    return bytes(data)


def outcome_of(task):
    if task.cancelled():
        return ("cancelled",)
    exc = task.exception()
    if exc is not None:
        partial = getattr(exc, "partial", None)
        return ("raised", type(exc).__name__, str(exc),
                None if partial is None else (len(partial), zlib.crc32(partial)))
    result = task.result()
    return ("returned",) if result is None else ("returned", len(result), zlib.crc32(result))


async def play_streams(loop, seed):
    steps, limit = make_stream_script(seed)
    log = []
    loop.set_exception_handler(lambda lp, ctx: log.append(
        ("exception_handler", ctx["message"], type(ctx.get("exception")).__name__)))
    ends = []

    def connected(reader, writer):
        ends.append((reader, writer))

    server, address, directory = await start_serving(
        seed, lambda host, port: asyncio.start_server(connected, host, port, limit=limit),
        lambda path: asyncio.start_unix_server(connected, path, limit=limit))
    peer = Peer(address, log)
    reading = writing = None        # the reader's and the writer's waiting calls
    budget = 2 * limit
    try:
        while not ends:
            await asyncio.sleep(0.001)
        reader, writer = ends[0]
        transport = writer.transport
        set_sndbuf(transport.get_extra_info("socket"))

        def state():
            return (len(log), len(reader._buffer), reading is None or reading.done(),
                    writing is None or writing.done(), peer.waiting(),
                    transport.get_write_buffer_size(), transport.is_closing())

        def settled(task, name):
            """Log a waiting call that finished; None if it did."""
            if task is not None and task.done():
                log.append((name, outcome_of(task)))
                return None
            return task

        async def replace(task, name, coro):
            """Start coro, cancelling the waiting call it replaces."""
            if task is not None:
                task.cancel()
                await spin(2)
                settled(task, name)
            return loop.create_task(coro)

        await quiesce(state)
        for i, (op, arg) in enumerate(steps):
            log.append(("step", op, arg))
            if op == "peer_send":
                data = lines(*arg)
                if len(data) > budget:
                    continue
                budget -= len(data)
                peer.do(op, data)
            elif op.startswith("peer_"):
                peer.do(op, arg)
            elif op in ("read", "readexactly", "readuntil"):
                reading = await replace(reading, "reading", getattr(reader, op)(arg))
            elif op == "readline":
                reading = await replace(reading, "reading", reader.readline())
            elif op == "drain":
                writing = await replace(writing, "writing", writer.drain())
            elif op == "close":
                writer.close()
                writing = await replace(writing, "writing", writer.wait_closed())
            else:
                try:
                    if op == "write":
                        writer.write(written(i, arg))
                    elif op == "write_eof":
                        writer.write_eof()
                    else:
                        getattr(transport, op)()
                except Exception as exc:
                    log.append(("raised", type(exc).__name__, str(exc)))
            await quiesce(state)
            reading = settled(reading, "reading")
            writing = settled(writing, "writing")
            log.append(("state", reader.at_eof(), len(reader._buffer), transport.is_closing(),
                        transport.is_reading(), transport.get_write_buffer_size() > 0))
        if not peer.closed:
            writer.close()
            await peer.read_to_eof()
            log.append(("peer_got", peer.counts()))
        writer.close()
        writing = await replace(writing, "writing", writer.wait_closed())
        await quiesce(state)
        for task, name in ((reading, "reading"), (writing, "writing")):
            if task is not None:
                task.cancel()
                await spin(2)
                settled(task, name)
    finally:
        if not peer.closed:
            peer.sock.close()
        server.close()
        await server.wait_closed()
        remove_socket_dir(directory)
    return log


@pytest.mark.parametrize("seed", SEEDS)
def test_random_stream_script_behaves_as_on_asyncio(loop, seed):
    got = loop.run_until_complete(asyncio.wait_for(play_streams(loop, seed), 30))
    assert got == asyncio_log(play_streams, seed)


# ------------------------------------------------------------------ sock_*
#
# The same over the loop's socket operations on a connected TCP socket (or
# for one seed in four, one end of a Unix socketpair()):
# sock_recv(), sock_recv_into() and sock_sendall() that wait or not, are
# cancelled, replaced, or meet a reader the program added on the same fd,
# against the peer's sends, reads, half-close, close and reset. What the
# peer has sent and the socket has not yet received stays under
# SOCK_UNREAD_MAX, far below the socket's receive buffer, so that all of it
# is always in that buffer: how much more the peer's kernel would let
# through after each read depends on when the window updates go out.
SOCK_RCVBUF = 1 << 20
SOCK_UNREAD_MAX = 300000

SOCK_OPS = {
    "recv": lambda r: r.choice((1, 100, 5000, 100000)),
    "recv_into": lambda r: r.choice((1, 100, 5000)),
    "sendall": lambda r: r.choice(WRITE_SIZES),
    "cancel_recv": lambda r: None,
    "cancel_sendall": lambda r: None,
    "add_reader": lambda r: None,
    "remove_reader": lambda r: None,
    "shutdown": lambda r: None,
    "peer_send": OPS["peer_send"],
    "peer_recv": OPS["peer_recv"],
    "peer_recv_all": OPS["peer_recv_all"],
    "peer_shutdown": OPS["peer_shutdown"],
    "peer_close": OPS["peer_close"],
    "peer_reset": OPS["peer_reset"],
}
SOCK_WEIGHTS = {"recv": 3, "recv_into": 2, "peer_send": 4, "peer_close": 0.3, "peer_reset": 0.3}


def make_sock_script(seed):
    r = random.Random(seed)
    names = sorted(SOCK_OPS)
    weights = [SOCK_WEIGHTS.get(name, 1) for name in names]
    return [(op, SOCK_OPS[op](r)) for op in r.choices(names, weights, k=r.randint(4, 30))]


async def play_sock(loop, seed):
    log = []
    loop.set_exception_handler(lambda lp, ctx: log.append(
        ("exception_handler", ctx["message"], type(ctx.get("exception")).__name__)))
    if over_unix(seed):
        sock, other_end = socket.socketpair()
        peer = Peer(other_end, log)
    else:
        with socket.socket() as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_RCVBUF)
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            peer = Peer(listener.getsockname()[:2], log)
            sock = listener.accept()[0]
    sock.setblocking(False)
    set_sndbuf(sock)
    receiving = sending = None
    unreceived = 0          # what the peer sent that no receive returned yet
    # A sock_sendall() abandoned half-way leaves the kernel's buffers full
    # but for a few bytes that depend on how it packed the sends: whether a
    # next send fits is not the loop's to match until the peer has read all.
    sends_fit_unknown = False

    def user_reader():
        log.append(("user_reader",))
        loop.remove_reader(sock)

    def state():
        return (len(log), receiving is None or receiving.done(),
                sending is None or sending.done(), peer.waiting(), unread(sock))

    def settled(task, name):
        nonlocal unreceived
        if task is not None and task.done():
            log.append((name, outcome_of(task)))
            if name == "receiving" and not task.cancelled() and task.exception() is None:
                unreceived -= len(task.result())
            return None
        return task

    async def received_into(n):
        buf = bytearray(n)
        count = await loop.sock_recv_into(sock, buf)
        return bytes(buf[:count])

    try:
        await quiesce(state)
        for i, (op, arg) in enumerate(make_sock_script(seed)):
            log.append(("step", op, arg))
            if op == "peer_send":
                if unreceived + arg > SOCK_UNREAD_MAX:
                    continue
                unreceived += arg
                peer.do(op, arg)
            elif op.startswith("peer_"):
                peer.do(op, arg)
                sends_fit_unknown &= op != "peer_recv_all"
            elif op in ("recv", "recv_into", "cancel_recv") and receiving is not None:
                # A second receive while one waits: cancel the first, as a
                # program must (asyncio gives no order between two).
                receiving.cancel()
                await spin(2)
                receiving = settled(receiving, "receiving")
            elif op in ("sendall", "cancel_sendall") and sending is not None:
                sending.cancel()
                await spin(2)
                sending = settled(sending, "sending")
                peer.exact = False
                sends_fit_unknown = True
            if op == "recv":
                receiving = loop.create_task(loop.sock_recv(sock, arg))
            elif op == "recv_into":
                receiving = loop.create_task(received_into(arg))
            elif op == "sendall" and not sends_fit_unknown:
                sending = loop.create_task(loop.sock_sendall(sock, written(i, arg)))
            elif op == "add_reader":
                loop.add_reader(sock, user_reader)
            elif op == "remove_reader":
                log.append(("removed", loop.remove_reader(sock)))
            elif op == "shutdown":
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError as exc:
                    log.append(("raised", type(exc).__name__))
            await quiesce(state)
            receiving = settled(receiving, "receiving")
            sending = settled(sending, "sending")
            log.append(("state", unread(sock)))
        for task in (receiving, sending):
            if task is not None:
                task.cancel()
        peer.exact &= sending is None
        await spin(3)
        settled(receiving, "receiving")
        settled(sending, "sending")
        loop.remove_reader(sock)
        if not peer.closed:
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            await peer.read_to_eof()
            log.append(("peer_got", peer.counts()))
    finally:
        sock.close()
        if not peer.closed:
            peer.sock.close()
    return log


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sock_script_behaves_as_on_asyncio(loop, seed):
    got = loop.run_until_complete(asyncio.wait_for(play_sock(loop, seed), 30))
    assert got == asyncio_log(play_sock, seed)
