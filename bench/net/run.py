"""Network benchmark driver: echo/HTTP servers on each loop vs. a C reference.

    python bench/net/run.py                      # default cells, 3 rounds x 3 s (~10 min)
    python bench/net/run.py --quick              # 1 s per run, 2 rounds (~2 min)
    python bench/net/run.py --only 'protocol-*,http' --loops fastloop,asyncio
    python bench/net/run.py --list               # the cells

For each cell (style x message size x address family) and loop, it starts
servers.py pinned to CPU 1 and client.py pinned to CPU 0, lets the client
warm up, then samples the server's CPU time (user and system, psutil) at the
start and end of the client's measured window. Loops are interleaved
round-robin within each round (the starting loop rotates per round) and the
median of the rounds is reported. The C epoll server (epoll_echo.c, compiled
here with `cc -O2` into a temp dir) is measured the same way as a reference.

The connect-* cells run the client with --reconnect: every request is a new
connection (connect, one echo, close; TCP closes with RST, see client.py), so
their requests/s are connections/s and their CPU per request is the server's
cost of a whole connection: accept, transport and protocol setup, one echo,
teardown. Their C reference is a separate run with the same client mode.

Progress goes to stderr, the markdown tables to stdout.
"""
import argparse
import fnmatch
import json
import os
import platform
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))
LOOPS = ["fastloop", "asyncio", "uvloop", "rloop"]
# --variant DIR: another fastloop build (a checkout with its extensions built
# in place) measured as this loop, for A/B comparisons of a change.
VARIANT = "fastloop-B"
KiB = 1024

# name -> (style, size, addr, two_writes, reconnect); size None = HTTP;
# reconnect: the client opens a new connection per request (--reconnect)
CELLS = {}
for _style in ("protocol", "streams", "sock"):
    for _size, _tag in ((KiB, "1k"), (10 * KiB, "10k"), (100 * KiB, "100k")):
        CELLS[f"{_style}-{_tag}"] = (_style, _size, "tcp", False, False)
        CELLS[f"{_style}-{_tag}-unix"] = (_style, _size, "unix", False, False)
CELLS["http"] = ("http", None, "tcp", False, False)
CELLS["http-2w"] = ("http", None, "tcp", True, False)
CELLS["http-unix"] = ("http", None, "unix", False, False)
CELLS["http-2w-unix"] = ("http", None, "unix", True, False)
# http-task: the response written from a task per request, header then body,
# as ASGI servers (uvicorn) do.
CELLS["http-task"] = ("http-task", None, "tcp", False, False)
CELLS["connect-1k"] = ("protocol", KiB, "tcp", False, True)
CELLS["connect-1k-unix"] = ("protocol", KiB, "unix", False, True)

# --paced: the rate offered to every loop in a cell (requests/s; connect-*:
# connections/s), about 70% of the slowest of uvloop's and rloop's saturated
# rate on this machine (asyncio may fall short: the table marks it). At
# saturation each server runs as fast as it can, so a faster server batches
# fewer requests per poll and sleeps in it more often, and pays for that per
# request; at one offered rate every server does the same work per second.
PACED_RATES = {
    "protocol-1k": 65000, "protocol-10k": 60000, "protocol-100k": 16000,
    "streams-1k": 40000, "streams-10k": 30000, "streams-100k": 9000,
    "sock-1k": 20000, "sock-10k": 15000, "sock-100k": 10000,
    "http": 60000, "http-2w": 40000, "http-task": 30000,
    "protocol-1k-unix": 110000, "connect-1k": 4000,
}

DEFAULT_CELLS = ["protocol-1k", "protocol-10k", "protocol-100k",
                 "streams-1k", "streams-100k", "sock-1k", "sock-100k",
                 "http", "http-2w", "http-task", "protocol-1k-unix", "connect-1k"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Lines:
    """Read lines from a child's stdout with a timeout."""

    def __init__(self, proc):
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.fd, selectors.EVENT_READ)

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sel.select(left):
                raise RuntimeError(f"timed out after {timeout:.0f} s waiting for output")
            chunk = os.read(self.fd, 4096)
            if not chunk:
                raise RuntimeError(f"exited (code {self.proc.wait()}) without the expected output")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode()

    def close(self):
        self.sel.close()


