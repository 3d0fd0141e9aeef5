"""Echo and HTTP servers for the network benchmarks, on a chosen event loop.

    python bench/net/servers.py --loop fastloop --style protocol --addr tcp --port 0
    python bench/net/servers.py --loop uvloop --style http --two-writes --addr unix --path /tmp/x.sock

Styles:
  protocol  asyncio.Protocol echo: data_received() -> transport.write()
  streams   asyncio.start_server echo: reader.read() -> writer.write() + drain()
  sock      loop.sock_accept() / sock_recv() / sock_sendall() echo
  http      minimal HTTP/1.1 keep-alive server on a Protocol, parsed by httptools,
            fixed 13-byte body; --two-writes sends header and body as two
            transport.write() calls (as most HTTP servers do)

Prints "ready tcp HOST PORT" or "ready unix PATH" on stdout once listening,
then serves until killed (SIGTERM's default action: the driver reads the
process's CPU time before it sends it, so no clean shutdown is needed).
"""
import argparse
import asyncio
import importlib.util
import os
import socket
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RECV_SIZE = 256 * 1024
HTTP_BODY = b"Hello, World!"
HTTP_HEADER = (b"HTTP/1.1 200 OK\r\n"
               b"Content-Type: text/plain\r\n"
               b"Content-Length: %d\r\n"
               b"\r\n" % len(HTTP_BODY))
HTTP_RESPONSE = HTTP_HEADER + HTTP_BODY
httptools = None    # the HTTP styles' parser, imported by serve()


def new_loop(name):
    if name == "asyncio":
        return asyncio.SelectorEventLoop()
    if name == "fastloop":
        if importlib.util.find_spec("fastloop") is None:
            sys.path.insert(0, ROOT)
        import fastloop
        return fastloop.new_event_loop()
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop()
    if name == "rloop":
        import rloop
        return rloop.new_event_loop()
    raise SystemExit(f"unknown loop {name!r}")


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class HttpProtocol(asyncio.Protocol):
    two_writes = False

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except Exception:  # httptools.HttpParserError and friends
            self.transport.close()

    def on_message_complete(self):
        if self.two_writes:
            self.transport.write(HTTP_HEADER)
            self.transport.write(HTTP_BODY)
        else:
            self.transport.write(HTTP_RESPONSE)
        if not self.parser.should_keep_alive():
            self.transport.close()


class HttpTaskProtocol(HttpProtocol):
    """As ASGI servers (uvicorn) answer: the response is written from a task
    per request, status line and headers first, then the body."""

    def connection_made(self, transport):
        super().connection_made(transport)
        self.loop = asyncio.get_running_loop()

    def on_message_complete(self):
        self.loop.create_task(self.respond(self.parser.should_keep_alive()))

    async def respond(self, keep_alive):
        self.transport.write(HTTP_HEADER)
        self.transport.write(HTTP_BODY)
        if not keep_alive:
            self.transport.close()


async def stream_echo(reader, writer):
    try:
        while True:
            data = await reader.read(RECV_SIZE)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def sock_echo(loop, conn):
    try:
        while True:
            data = await loop.sock_recv(conn, RECV_SIZE)
            if not data:
                break
            await loop.sock_sendall(conn, data)
    except ConnectionError:
        pass
    finally:
        conn.close()


def listen_socket(args):
    if args.addr == "tcp":
        # proto=IPPROTO_TCP as create_server(host, port) gets it from
        # getaddrinfo(): asyncio sets TCP_NODELAY on accepted sockets only
        # when sock.proto == IPPROTO_TCP, and without it header+body
        # (--two-writes) stalls on Nagle + delayed ACK (~40 ms per request).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(args.path)
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(args):
    loop = asyncio.get_running_loop()
    sock = listen_socket(args)
    # Read the address now: some loops (rloop) detach the socket object they
    # are given.
    if args.addr == "tcp":
        host, port = sock.getsockname()[:2]
        ready = f"ready tcp {host} {port}"
    else:
        ready = f"ready unix {args.path}"
    if args.style in ("protocol", "http", "http-task"):
        if args.style.startswith("http"):
            # Imported before the server is ready, so that its first load is
            # not part of what instructions.py counts for the requests.
            global httptools
            import httptools
        if args.style == "http":
            HttpProtocol.two_writes = args.two_writes
            factory = HttpProtocol
        elif args.style == "http-task":
            factory = HttpTaskProtocol
        else:
            factory = EchoProtocol
        server = await loop.create_server(factory, sock=sock, backlog=1024)
    elif args.style == "streams":
        if args.addr == "tcp":
            server = await asyncio.start_server(stream_echo, sock=sock, backlog=1024)
        else:
            server = await asyncio.start_unix_server(stream_echo, sock=sock, backlog=1024)
    elif args.style == "sock":
        server = None
    else:
        raise SystemExit(f"unknown style {args.style!r}")

    print(ready, flush=True)

    if server is not None:
        await asyncio.Event().wait()    # forever; the driver kills us
    tasks = set()
    while True:
        conn, _ = await loop.sock_accept(sock)
        conn.setblocking(False)
        if args.addr == "tcp":   # as the transports do; sock_accept() does not
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = loop.create_task(sock_echo(loop, conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loop", required=True, choices=["fastloop", "asyncio", "uvloop", "rloop"])
    p.add_argument("--style", required=True, choices=["protocol", "streams", "sock", "http", "http-task"])
    p.add_argument("--addr", default="tcp", choices=["tcp", "unix"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--path", help="unix socket path (--addr unix)")
    p.add_argument("--two-writes", action="store_true",
                   help="http: header and body as two transport.write() calls")
    args = p.parse_args()
    if args.addr == "unix" and not args.path:
        p.error("--addr unix needs --path")
    if args.two_writes and args.style != "http":
        p.error("--two-writes applies to --style http only")
    loop = new_loop(args.loop)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(serve(args))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
