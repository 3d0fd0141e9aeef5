"""Would an io_uring loop serve a request with less CPU than an epoll one?

    python bench/net/uring_probe.py                          # protocol-1k and protocol-100k, paced
    python bench/net/uring_probe.py --cells protocol-1k --rounds 5

Runs the two plain C echo servers, epoll_echo.c (readiness: epoll_wait,
recv, send per request) and uring_echo.c (completions: one io_uring_enter
per request), under the same paced client and measurement as run.py
(run.measure: server pinned to CPU 1, client to CPU 0, server CPU time per
request, user part from perf samples), interleaved round by round, and
prints the medians. Neither server runs Python: what differs is only what
the kernel does per request. Needs liburing (apt-get install liburing-dev)
and perf. The result is in docs/DESIGN.md ("A completion-based core").
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import types

import run

SERVERS = {
    "epoll": ("epoll_echo.c", []),
    "io_uring": ("uring_echo.c", ["-luring"]),
    "io_uring defer": ("uring_echo.c", ["-luring"]),   # URING_FLAGS=defer
}


def build(tmp):
    """Compile both servers; return {name: (argv, env)}."""
    made = {}
    for name, (src, libs) in SERVERS.items():
        exe = os.path.join(tmp, os.path.splitext(src)[0])
        if not os.path.exists(exe):
            subprocess.run(["cc", "-O2", "-o", exe, os.path.join(run.HERE, src), *libs], check=True)
        # run.measure() gives "tcp 127.0.0.1 0" to a command whose name ends in epoll_echo.
        alias = os.path.join(tmp, name.replace(" ", "_") + "_epoll_echo")
        if not os.path.exists(alias):
            os.symlink(exe, alias)
        env = dict(os.environ, URING_FLAGS="defer") if name.endswith("defer") else None
        made[name] = ([alias], env)
    return made


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="protocol-1k,protocol-100k",
                   help="comma-separated TCP echo cells of run.py (their PACED_RATES)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--duration", type=float, default=3.0)
    args = p.parse_args()
    cells = args.cells.split(",")
    for cell in cells:
        style, size, addr, two, reconnect = run.CELLS[cell]
        if size is None or addr != "tcp" or two or reconnect:
            p.error(f"{cell}: only the TCP echo cells apply")
    opts = types.SimpleNamespace(server_cpu=1, client_cpu=0, conns=8, duration=args.duration,
                                 warmup=0.3, perf_split=True)
    with tempfile.TemporaryDirectory() as tmp:
        servers = build(tmp)
        results = {(c, s): [] for c in cells for s in servers}
        for rnd in range(args.rounds):
            for cell in cells:
                for name, (argv, env) in servers.items():
                    r = run.measure(opts, tmp, argv, run.CELLS[cell], env, run.PACED_RATES[cell])
                    results[cell, name].append(r)
                    run.log(f"[{rnd + 1}/{args.rounds}] {cell:14} {name:15} {r['rps']:8.0f} req/s "
                            f"{r['cpu_us']:6.2f} us/req (user {r['user_us']:.2f})")
    print("| cell | server | req/s | CPU us/req | user us/req | CPU vs epoll |")
    print("|---|---|---|---|---|---|")
    for cell in cells:
        base = statistics.median(r["cpu_us"] for r in results[cell, "epoll"])
        for name in servers:
            runs = results[cell, name]
            cpu = statistics.median(r["cpu_us"] for r in runs)
            print(f"| {cell} | {name} | {statistics.median(r['rps'] for r in runs):.0f} | {cpu:.2f} | "
                  f"{statistics.median(r['user_us'] for r in runs):.2f} | {cpu / base:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
