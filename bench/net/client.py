"""Load generator for bench/net: ping-pong over N connections, no asyncio.

    python bench/net/client.py --addr tcp --port 8888 --size 1024 --conns 8 --duration 3
    python bench/net/client.py --addr unix --path /tmp/x.sock --http --duration 3
    python bench/net/client.py --addr tcp --port 8888 --reconnect --conns 8

One thread, one epoll, non-blocking sockets (the loop under test is never
imported here). Each connection sends a fixed message (SIZE bytes of echo
payload, or a fixed HTTP/1.1 GET) and sends the next one only after the whole
reply has arrived. Before the run, a probe request checks the reply
(echo: identical bytes; HTTP: status 200 and Content-Length), so a broken
server fails loudly instead of looking fast.

--reconnect: every request gets a connection of its own (non-blocking
connect, send, read the whole reply, close), and the next connection in that
slot starts at once; --conns such slots run concurrently. A request is still
counted per complete reply, so requests/s is then connections/s.

--rate R: paced load. Requests (or, with --reconnect, new connections) are
sent at no more than R per second; a connection whose reply is in waits for
the next send slot. Servers compared at one offered rate do the same work per
second, each with the same client behaviour (see run.py --paced).

Output (stdout, one line each): "start" after the warmup, then
"result REQUESTS SECONDS" for the measured window. The driver samples the
server's CPU time when it sees each line.
"""
import argparse
import collections
import errno
import os
import select
import socket
import struct
import sys
import time

HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: fastloop-bench\r\n\r\n"

# SO_LINGER on, 0 s: close() sends RST and the socket skips TIME_WAIT. The
# client closes first, so with a plain close() every connection would park
# its ephemeral port in TIME_WAIT for 60 s; at tens of thousands of
# connections per second the 28k ports of the default range
# (ip_local_port_range) run out within a run and connect() fails with
# EADDRNOTAVAIL. The server then sees ECONNRESET instead of EOF after the
# reply, which every server here treats as an ordinary close.
LINGER_RST = struct.pack("ii", 1, 0)
CONNECTING = -1     # --reconnect: remaining[fd] until connect() completes


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


class Window:
    """Warmup, then the measured window; prints "start" and "result N SECONDS".

    done(count) is called once per poll with the requests completed so far.
    """

    def __init__(self, args):
        self.duration = args.duration
        self.t_end = time.monotonic() + args.warmup
        self.t0 = self.c0 = None

    def done(self, count):
        now = time.monotonic()
        if now < self.t_end:
            return False
        if self.t0 is None:
            print("start", flush=True)
            self.t0 = time.monotonic()
            self.c0 = count
            self.t_end = self.t0 + self.duration
            return False
        print(f"result {count - self.c0} {now - self.t0:.6f}", flush=True)
        return True

    def stalled(self, events):
        return not events and time.monotonic() > self.t_end + 5


def send_request(s, fd, msg, outbuf):
    """Send msg on s, or what outbuf[fd] holds of it; return the epoll mask
    to wait for next (EPOLLOUT too while some of it is left)."""
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


def continue_sending(ep, fd, send):
    """fd became writable: send what is left, and stop waiting for EPOLLOUT
    once all of it is out."""
    if send(fd) == select.EPOLLIN:
        ep.modify(fd, select.EPOLLIN)


def run(args):
    msg = HTTP_REQUEST if args.http else os.urandom(args.size)
    reply_len = probe(args, msg)
    (reconnect if args.reconnect else pingpong)(args, msg, reply_len)


class Pacer:
    """--rate: hands out send slots at `rate` per second. A slot missed (the
    client was asleep, the server slow) may be used late, up to BURST
    seconds' worth, so the offered rate holds while bursts stay bounded."""

    BURST = 0.005

    def __init__(self, rate):
        self.interval = 1.0 / rate
        self.next = time.monotonic()

    def take(self):
        """True (and the slot is used) if a send is due now."""
        now = time.monotonic()
        if now < self.next:
            return False
        self.next = max(self.next, now - self.BURST) + self.interval
        return True

    def wait(self, ep, poll):
        """Poll until the next slot at the latest. epoll's timeout has
        millisecond steps; a shorter wait sleeps in select() on the epoll
        fd (microseconds) and then polls without blocking."""
        delay = self.next - time.monotonic()
        if delay >= 0.001:
            return poll(delay)
        if delay > 0:
            select.select([ep.fileno()], [], [], delay)
        return poll(0)


