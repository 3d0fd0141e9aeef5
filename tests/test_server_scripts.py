"""Random scripts of server operations, run on stdlib asyncio and on
fastloop (each poller): what the servers' protocols are told, what the
Server object's methods return or raise, when wait_closed() and
serve_forever() finish and what each client sees must be the same.

fastloop accepts connections in C (fastloop/_transports.pyx, Acceptor) and
keeps asyncio.Server's count (or, from 3.13, set) of its connections in C
(fastloop/_servers.pyx), while the Server object itself is asyncio's; the
scripts check the two stay in step. A script creates a server (serving at
once or not, in debug mode or not) and draws steps from: clients that
connect (one or three at a time), send, half-close, close or reset; the
server side writing to, closing or aborting a connection; server.close(),
wait_closed(), start_serving(), serve_forever() and its cancellation,
close_clients() and abort_clients() (3.13); a protocol factory that
raises, and a connection_made() that raises or closes its transport.
After each step the loop runs until nothing changes, so outcomes do not
depend on timing.

One seed in four serves a Unix socket instead of TCP (fastloop's Acceptor
takes another path for those). Clients connect with a blocking connect(),
which the kernel completes from the listening socket's backlog whether or
not the server accepts yet; the backlog is far above the number of
clients, so no connection waits for a SYN retry.
"""
import asyncio
import gc
import random
import socket
import struct
import sys
import warnings

import pytest

import fastloop

from helpers import (asyncio_log, quiesce, remove_socket_dir, spin, start_serving,
                     stream_client_socket, unread)

pytestmark = pytest.mark.timeout(60)

SEEDS = range(16)
MAX_CLIENTS = 10
HAS_CLIENT_CONTROL = sys.version_info >= (3, 13)      # close_clients(), abort_clients()

SERVER_OPS = {
    "connect": 4, "connect_burst": 1, "client_send": 4, "client_shutdown": 1, "client_close": 1, "client_reset": 1,
    "conn_write": 2, "conn_close": 1, "conn_abort": 1,
    "close": 0.3, "wait_closed": 1, "start_serving": 1, "serve_forever": 1,
    "cancel_serve_forever": 1, "state": 1,
    "factory_raises": 0.5, "made_raises": 0.5, "made_closes": 0.5,
}
if HAS_CLIENT_CONTROL:
    SERVER_OPS.update(close_clients=0.5, abort_clients=0.5)


def make_server_script(seed):
    r = random.Random(seed)
    names = sorted(SERVER_OPS)
    steps = [(op, r.randrange(MAX_CLIENTS))
             for op in r.choices(names, [SERVER_OPS[n] for n in names], k=r.randint(5, 30))]
    # Some connections first, and a server that starts serving before the
    # first close() in most scripts: most scripts accept something.
    steps[:0] = [("connect", 0)] * r.randint(2, 3)
    at_once = r.random() < 0.7
    if not at_once:       # (the first connection is refused: no listen() yet)
        steps.insert(1, ("start_serving", 0))
    return steps, at_once, r.random() < 0.25     # steps, serving at once, debug


class Client:
    """A connection's client end: a plain socket the script drives."""

    def __init__(self, index, address, log):
        self.name = f"client{index}"
        self.log = log
        self.sock = stream_client_socket(address)
        self.open = True
        try:
            self.sock.connect(address)
        except OSError as exc:
            log.append((self.name, "connect_error", type(exc).__name__))
            self.close()
            return
        self.sock.setblocking(False)

    def waiting(self):
        return unread(self.sock) if self.open else -1

    def read(self):
        """Log what arrived: its length, the end of the stream, or an error."""
        while self.open:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError as exc:
                self.log.append((self.name, "recv_error", type(exc).__name__))
                return self.close()
            if not data:
                self.log.append((self.name, "eof"))
                return self.close()
            self.log.append((self.name, "got", len(data)))

    def do(self, op):
        if not self.open:
            return
        try:
            if op == "client_send":
                self.sock.send(b"c" * 100)
            elif op == "client_shutdown":
                self.sock.shutdown(socket.SHUT_WR)
            else:
                if op == "client_reset":
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                         struct.pack("ii", 1, 0))
                self.close()
        except OSError as exc:
            self.log.append((self.name, op + "_error", type(exc).__name__))

    def close(self):
        self.sock.close()
        self.open = False


class ServerProtocol(asyncio.Protocol):
    def __init__(self, name, log, on_made):
        self.name = name
        self.log = log
        self.on_made = on_made
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.log.append((self.name, "made", transport.get_extra_info("peername") is not None))
        if self.on_made == "raise":
            raise ZeroDivisionError
        if self.on_made == "close":
            transport.close()

    def data_received(self, data):
        self.log.append((self.name, "data", len(data)))

    def eof_received(self):
        self.log.append((self.name, "eof"))

    def connection_lost(self, exc):
        self.log.append((self.name, "lost", type(exc).__name__))


def outcome(task):
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    # The messages of serve_forever()'s errors hold the server's repr.
    return ("raised", type(exc).__name__) if exc is not None else ("returned", task.result())