def pin(cpu):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stderr_tail(f):
    f.seek(0)
    lines = f.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def measure(args, tmp, server_cmd, cell, server_env=None, rate=None):
    """One run: return dict of metrics, or raise RuntimeError. rate: the
    requests/s the client offers (paced), or None for as fast as it can."""
    style, size, addr, _, reconnect = cell
    path = os.path.join(tmp, "s.sock")
    if addr == "unix":
        if os.path.exists(path):
            os.unlink(path)
        server_cmd = server_cmd + (["unix", path] if server_cmd[0].endswith("epoll_echo")
                                   else ["--addr", "unix", "--path", path])
    else:
        server_cmd = server_cmd + (["tcp", "127.0.0.1", "0"] if server_cmd[0].endswith("epoll_echo")
                                   else ["--addr", "tcp", "--port", "0"])
    s_err = tempfile.TemporaryFile()
    c_err = tempfile.TemporaryFile()
    server = subprocess.Popen(server_cmd, stdout=subprocess.PIPE, stderr=s_err,
                              preexec_fn=pin(args.server_cpu), env=server_env)
    client = None
    try:
        s_lines = Lines(server)
        try:
            ready = s_lines.readline(20).split()
        except RuntimeError as e:
            raise RuntimeError(f"server {e}: {stderr_tail(s_err)}")
        if ready[:2] == ["ready", "tcp"]:
            target = ["--addr", "tcp", "--host", ready[2], "--port", ready[3]]
        elif ready[:2] == ["ready", "unix"]:
            target = ["--addr", "unix", "--path", ready[2]]
        else:
            raise RuntimeError(f"server said {' '.join(ready)!r}")
        what = ["--http"] if size is None else ["--size", str(size)]
        if reconnect:
            what.append("--reconnect")
        if rate:
            what += ["--rate", str(rate)]
        client = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "client.py"), *target, *what,
             "--conns", str(args.conns), "--duration", str(args.duration),
             "--warmup", str(args.warmup)],
            stdout=subprocess.PIPE, stderr=c_err, preexec_fn=pin(args.client_cpu))
        sp, cp = psutil.Process(server.pid), psutil.Process(client.pid)
        c_lines = Lines(client)
        try:
            if c_lines.readline(args.warmup + 20) != "start":
                raise RuntimeError("unexpected client output")
            sampler = start_sampling(server.pid, tmp) if args.perf_split else None
            s0, c0, t0 = sp.cpu_times(), cp.cpu_times(), time.monotonic()
            sleeps0, fds0 = sp.num_ctx_switches().voluntary, sp.num_fds()
            result = c_lines.readline(args.duration + 20).split()
            s1, c1, t1 = sp.cpu_times(), cp.cpu_times(), time.monotonic()
            sleeps1, fds1 = sp.num_ctx_switches().voluntary, sp.num_fds()
        except RuntimeError as e:
            srv = stderr_tail(s_err)
            raise RuntimeError(f"client {e}: {stderr_tail(c_err)}"
                               + (f" / server stderr: {srv}" if srv else ""))
        if server.poll() is not None:
            raise RuntimeError(f"server died: {stderr_tail(s_err)}")
        count, secs = int(result[1]), float(result[2])
        if count <= 0:
            raise RuntimeError("no requests completed")
        user = s1.user - s0.user
        total = user + s1.system - s0.system
        wall = t1 - t0
        tick_user = user
        if sampler is not None:
            user = total * user_share(sampler)
        return {
            "requests": count, "seconds": secs, "rps": count / secs,
            "cpu_us": total / count * 1e6, "user_us": user / count * 1e6,
            "tick_user_us": tick_user / count * 1e6,
            "server_util": total / wall,
            # Voluntary context switches: times the server blocked (in its
            # poll, mostly) and was woken; each costs kernel time.
            "sleeps_per_req": (sleeps1 - sleeps0) / count,
            # Open fds gained per request: ~0 for a server that closes what
            # it accepts (connect-* cells), ~1 for one that leaks them.
            "fds_per_req": (fds1 - fds0) / count,
            "client_util": (c1.user - c0.user + c1.system - c0.system) / wall,
        }
    finally:
        if client is not None and client.poll() is None:
            try:
                client.wait(5)
            except subprocess.TimeoutExpired:
                client.kill()
                client.wait()
        stop(server)
        s_err.close()
        c_err.close()