def pingpong(args, msg, reply_len):
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
        return send_request(socks[fd], fd, msg, outbuf)

    def send_next(fd):
        """The next request on a connection registered for replies."""
        mask = send(fd)
        if mask != select.EPOLLIN:
            ep.modify(fd, mask)

    for fd in socks:
        remaining[fd] = reply_len
        ep.register(fd, send(fd))

    recv_into = {fd: s.recv_into for fd, s in socks.items()}
    window = Window(args)
    poll = ep.poll
    pacer = Pacer(args.rate) if args.rate else None
    idle = collections.deque()     # --rate: connections waiting for a slot
    while not window.done(count):
        events = pacer.wait(ep, poll) if idle else poll(1.0)
        while idle and pacer.take():
            send_next(idle.popleft())
        if window.stalled(events) and not idle:
            raise SystemExit("client: no progress for 5 s")
        for fd, ev in events:
            if ev & select.EPOLLOUT:
                continue_sending(ep, fd, send)
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
                if pacer is not None and not pacer.take():
                    idle.append(fd)
                else:
                    send_next(fd)
    for s in socks.values():
        s.close()


def connect_failed(err):
    hint = {errno.ECONNREFUSED: " (server not listening, or died)",
            errno.EADDRNOTAVAIL: " (out of ephemeral ports: TIME_WAIT?)"}.get(err, "")
    raise SystemExit(f"client: connect() failed: {os.strerror(err)}"
                     f" [{errno.errorcode.get(err, err)}]{hint}")


def reconnect(args, msg, reply_len):
    """--reconnect: N slots, each connect -> send -> read reply -> close."""
    ep = select.epoll()
    socks = {}         # fd -> socket
    remaining = {}     # fd -> reply bytes still expected, or CONNECTING
    outbuf = {}        # fd -> memoryview of unsent request bytes
    buf = bytearray(max(reply_len, 256 * 1024))
    count = 0
    retry = 0          # slots to restart after the next poll
    tcp = args.addr == "tcp"
    family = socket.AF_INET if tcp else socket.AF_UNIX
    target = (args.host, args.port) if tcp else args.path

    def send(fd):
        return send_request(socks[fd], fd, msg, outbuf)

    def start():
        """Open a slot's next connection; False: retry after the next poll."""
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setblocking(False)
        if tcp:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
        err = s.connect_ex(target)
        fd = s.fileno()
        if err == errno.EINPROGRESS:        # TCP: always, even on loopback
            socks[fd] = s
            remaining[fd] = CONNECTING
            ep.register(fd, select.EPOLLOUT)
        elif err == 0:                      # unix: connected (queued) at once
            socks[fd] = s
            remaining[fd] = reply_len
            ep.register(fd, send(fd))
        elif err == errno.EAGAIN and not tcp:
            s.close()                       # unix: the listen backlog is full
            return False
        else:
            s.close()
            connect_failed(err)
        return True

    def finish(fd):
        """The reply is complete: close, start the slot's next connection
        (False: after the next poll, also when --rate has no slot free)."""
        del remaining[fd]
        socks.pop(fd).close()   # also drops it from the epoll set
        if pacer is not None and not pacer.take():
            return False
        return start()

    pacer = Pacer(args.rate) if args.rate else None
    for _ in range(args.conns):
        retry += not start()

    window = Window(args)
    poll = ep.poll
    while not window.done(count):
        if retry and pacer is not None:
            events = pacer.wait(ep, poll)
        else:
            events = poll(0.001 if retry else 1.0)
        if window.stalled(events) and not (retry and pacer):
            raise SystemExit("client: no progress for 5 s")
        for _ in range(retry):
            if pacer is not None and not pacer.take():
                break
            retry -= start()
        for fd, ev in events:
            r = remaining[fd]
            if r == CONNECTING:
                err = socks[fd].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    connect_failed(err)
                remaining[fd] = reply_len
                ep.modify(fd, send(fd))
                continue
            if ev & select.EPOLLOUT:
                continue_sending(ep, fd, send)
            if ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    n = socks[fd].recv_into(buf)
                except BlockingIOError:
                    continue
                except ConnectionError as e:
                    raise SystemExit(f"client: connection lost before the reply: {e}")
                if n == 0:
                    raise SystemExit("client: server closed a connection before the reply")
                r -= n
                if r > 0:
                    remaining[fd] = r
                    continue
                if r < 0:
                    raise SystemExit("client: got more reply bytes than expected")
                count += 1
                retry += not finish(fd)
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
    p.add_argument("--conns", type=int, default=8,
                   help="connections (--reconnect: concurrent connection slots)")
    p.add_argument("--reconnect", action="store_true",
                   help="a new connection per request (connect, send, read reply, close)")
    p.add_argument("--rate", type=float,
                   help="offer at most this many requests/s: a connection whose reply "
                        "is in waits for the next send slot (--reconnect: a slot's next "
                        "connection waits)")
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--warmup", type=float, default=0.3)
    args = p.parse_args()
    if args.addr == "tcp" and not args.port:
        p.error("--addr tcp needs --port")
    if args.rate is not None and args.rate <= 0:
        p.error("--rate must be positive")
    if args.addr == "unix" and not args.path:
        p.error("--addr unix needs --path")
    run(args)


if __name__ == "__main__":
    sys.exit(main())
