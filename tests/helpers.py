"""Small helpers shared by the network and platform test modules."""
import asyncio
import fcntl
import gc
import logging
import os
import selectors
import socket
import struct
import sys
import tempfile
import termios

WAIT = 10.0     # generous bound for anything that should happen at once


def run(loop, coro, timeout=WAIT):
    """Run coro on loop, failing instead of hanging past `timeout`."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


def collect_quietly():
    """gc.collect() with the unraisable hook muted: for what asyncio leaves
    half-made to the garbage collector, whose finalizers complain."""
    hook, sys.unraisablehook = sys.unraisablehook, lambda unraisable: None
    try:
        gc.collect()
    finally:
        sys.unraisablehook = hook


class LostWrites(logging.Handler):
    """Counts, while in its with block, the writes to a lost connection
    that asyncio's logger reports (a transport logs them from the fifth)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        self.count += record.getMessage() == "socket.send() raised exception."

    def __enter__(self):
        logging.getLogger("asyncio").addHandler(self)
        return self

    def __exit__(self, *exc_info):
        logging.getLogger("asyncio").removeHandler(self)


def tcp_connection():
    """A connected pair of blocking TCP sockets on 127.0.0.1: (the
    connecting end, the accepted end)."""
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        client = socket.create_connection(lsock.getsockname())
        return client, lsock.accept()[0]


async def spin(n):
    """Let the loop run n more iterations."""
    for _ in range(n):
        await asyncio.sleep(0)


def _has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6()


class RecordingProtocol(asyncio.Protocol):
    """Records every callback in order; futures for the interesting ones."""

    def __init__(self, loop):
        self.loop = loop
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.made = loop.create_future()
        self.lost = loop.create_future()
        self.eof = loop.create_future()
        self.resumed = loop.create_future()
        self.eof_result = None      # what eof_received() returns

    def connection_made(self, transport):
        self.transport = transport
        self.events.append("made")
        self.made.set_result(transport)

    def data_received(self, data):
        if not self.events or self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")
        self.eof.set_result(bytes(self.data))
        return self.eof_result

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")
        if not self.resumed.done():
            self.resumed.set_result(None)


# Random-script tests (tests/test_*_scripts.py): shared pieces.

def unread(sock):
    """Bytes waiting in sock's receive queue."""
    return struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0\0\0\0"))[0]


async def quiesce(state):
    """Run the loop until state() stops changing: whatever the last step set
    going has happened (every read and write has gone as far as the kernel
    lets it)."""
    last, still = None, 0
    for _ in range(int(WAIT / 0.001)):
        await spin(3)
        now = state()
        still = still + 1 if now == last else 0
        if still == 3:
            return
        last = now
        await asyncio.sleep(0.001)
    raise AssertionError("the connection kept changing")


def message_of(ctx):
    """An exception handler's message, but for the callback a raise came
    out of, which each loop names its own way (asyncio's transport classes
    are not fastloop's; fastloop's datagram transport's repr has its fd)."""
    message = ctx["message"]
    return "Exception in callback" if message.startswith("Exception in callback ") else message


def stream_client_socket(address):
    """A new socket to connect to a script's server: Unix for a path, else
    TCP with TCP_NODELAY (small sends leave at once, not when a delayed ACK
    comes back)."""
    if isinstance(address, str):
        return socket.socket(socket.AF_UNIX)
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def over_unix(seed):
    """Whether a seed's script runs over a Unix socket (else TCP): one in
    four. Not drawn from the script's generator, which stays the same."""
    return seed % 4 == 3


async def start_serving(seed, start_tcp, start_unix):
    """(a server the seed's script runs over, made by start_tcp(host, port)
    or start_unix(path), the address a client connects to, the directory of
    its socket or None)."""
    if over_unix(seed):
        directory = tempfile.mkdtemp(prefix="flsc")
        path = os.path.join(directory, "s")
        return await start_unix(path), path, directory
    server = await start_tcp("127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[:2], None


def remove_socket_dir(directory):
    if directory is not None:
        path = os.path.join(directory, "s")
        if os.path.exists(path):        # (3.13+ servers remove it themselves)
            os.unlink(path)
        os.rmdir(directory)


REFERENCE = {}      # (script kind, seed, whether poll) -> the log asyncio's loop wrote


def asyncio_log(play, seed, like=None):
    """What play(loop, seed) logs on asyncio's loop; with `like`, a fastloop
    loop, on asyncio's loop with the same kind of poller, where a script's
    outcome depends on it (poll reports an fd closed while registered,
    epoll and kqueue drop it)."""
    poll = getattr(like, "_poller_name", None) == "poll"
    key = play, seed, poll
    if key not in REFERENCE:
        loop = asyncio.SelectorEventLoop(selectors.PollSelector() if poll else None)
        try:
            REFERENCE[key] = loop.run_until_complete(asyncio.wait_for(play(loop, seed), 30))
        finally:
            loop.close()
    return REFERENCE[key]