# The kernel splits a process's CPU time into user and system by sampling at
# its tick (250 Hz here): a server spending 5% of its time in user space gets
# ~40 user samples in a 3 s run, +-15%. --perf-split samples the server at
# PERF_HZ with perf instead and applies that split to the same total.
PERF_HZ = 10000


def start_sampling(pid, tmp):
    out = os.path.join(tmp, f"perf.{pid}.data")
    proc = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(PERF_HZ),
                             "-p", str(pid), "-o", out],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.05)        # perf attaches
    return proc, out


def user_share(sampler):
    """The fraction of the samples taken outside the kernel."""
    proc, out = sampler
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    report = subprocess.run(["perf", "report", "-i", out, "--stdio", "--sort", "dso",
                             "-F", "overhead,dso"],
                            capture_output=True, text=True, check=True).stdout
    os.unlink(out)
    kernel = sum(float(line.split("%")[0]) for line in report.splitlines()
                 if "[kernel" in line and not line.startswith("#"))
    return 1.0 - kernel / 100.0


def c_key(args, cell):
    """The C reference run that serves this cell: one per workload (and,
    paced, per offered rate), shared by the cells of the three echo styles."""
    style, size, addr, _, reconnect = CELLS[cell]
    rate = cell_rate(args, cell)
    return (("connect-" if reconnect else "") + ("http" if size is None else f"echo-{size // KiB}k")
            + ("-unix" if addr == "unix" else "") + (f"@{rate:g}" if rate else ""))


def rate_unit(cell):
    return "conn/s" if CELLS[cell][4] else "req/s"


def fmt_rps(x):
    return "-" if x is None else (f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}")


def fmt_ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}"


def med(runs, key):
    vals = [r[key] for r in runs]
    return statistics.median(vals) if vals else None


def paired_ratios(mine, theirs):
    """Median over the rounds both loops completed of my CPU per request over
    theirs: (total, user), or (None, None)."""
    by_round = {r["round"]: r for r in theirs}
    pairs = [(r, by_round[r["round"]]) for r in mine if r["round"] in by_round]
    if not pairs:
        return None, None
    return (statistics.median(a["cpu_us"] / b["cpu_us"] for a, b in pairs),
            statistics.median(a["user_us"] / b["user_us"] for a, b in pairs if b["user_us"] > 0))