async def play_server(loop, seed):
    with warnings.catch_warnings():
        # (see dropped_unclosed below; in debug mode fastloop accepts with
        # asyncio's own code, which does the same)
        if not isinstance(loop, fastloop.Loop) or make_server_script(seed)[2]:
            warnings.filterwarnings("ignore", "unclosed <socket", ResourceWarning)
        return await play_server_steps(loop, seed)


async def play_server_steps(loop, seed):
    steps, serving_at_once, debug = make_server_script(seed)
    loop.set_debug(debug)
    log = []
    # A callback's error message holds the callback's repr (addresses):
    # its first words are what is compared.
    loop.set_exception_handler(lambda lp, ctx: log.append(
        ("exception_handler", " ".join(ctx["message"].split()[:3]),
         type(ctx.get("exception")).__name__)))
    protocols = []          # in the order the server accepted: None where the factory raised
    next_made = [None]      # what the next connection_made() does
    factory_raises = [False]
    # When a protocol factory raises, asyncio leaves the accepted socket to
    # the garbage collector (fastloop closes it, outside debug mode)...
    dropped_unclosed = [False]

    def factory():
        if factory_raises[0]:
            factory_raises[0] = False
            dropped_unclosed[0] = True
            protocols.append(None)
            raise ZeroDivisionError
        protocols.append(ServerProtocol(f"conn{len(protocols)}", log, next_made[0]))
        next_made[0] = None
        return protocols[-1]

    server, address, directory = await start_serving(
        seed, lambda host, port: loop.create_server(
            factory, host, port, backlog=100, start_serving=serving_at_once),
        lambda path: loop.create_unix_server(
            factory, path, backlog=100, start_serving=serving_at_once))
    clients = []
    tasks = {}      # name -> task, logged when done

    def state():
        if dropped_unclosed[0]:
            # ...and the collector would get to it at any later time: now.
            dropped_unclosed[0] = False
            gc.collect()
        return (len(log), len(protocols), server.is_serving(), len(server.sockets),
                tuple(c.waiting() for c in clients), tuple(t.done() for t in tasks.values()))

    def settle(since):
        for client in clients:
            client.read()
        for name, task in list(tasks.items()):
            if task.done():
                log.append((name, outcome(task)))
                del tasks[name]
        # In what order the connections' events came within a step is the
        # order a poll reported their sockets ready in, which no program can
        # count on (poll() reports them in fd order, epoll as they became
        # ready): each connection's, client's and task's own are compared.
        log[since:] = sorted(log[since:], key=lambda entry: entry[0])

    def spawn(name, coro):
        tasks[f"{name}{len(log)}"] = loop.create_task(coro)

    try:
        await quiesce(state)
        for op, k in steps:
            log.append(("step", op))
            since = len(log)
            live = [p for p in protocols if p is not None]
            if op == "connect" and len(clients) < MAX_CLIENTS:
                clients.append(Client(len(clients), address, log))
            elif op == "connect_burst":
                # Accepted in one wake-up of the server.
                for _ in range(min(3, MAX_CLIENTS - len(clients))):
                    clients.append(Client(len(clients), address, log))
            elif op.startswith("client_") and clients:
                clients[k % len(clients)].do(op)
            elif op.startswith("conn_") and live:
                transport = live[k % len(live)].transport
                if op == "conn_write":
                    transport.write(b"s" * 10)
                else:
                    getattr(transport, op[len("conn_"):])()
            elif op in ("close", "close_clients", "abort_clients"):
                getattr(server, op)()
            elif op in ("wait_closed", "start_serving", "serve_forever"):
                spawn(op, getattr(server, op)())
            elif op == "cancel_serve_forever":
                for name, task in tasks.items():
                    if name.startswith("serve_forever"):
                        task.cancel()
            elif op == "factory_raises":
                factory_raises[0] = True
            elif op in ("made_raises", "made_closes"):
                next_made[0] = op[len("made_"):-1]
            await quiesce(state)
            settle(since)
            log.append(("state", server.is_serving(), len(server.sockets),
                        [p.transport.is_closing() for p in protocols if p is not None]))
        # The end: every connection closed from both sides, then the
        # server; every wait_closed() must finish.
        for client in clients:
            client.close()
        since = len(log)
        server.close()
        spawn("wait_closed", server.wait_closed())
        await quiesce(state)
        settle(since)
        log.append(("pending", sorted(name.rstrip("0123456789") for name in tasks)))
    finally:
        for client in clients:
            client.close()
        for task in tasks.values():
            task.cancel()
        await spin(3)
        server.close()
        remove_socket_dir(directory)
    return log


@pytest.mark.parametrize("seed", SEEDS)
def test_random_server_script_behaves_as_on_asyncio(loop, seed):
    got = loop.run_until_complete(asyncio.wait_for(play_server(loop, seed), 30))
    assert any(entry[1:2] == ("made",) for entry in got), "no connection was accepted"
    assert got == asyncio_log(play_server, seed)
