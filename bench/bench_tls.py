"""TLS echo benchmark: fastloop vs asyncio, uvloop and rloop.

    python bench/bench_tls.py [--duration 2] [--rounds 3] [--conns 8] [--sizes 1024,16384]

A TLS echo server (create_server(ssl=...) with an asyncio.Protocol that
writes back what it receives) and --conns streams clients
(open_connection(ssl=...)) doing ping-pong run on the same loop, in one
process pinned to one CPU if possible, so the figure is the loop's whole TLS
cost for both ends. Certificates come from trustme (a throwaway CA). Loops
run interleaved, rounds rotate the starting loop; the table gives median
requests/s and process CPU µs per request, and ratios (> 1: fastloop
better).
"""
import argparse
import asyncio
import os
import ssl
import statistics
import sys
import time

from _common import loop_factories


def contexts():
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def client(host, port, ctx, message, deadline, counts):
    reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
    n = 0
    try:
        while time.perf_counter() < deadline:
            writer.write(message)
            await reader.readexactly(len(message))
            n += 1
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass
    counts.append(n)


async def run_once(server_ctx, client_ctx, size, conns, duration):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    message = os.urandom(size)
    # warm up (handshakes happen here, outside the measured window)
    counts = []
    deadline = time.perf_counter() + duration
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await asyncio.gather(*(client("127.0.0.1", port, client_ctx, message, deadline, counts)
                           for _ in range(conns)))
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    server.close()
    await server.wait_closed()
    total = sum(counts)
    return total / elapsed, cpu / total * 1e6


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--sizes", default="1024,16384")
    args = p.parse_args()
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
        except OSError:
            pass
    server_ctx, client_ctx = contexts()
    loops = loop_factories()
    names = list(loops)
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {(size, name): [] for size in sizes for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for size in sizes:
            for name in order:
                loop = loops[name]()
                try:
                    results[size, name].append(loop.run_until_complete(
                        run_once(server_ctx, client_ctx, size, args.conns, args.duration)))
                except Exception as exc:
                    print(f"{name} {size}: {type(exc).__name__}: {exc}", file=sys.stderr)
                finally:
                    loop.close()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"Python {sys.version.split()[0]}, OpenSSL {ssl.OPENSSL_VERSION.split()[1]}, "
          f"{args.conns} connections, {args.duration} s x {args.rounds} rounds, medians\n")
    others = [n for n in names if n != "fastloop"]
    print("| TLS echo | " + " | ".join(f"{n} req/s (CPU µs/req)" for n in names) + " | "
          + " | ".join(f"fastloop/{n} req/s" for n in others) + " |")
    print("|---" * (len(names) + len(others) + 1) + "|")
    for size in sizes:
        med = {}
        for n in names:
            if results[size, n]:
                med[n] = (statistics.median(x[0] for x in results[size, n]),
                          statistics.median(x[1] for x in results[size, n]))
        cells = [f"{med[n][0] / 1e3:.1f}k ({med[n][1]:.1f})" if n in med else "n/a" for n in names]
        ratios = [f"{med['fastloop'][0] / med[n][0]:.2f}x" if n in med else "n/a" for n in others]
        print(f"| {size // 1024} KiB | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