def report(args, cells, loops, results, cref, failures, meta):
    cols = loops + (["C epoll"] if not args.no_c else [])
    ratio_to = [l for l in ("asyncio", "uvloop", "rloop", VARIANT) if l in loops and "fastloop" in loops]

    def get(cell, col):
        runs = cref.get(c_key(args, cell), []) if col == "C epoll" else results[cell][col]
        return runs

    def per_loop_table(fmt, needs=None):
        """A table of one figure per cell and loop: fmt(runs) of the runs
        that have `needs` (all when None), "-" where there are none."""
        lines = ["| cell | " + " | ".join(cols) + " |", "|---" * (1 + len(cols)) + "|"]
        for cell in cells:
            row = []
            for c in cols:
                runs = [r for r in get(cell, c) if needs is None or needs in r]
                row.append(fmt(runs) if runs else "-")
            lines.append(f"| {cell} | " + " | ".join(row) + " |")
        return lines

    out = []
    if args.paced:
        out.append("**Paced**: the client offers each cell's rate (`PACED_RATES` in "
                   "run.py) to every loop, so CPU per request compares servers doing the "
                   "same work per second. Requests/s marked * fell short of the offered "
                   "rate by more than 3%: that server was saturated.")
        out.append("")
    out.append(f"Machine: {meta['machine']}; server on CPU {args.server_cpu}, client on CPU "
               f"{args.client_cpu}; {args.conns} connections, {args.duration:g} s per run "
               f"(+{args.warmup:g} s warmup), median of {args.rounds} rounds; "
               f"load average {meta['load_before']} before, {meta['load_after']} after; "
               f"total {meta['elapsed']:.0f} s.")
    out.append("")
    head = "| cell | " + " | ".join(cols) + "".join(f" | fl/{l}" for l in ratio_to) + " |"
    sep = "|---" * (1 + len(cols) + len(ratio_to)) + "|"

    out.append("**Requests/s** (higher is better; ratio > 1: fastloop faster)")
    out.append("")
    out += [head, sep]
    for cell in cells:
        m = {c: med(get(cell, c), "rps") for c in cols}
        offered = cell_rate(args, cell)
        row = [fmt_rps(m[c]) + ("*" if offered and m[c] and m[c] < 0.97 * offered else "")
               for c in cols] + [fmt_ratio(m["fastloop"], m[l]) for l in ratio_to]
        out.append(f"| {cell} | " + " | ".join(row) + " |")
    if any(CELLS[c][4] for c in cells):
        out.append("")
        out.append("connect-* cells: a new connection per request, so requests/s = "
                   "connections/s, and CPU per request = CPU per connection (accept, "
                   "setup, one echo, close).")
    out.append("")
    out.append("**Server CPU µs per request: total (user-space part)** "
               "(lower is better; ratio of totals < 1: fastloop cheaper)")
    out.append("")
    out += [head, sep]
    for cell in cells:
        m = {c: med(get(cell, c), "cpu_us") for c in cols}
        u = {c: med(get(cell, c), "user_us") for c in cols}
        row = ["-" if m[c] is None else f"{m[c]:.1f} ({u[c]:.1f})" for c in cols]
        row += [fmt_ratio(m["fastloop"], m[l]) for l in ratio_to]
        out.append(f"| {cell} | " + " | ".join(row) + " |")
    out.append("")
    out.append("User-space part: " + (
        f"the share of perf samples ({PERF_HZ} Hz, --perf-split) outside the kernel."
        if args.perf_split else
        "the kernel's tick-sampled user/system split (250 Hz here: +-15% per run "
        "for a server at 5% user time; --perf-split samples at 10 kHz)."))
    if ratio_to and args.rounds > 1:
        out.append("")
        out.append("**Paired ratios of server CPU per request**: fastloop ÷ the other loop "
                   "within each round, median over rounds, total (user-space part). The "
                   "machine drifts between kernel-time states during a run and the loops "
                   "of one round run back to back, so these are steadier than the ratios "
                   "of the medians above.")
        out.append("")
        out += ["| cell | " + " | ".join(f"fl/{l}" for l in ratio_to) + " |",
                "|---" * (1 + len(ratio_to)) + "|"]
        for cell in cells:
            row = []
            for l in ratio_to:
                tot, usr = paired_ratios(results[cell]["fastloop"], results[cell][l])
                row.append("-" if tot is None else f"{tot:.2f} ({usr:.2f})")
            out.append(f"| {cell} | " + " | ".join(row) + " |")
    out.append("")
    out.append("**Saturation: server CPU % / client CPU %** (of one core, median). "
               "Server well below 100% while the client is near 100%: the cell is "
               "client-bound, compare CPU/request rather than requests/s.")
    out.append("")
    out += per_loop_table(lambda runs: f"{med(runs, 'server_util') * 100:.0f} / "
                                       f"{med(runs, 'client_util') * 100:.0f}")
    out.append("")
    out.append("**Server sleeps per request** (voluntary context switches, median): "
               "each block in the poller and wake-up costs kernel time, which a server "
               "that is often ahead of its client pays more often.")
    out.append("")
    out += per_loop_table(lambda runs: f"{med(runs, 'sleeps_per_req'):.3f}", "sleeps_per_req")
    leaks = []
    for cell in cells:
        for c in cols:
            held = med([r for r in get(cell, c) if "fds_per_req" in r], "fds_per_req")
            if held is not None and held > 0.1:
                leaks.append(f"{cell}/{c} {held:.2f}")
    if leaks:
        out.append("")
        out.append("**Open fds gained per request** (a server that closes the connections "
                   "it accepts holds about as many fds at the end of a run as at the "
                   "start; these did not, so their CPU per request leaves out part of "
                   "a connection's teardown): " + ", ".join(leaks) + ".")
    noisy = []
    for cell in cells:
        for c in cols:
            vals = [r["rps"] for r in get(cell, c)]
            if len(vals) >= 2:
                spread = (max(vals) - min(vals)) / statistics.median(vals)
                if spread > 0.25:
                    noisy.append(f"{cell}/{c} {spread * 100:.0f}%")
    out.append("")
    if noisy:
        out.append("Noisy (requests/s max-min across rounds > 25% of median): " + ", ".join(noisy) + ".")
    else:
        out.append("No cell varied by more than 25% across rounds.")
    if failures:
        out.append("")
        out.append("Skipped (failed in a run, not retried):")
        for (cell, loop), msg in sorted(failures.items()):
            out.append(f"* {cell} / {loop}: {msg}")
    return "\n".join(out)


