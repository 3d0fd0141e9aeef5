"""Load generator for bench/net: ping-pong over N connections, no asyncio.

    python bench/net/client.py --addr tcp --port 8888 --size 1024 --conns 8 --duration 3
    python bench/net/client.py --addr unix --path /tmp/x.sock --http --duration 3

One thread, one epoll, non-blocking sockets (the loop under test is never
imported here). Each connection sends a fixed message (SIZE bytes of echo
payload, or a fixed HTTP/1.1 GET) and sends the next one only after the whole
reply has arrived. Before the run, a probe request checks the reply
(echo: identical bytes; HTTP: status 200 and Content-Length), so a broken
server fails loudly instead of looking fast.

Output (stdout, one line each): "start" after the warmup, then
"result REQUESTS SECONDS" for the measured window. The driver samples the
server's CPU time when it sees each line.
"""
import argparse
import os
import select
import socket
import sys
import time

HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: fastloop-bench\r\n\r\n"


def connect(args):
    if args.addr == "tcp":
        s = socket.create_connection((args.host, args.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(args.path)
    return s


def recv_exact(s, n):
    chunks = []
    while n > 0:
        c = s.recv(n)
        if not c:
            raise SystemExit("client: server closed the connection during the probe")
        chunks.append(c)
        n -= len(c)
    return b"".join(chunks)


def probe(args, msg):
    """One blocking request; check the reply; return the reply length."""
    s = connect(args)
    try:
        s.sendall(msg)
        if not args.http:
            reply = recv_exact(s, len(msg))
            if reply != msg:
                raise SystemExit("client: echo reply differs from the request")
            return len(msg)
        data = b""
        while b"\r\n\r\n" not in data:
            c = s.recv(65536)
            if not c:
                raise SystemExit("client: server closed the connection during the probe")
            data += c
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.1 200"):
            raise SystemExit(f"client: bad HTTP status line {lines[0]!r}")
        length = None
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        if length is None:
            raise SystemExit("client: HTTP response without Content-Length")
        body += recv_exact(s, length - len(body)) if length > len(body) else b""
        return len(head) + 4 + length
    finally:
        s.close()


def run(args):
    msg = HTTP_REQUEST if args.http else os.urandom(args.size)
    reply_len = probe(args, msg)
    ep = select.epoll()
    socks = {}
    remaining = {}     # fd -> reply bytes still expected
    outbuf = {}        # fd -> memoryview of unsent request bytes
    for _ in range(args.conns):
        s = connect(args)
        s.setblocking(False)
        socks[s.fileno()] = s
    buf = bytearray(max(reply_len, 256 * 1024))
    count = 0

    def send(fd):
        s = socks[fd]
        mv = outbuf.pop(fd, None)
        if mv is None:
            mv = memoryview(msg)
        try:
            n = s.send(mv)
        except BlockingIOError:
            n = 0
        if n < len(mv):
            outbuf[fd] = mv[n:]
            return select.EPOLLIN | select.EPOLLOUT
        return select.EPOLLIN

    for fd in socks:
        remaining[fd] = reply_len
        ep.register(fd, send(fd))

    recv_into = {fd: s.recv_into for fd, s in socks.items()}
    t_end = time.monotonic() + args.warmup
    phase = "warmup"
    t0 = c0 = None
    poll = ep.poll
    monotonic = time.monotonic
    while True:
        now = monotonic()
        if now >= t_end:
            if phase == "warmup":
                phase = "measure"
                print("start", flush=True)
                t0 = monotonic()
                c0 = count
                t_end = t0 + args.duration
            else:
                break
        events = poll(1.0)
        if not events and monotonic() > t_end + 5:
            raise SystemExit("client: no progress for 5 s")
        for fd, ev in events:
            if ev & select.EPOLLOUT:
                mask = send(fd)
                if mask == select.EPOLLIN:
                    ep.modify(fd, mask)
            if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    n = recv_into[fd](buf)
                except BlockingIOError:
                    continue
                if n == 0:
                    raise SystemExit("client: server closed a connection")
                r = remaining[fd] - n
                if r > 0:
                    remaining[fd] = r
                    continue
                if r < 0:
                    raise SystemExit("client: got more reply bytes than expected")
                count += 1
                remaining[fd] = reply_len
                mask = send(fd)
                if mask != select.EPOLLIN:
                    ep.modify(fd, mask)
    elapsed = monotonic() - t0
    print(f"result {count - c0} {elapsed:.6f}", flush=True)
    for s in socks.values():
        s.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--addr", default="tcp", choices=["tcp", "unix"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int)
    p.add_argument("--path")
    p.add_argument("--size", type=int, default=1024, help="echo message bytes")
    p.add_argument("--http", action="store_true", help="send a fixed HTTP GET instead")
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.3)
    args = p.parse_args()
    if args.addr == "tcp" and not args.port:
        p.error("--addr tcp needs --port")
    if args.addr == "unix" and not args.path:
        p.error("--addr unix needs --path")
    run(args)


if __name__ == "__main__":
    sys.exit(main())