def cell_rate(args, cell):
    """The requests/s the client offers in this cell: --rate, or with
    --paced the cell's PACED_RATES entry; None means unpaced."""
    if args.rate:
        return args.rate
    return PACED_RATES[cell] if args.paced else None


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--loops", default=",".join(LOOPS), help="comma-separated (default: all four)")
    p.add_argument("--variant", metavar="DIR",
                   help=f"also measure the fastloop built in place in checkout DIR, as "
                        f"{VARIANT!r} (A/B comparison of a change)")
    p.add_argument("--only", help="comma-separated cell names or fnmatch patterns "
                                  "('protocol-*', 'all'); default: the default cells, see --list")
    p.add_argument("--list", action="store_true", help="list the cells and exit")
    p.add_argument("--rounds", type=int, help="default 3 (--quick: 2)")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 3, --quick: 1)")
    p.add_argument("--warmup", type=float, help="seconds before measuring (default 0.3, --quick: 0.2)")
    p.add_argument("--quick", action="store_true", help="1 s runs, 2 rounds")
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--no-c", action="store_true", help="skip the C epoll reference")
    p.add_argument("--server-cpu", type=int, default=1)
    p.add_argument("--client-cpu", type=int, default=0)
    p.add_argument("--paced", action="store_true",
                   help="offer each cell's fixed rate (PACED_RATES) to every loop instead "
                        "of running each as fast as it goes")
    p.add_argument("--rate", type=float,
                   help="offer this many requests/s in every cell (paced, as --paced)")
    p.add_argument("--json", help="also write every run's raw numbers here")
    p.add_argument("--perf-split", action="store_true",
                   help="split server CPU into user/system from perf samples at "
                        f"{PERF_HZ} Hz instead of the kernel's tick (needs perf)")
    args = p.parse_args()
    for name, normal, quick in (("rounds", 3, 2), ("duration", 3.0, 1.0), ("warmup", 0.3, 0.2)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)

    if args.list:
        for name, (style, size, addr, tw, rc) in CELLS.items():
            mark = "*" if name in DEFAULT_CELLS else " "
            what = "GET, 13-byte body" + (", header+body as 2 writes" if tw else "") \
                + (", header+body as 2 writes from a task" if style == "http-task" else "") \
                if size is None else f"{size // KiB} KiB echo"
            what += ", new connection per request" if rc else ""
            print(f"{mark} {name:18} {style:9} {addr:5} {what}")
        print("(* = default)")
        return

    loops = [l.strip() for l in args.loops.split(",") if l.strip()]
    if args.variant:
        loops.append(VARIANT)
    for l in loops:
        if l not in LOOPS and l != VARIANT:
            p.error(f"unknown loop {l!r}")
    if args.only:
        pats = [x.strip() for x in args.only.split(",") if x.strip()]
        cells = [c for c in CELLS if any(x == "all" or fnmatch.fnmatchcase(c, x) for x in pats)]
        if not cells:
            p.error(f"--only {args.only!r} matches no cell (see --list)")
    else:
        cells = list(DEFAULT_CELLS)
    if args.rate:
        args.paced = True
    unrated = [c for c in cells if c not in PACED_RATES]
    if args.paced and not args.rate and unrated:
        p.error(f"--paced has no rate for {', '.join(unrated)}; give one with --rate")

    allowed = os.sched_getaffinity(0)
    for name in ("server_cpu", "client_cpu"):
        if getattr(args, name) not in allowed:
            log(f"note: CPU {getattr(args, name)} not available, {name} not pinned")
            setattr(args, name, None)
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})   # keep the driver off the server's CPU

    tmp = tempfile.mkdtemp(prefix="fastloop-net-")
    try:
        epoll_bin = None
        if not args.no_c:
            epoll_bin = os.path.join(tmp, "epoll_echo")
            subprocess.run(["cc", "-O2", "-o", epoll_bin, os.path.join(HERE, "epoll_echo.c")],
                           check=True)

        c_needed = [] if args.no_c else sorted({c_key(args, c) for c in cells})
        n_runs = args.rounds * (len(cells) * len(loops) + len(c_needed))
        log(f"{len(cells)} cells x {len(loops)} loops + {len(c_needed)} C reference runs, "
            f"{args.rounds} rounds = {n_runs} runs, about "
            f"{n_runs * (args.duration + args.warmup + 0.6) / 60:.1f} min")

        results = {c: {l: [] for l in loops} for c in cells}
        cref = {k: [] for k in c_needed}
        failures = {}
        meta = {"machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python "
                           f"{platform.python_version()}",
                "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg())}
        t_start = time.monotonic()
        for rnd in range(args.rounds):
            order = loops[rnd % len(loops):] + loops[:rnd % len(loops)]
            done_c = set()
            for cell in cells:
                spec = CELLS[cell]
                style, size, addr, two, _ = spec
                runs = []
                k = c_key(args, cell)
                if epoll_bin and k not in done_c:
                    done_c.add(k)
                    runs.append(("C epoll", [epoll_bin] + (["-H"] if size is None else [])))
                for loop in order:
                    cmd = [sys.executable, os.path.join(HERE, "servers.py"),
                           "--loop", "fastloop" if loop == VARIANT else loop,
                           "--style", style] + (["--two-writes"] if two else [])
                    runs.append((loop, cmd))
                for who, cmd in runs:
                    env = None
                    if who == VARIANT:
                        env = dict(os.environ, PYTHONPATH=os.path.abspath(args.variant))
                    key = (k if who == "C epoll" else cell, who)
                    if key in failures:
                        continue
                    try:
                        r = measure(args, tmp, cmd, spec, env, cell_rate(args, cell))
                    except RuntimeError as e:
                        failures[key] = str(e)[:300]
                        log(f"[{rnd + 1}/{args.rounds}] {key[0]:20} {who:8} FAILED: {failures[key]}")
                        continue
                    r["round"] = rnd
                    (cref[k] if who == "C epoll" else results[cell][who]).append(r)
                    log(f"[{rnd + 1}/{args.rounds}] {key[0]:20} {who:8} {r['rps']:9.0f} {rate_unit(cell)} "
                        f"{r['cpu_us']:7.1f} us/req (user {r['user_us']:.1f}) "
                        f"srv {r['server_util'] * 100:3.0f}% cli {r['client_util'] * 100:3.0f}%")
        meta["elapsed"] = time.monotonic() - t_start
        meta["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        # A failure in a later round leaves earlier runs: report the loop as skipped.
        for (cell, who) in failures:
            if who == "C epoll":
                cref[cell] = []
            else:
                results[cell][who] = []
        print(report(args, cells, loops, results, cref, failures, meta))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"args": vars(args), "meta": meta, "results": results, "c_ref": cref,
                           "failures": {f"{c}/{w}": m for (c, w), m in failures.items()}}, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
