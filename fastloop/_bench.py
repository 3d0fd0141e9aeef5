"""Scheduling micro-benchmarks for fastloop (and asyncio, uvloop, rloop).

This module is the single source of truth for the benchmark *workloads*.  Two
drivers use it:

* ``python -m fastloop bench`` -- the small dependency-free runner below
  (``run()``), good for a quick look;
* ``bench/bench_scheduling.py`` -- a pyperf driver for careful numbers.

Each workload is a function ``(loop_factory, n) -> seconds``: it creates a
fresh loop with ``loop_factory()``, does its untimed setup, times exactly the
``n`` operations, checks that ``n`` operations really happened, closes the loop
and returns the elapsed time of the timed part.  ``n / seconds`` is ops/s.

The module deliberately imports neither fastloop's compiled core nor any
third-party loop at import time, so it also runs as a plain script
(``python3 fastloop/_bench.py --quick``) while the core is not built yet.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import operator
import platform
import random
import statistics
import sys
import threading
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

clock = time.perf_counter

# Loops in table order; fastloop is the one the ratios are about.
LOOP_NAMES = ("fastloop", "asyncio", "uvloop", "rloop")
BASELINES = ("asyncio", "uvloop", "rloop")

# A workload that has not finished after this long is treated as hung (e.g. a
# lost callback): a watchdog thread stops the loop and the workload fails its
# op-count check instead of blocking the whole run forever.
WATCHDOG_SECONDS = 60.0

TIMER_WINDOW = 0.001  # call_later delays are spread over [0, 1 ms)
CHURN_CHUNK = 1000    # timer_churn: call_later+cancel pairs per loop iteration
SLEEP0_TASKS = 1000
QUEUE_MAXSIZE = 8     # small bound: producer and consumer really hand off


class Workload(NamedTuple):
    name: str
    func: Callable[[Callable[[], asyncio.AbstractEventLoop], int], float]
    n: int            # default op count: ~0.1-1 s per run on asyncio
    doc: str


WORKLOADS: Dict[str, Workload] = {}


def _check(ok: bool, what: str) -> None:
    # Not `assert`: the op-count checks must survive `python -O`.
    if not ok:
        raise AssertionError(what)


def _wake(loop) -> None:
    try:
        loop.call_soon_threadsafe(loop.stop)
    except RuntimeError:  # loop already closed
        pass


def workload(name: str, n: int):
    """Register ``body(loop, n) -> seconds`` as workload ``name``.

    The registered function has the public signature ``(loop_factory, n)``;
    loop creation, GC state, the watchdog and ``loop.close()`` are handled here
    once so the bodies only contain the timed work and their op-count check.
    """
    def decorator(body):
        def timed(loop_factory, n: int = n) -> float:
            if n < 1:
                raise ValueError("n must be >= 1")
            loop = loop_factory()
            # Start every measurement from the same heap state: garbage from
            # the previous run must not be collected inside this one.  The GC
            # stays enabled, though: a loop that allocates many GC-tracked
            # objects per op pays for it, as it would in production.
            gc.collect()
            watchdog = threading.Timer(WATCHDOG_SECONDS, _wake, (loop,))
            watchdog.daemon = True
            watchdog.start()
            try:
                return body(loop, n)
            finally:
                watchdog.cancel()
                loop.close()

        timed.__name__ = timed.__qualname__ = name
        timed.__doc__ = body.__doc__
        doc = " ".join((body.__doc__ or "").split("\n\n")[0].split())
        WORKLOADS[name] = Workload(name, timed, n, doc)
        return timed
    return decorator


def _noop():
    pass


# --------------------------------------------------------------------------
# call_soon
#
# The batched variants use C-level callbacks so that the numbers are dominated
# by the loop's own per-handle cost (allocation, queueing, dispatch) rather
# than by executing a Python function; each one still leaves a countable trace.

def _run_batch(loop, t0: float) -> float:
    # Callbacks run FIFO, so a stop() queued after the batch runs last.
    loop.call_soon(loop.stop)
    loop.run_forever()
    return clock() - t0


@workload("call_soon", 200_000)
def call_soon(loop, n):
    """Schedule n zero-argument callbacks, then run them all."""
    counter = itertools.count()
    callback, call_soon = counter.__next__, loop.call_soon
    t0 = clock()
    for _ in range(n):
        call_soon(callback)
    dt = _run_batch(loop, t0)
    _check(next(counter) == n, "call_soon: not all callbacks ran")
    return dt


@workload("call_soon_1arg", 200_000)
def call_soon_1arg(loop, n):
    """Schedule n one-argument callbacks, then run them all."""
    out: List[int] = []
    append, call_soon = out.append, loop.call_soon
    t0 = clock()
    for i in range(n):
        call_soon(append, i)
    dt = _run_batch(loop, t0)
    _check(len(out) == n and out[-1] == n - 1, "call_soon_1arg: wrong result")
    return dt


@workload("call_soon_3arg", 200_000)
def call_soon_3arg(loop, n):
    """Schedule n three-argument callbacks, then run them all."""
    out = [0] * n
    setitem, call_soon = operator.setitem, loop.call_soon
    t0 = clock()
    for i in range(n):
        call_soon(setitem, out, i, 1)
    dt = _run_batch(loop, t0)
    _check(sum(out) == n, "call_soon_3arg: not all callbacks ran")
    return dt


@workload("call_soon_chain", 100_000)
def call_soon_chain(loop, n):
    """Each callback schedules the next: one full loop iteration (with a
    zero-timeout poll) per op."""
    done = 0

    def step():
        nonlocal done
        done += 1
        if done < n:
            call_soon(step)
        else:
            loop.stop()

    call_soon = loop.call_soon
    t0 = clock()
    call_soon(step)
    loop.run_forever()
    dt = clock() - t0
    _check(done == n, "call_soon_chain: chain broken")
    return dt


# --------------------------------------------------------------------------
# timers

def _delays(n: int) -> List[float]:
    # Deterministic "random" deadlines so that every loop sees the same heap
    # insertion order.  The window is tiny on purpose: every timer is due by
    # the time the loop runs, so we measure heap push/pop and dispatch, not
    # wall-clock sleeping.
    rnd = random.Random(12345)
    return [rnd.random() * TIMER_WINDOW for _ in range(n)]


def _stopper(loop, expected: int):
    """A callback that stops ``loop`` on its ``expected``-th call, plus a
    function returning how many calls happened."""
    count = 0

    def fired():
        nonlocal count
        count += 1
        if count == expected:
            loop.stop()

    return fired, lambda: count


@workload("call_later", 100_000)
def call_later(loop, n):
    """n timers with pseudo-random delays in a 1 ms window, run until all
    have fired."""
    delays = _delays(n)
    fired, count = _stopper(loop, n)
    later = loop.call_later
    t0 = clock()
    for d in delays:
        later(d, fired)
    loop.run_forever()
    dt = clock() - t0
    _check(count() == n, "call_later: not all timers fired")
    return dt


@workload("call_later_cancel90", 100_000)
def call_later_cancel90(loop, n):
    """n timers, 90% cancelled before they are due; run until the rest fired."""
    delays = _delays(n)
    keep = len(range(0, n, 10))  # timers with i % 10 == 0 survive
    fired, count = _stopper(loop, keep)
    later = loop.call_later
    t0 = clock()
    handles = [later(d, fired) for d in delays]
    for i, h in enumerate(handles):
        if i % 10:
            h.cancel()
    loop.run_forever()
    dt = clock() - t0
    _check(count() == keep, "call_later_cancel90: wrong number of timers fired")
    return dt


@workload("timer_churn", 500_000)
def timer_churn(loop, n):
    """call_later() immediately followed by cancel(), n times, inside a
    running loop (so the loop also has to purge the cancelled timers)."""
    done = 0

    def churn():
        nonlocal done
        k = min(CHURN_CHUNK, n - done)
        for _ in range(k):
            later(60.0, _noop).cancel()
        done += k
        if done < n:
            loop.call_soon(churn)
        else:
            loop.stop()

    later = loop.call_later
    t0 = clock()
    loop.call_soon(churn)
    loop.run_forever()
    dt = clock() - t0
    _check(done == n, "timer_churn: stopped early")
    return dt


# --------------------------------------------------------------------------
# tasks and futures

@workload("sleep0", 200_000)
def sleep0(loop, n):
    """asyncio.sleep(0) ping-pong across 1000 tasks (n sleeps in total)."""
    ntasks = min(SLEEP0_TASKS, n)
    per_task, extra = divmod(n, ntasks)
    done = 0

    async def worker(k):
        nonlocal done
        for _ in range(k):
            await asyncio.sleep(0)
        done += k

    async def main():
        await asyncio.gather(*[worker(per_task + (i < extra))
                               for i in range(ntasks)])

    t0 = clock()
    loop.run_until_complete(main())
    dt = clock() - t0
    _check(done == n, "sleep0: wrong number of sleeps")
    return dt


@workload("gather", 50_000)
def gather(loop, n):
    """create_task() + gather() of n trivial coroutines."""
    async def leaf(i):
        return i

    async def main():
        create_task = loop.create_task
        return await asyncio.gather(*[create_task(leaf(i)) for i in range(n)])

    t0 = clock()
    results = loop.run_until_complete(main())
    dt = clock() - t0
    _check(len(results) == n and results[-1] == n - 1, "gather: wrong results")
    return dt


@workload("future", 100_000)
def future(loop, n):
    """Future round trip: create, resolve via call_soon(fut.set_result),
    await."""
    async def main():
        create_future = loop.create_future
        call_soon = loop.call_soon
        total = 0
        for _ in range(n):
            fut = create_future()
            call_soon(fut.set_result, 1)
            total += await fut
        return total

    t0 = clock()
    total = loop.run_until_complete(main())
    dt = clock() - t0
    _check(total == n, "future: wrong number of round trips")
    return dt


@workload("queue", 100_000)
def queue(loop, n):
    """asyncio.Queue(maxsize=8) producer/consumer, n items."""
    async def main():
        q: asyncio.Queue = asyncio.Queue(QUEUE_MAXSIZE)

        async def producer():
            put = q.put
            for i in range(n):
                await put(i)

        async def consumer():
            get = q.get
            last = -1
            for _ in range(n):
                last = await get()
            return last

        prod = loop.create_task(producer())
        last = await consumer()
        await prod
        return last

    t0 = clock()
    last = loop.run_until_complete(main())
    dt = clock() - t0
    _check(last == n - 1, "queue: items lost")
    return dt


@workload("threadsafe", 100_000)
def threadsafe(loop, n):
    """call_soon_threadsafe() from another thread; the loop counts callbacks
    until n arrived."""
    fired, count = _stopper(loop, n)

    def producer():
        call = loop.call_soon_threadsafe
        for _ in range(n):
            call(fired)

    thread = threading.Thread(target=producer, daemon=True)
    t0 = clock()
    # Start the producer only once the loop is running, so the loop is
    # already in its poll when the first wakeup arrives.
    loop.call_soon(thread.start)
    loop.run_forever()
    dt = clock() - t0
    thread.join()
    _check(count() == n, "threadsafe: callbacks lost")
    return dt


# --------------------------------------------------------------------------
# event loop implementations

def _factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """Import the implementation ``name`` and return its loop factory.

    Factories never go through the event loop policy, so benchmarks stay
    correct even after ``fastloop.install()`` / ``uvloop.install()``.
    """
    if name == "asyncio":
        return asyncio.SelectorEventLoop
    if name == "fastloop":
        import fastloop
        return fastloop.new_event_loop
    if name == "uvloop":
        import uvloop
        return uvloop.new_event_loop
    if name == "rloop":
        import rloop
        return rloop.new_event_loop
    raise ValueError(f"unknown event loop {name!r} (choose from {', '.join(LOOP_NAMES)})")


def loop_factories(names: Optional[Sequence[str]] = None):
    """Return ``(factories, skipped)`` for the requested (default: all)
    loops; ``skipped`` maps each loop that cannot be used to the reason.

    A loop is only usable if it imports *and* can create and close a loop, so
    a half-built fastloop is reported here rather than crashing mid-run.
    """
    factories, skipped = {}, {}
    for name in names or LOOP_NAMES:
        try:
            factory = _factory(name)
            factory().close()
        except ValueError:
            raise
        except Exception as exc:
            skipped[name] = f"{type(exc).__name__}: {exc}"
        else:
            factories[name] = factory
    return factories, skipped


def describe_loops(names: Sequence[str]) -> Dict[str, str]:
    """Version (and fastloop's poller backend) of each loop, for reports."""
    from importlib import metadata
    info = {}
    for name in names:
        if name == "asyncio":
            info[name] = f"(Python {platform.python_version()})"
            continue
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if not version:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = "?"
        info[name] = version
        if name == "fastloop":
            loop = _factory(name)()
            poller = getattr(loop, "_poller_name", None)
            loop.close()
            if poller:
                info[name] += f" ({poller})"
    return info


def select_workloads(names: Optional[Sequence[str]] = None) -> List[Workload]:
    if not names:
        return list(WORKLOADS.values())
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)} "
                         f"(choose from {', '.join(WORKLOADS)})")
    return [WORKLOADS[name] for name in names]


# --------------------------------------------------------------------------
# reporting (shared with bench/compare.py)

def _fmt_rate(ops: Optional[float]) -> str:
    if ops is None:
        return "-"
    if ops >= 1e6:
        return f"{ops / 1e6:.2f}M"
    if ops >= 1e3:
        return f"{ops / 1e3:.0f}k"
    return f"{ops:.0f}"


def _ratio_columns(loops: Sequence[str]):
    """(header, baselines) for each ratio column that can be computed."""
    if "fastloop" not in loops:
        return []
    cols = [(f"fastloop/{b}", (b,)) for b in BASELINES if b in loops]
    fast_rivals = tuple(b for b in ("uvloop", "rloop") if b in loops)
    if len(fast_rivals) == 2:
        cols.append(("fastloop/best(uv,r)", fast_rivals))
    return cols


def format_table(results: Dict[str, Dict[str, float]],
                 loops: Sequence[str]) -> str:
    """Markdown table of ops/s per loop (one row per benchmark) plus
    fastloop's speed ratios.

    ``results`` maps benchmark -> loop -> ops/s.  A ratio > 1 means fastloop
    is faster; "best(uv,r)" compares against the faster of uvloop and rloop
    for each benchmark.  The last row is the geometric mean of each ratio.
    """
    loops = [name for name in LOOP_NAMES if name in loops] + \
            [name for name in loops if name not in LOOP_NAMES]
    ratio_cols = _ratio_columns(loops)
    header = ["ops/s"] + list(loops) + \
             [title for title, _ in ratio_cols]
    rows, logs = [], {title: [] for title, _ in ratio_cols}
    for bench, per_loop in results.items():
        row = [bench] + [_fmt_rate(per_loop.get(name)) for name in loops]
        for title, bases in ratio_cols:
            fast = per_loop.get("fastloop")
            base = [per_loop[b] for b in bases if b in per_loop]
            if fast and len(base) == len(bases):
                ratio = fast / max(base)
                logs[title].append(math.log(ratio))
                row.append(f"{ratio:.2f}x")
            else:
                row.append("-")
        rows.append(row)
    if ratio_cols and len(rows) > 1:
        rows.append(["**geomean**"] + [""] * len(loops) +
                    [f"{math.exp(statistics.fmean(v)):.2f}x" if v else "-"
                     for v in logs.values()])

    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]

    def line(cells):
        return "| " + " | ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))) + " |"

    sep = "|" + "|".join("-" * (w + 1) + (":" if i else "-")
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([line(header), sep] + [line(r) for r in rows])


# --------------------------------------------------------------------------
# the simple runner

class _Progress:
    """One-line progress on stderr (overwritten in place on a terminal)."""

    def __init__(self, total: int):
        self.total, self.done = total, 0
        self.tty = sys.stderr.isatty()

    def step(self, text: str) -> None:
        self.done += 1
        msg = f"[{self.done}/{self.total}] {text}"
        if self.tty:
            sys.stderr.write("\r\x1b[K" + msg)
        else:
            sys.stderr.write(msg + "\n")
        sys.stderr.flush()

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def run(loops: Optional[Sequence[str]] = None,
        benchmarks: Optional[Sequence[str]] = None,
        repeat: int = 5, quick: bool = False,
        out=None) -> Dict[str, Dict[str, float]]:
    """Run the workloads, print a table, return benchmark -> loop -> ops/s.

    Within each repeat the loops run round-robin (and in a rotating order), so
    slow drifts of a noisy machine hit every loop alike; the reported figure
    is the median over the repeats.  ``quick`` runs 1/5 of the ops and at most
    3 repeats: a smoke test, not a measurement.
    """
    out = out or sys.stdout
    factories, skipped = loop_factories(loops)
    if loops:  # explicitly requested loops must be there
        if skipped:
            raise RuntimeError("unusable event loop(s): " + "; ".join(
                f"{name}: {why}" for name, why in skipped.items()))
    for name, why in skipped.items():
        print(f"note: skipping {name} ({why})", file=sys.stderr)
    if not factories:
        raise RuntimeError("no usable event loop")
    work = select_workloads(benchmarks)
    if quick:
        repeat = min(repeat, 3)
    scale = 0.2 if quick else 1.0
    names = list(factories)

    progress = _Progress(len(work) * repeat * len(names))
    results: Dict[str, Dict[str, float]] = {}
    t_start = clock()
    for wl in work:
        n = max(1, int(wl.n * scale))
        times: Dict[str, List[float]] = {name: [] for name in names}
        for r in range(repeat):
            order = names[r % len(names):] + names[:r % len(names)]
            for name in order:
                progress.step(f"{wl.name} {name} ...")
                try:
                    times[name].append(wl.func(factories[name], n))
                except Exception as exc:  # a broken loop must say which one
                    progress.finish()
                    raise RuntimeError(f"{wl.name} failed on {name}: "
                                       f"{type(exc).__name__}: {exc}") from exc
        results[wl.name] = {name: n / statistics.median(ts)
                            for name, ts in times.items()}
    progress.finish()

    print(f"fastloop scheduling benchmarks: median of {repeat} runs, "
          f"{'quick mode, ' if quick else ''}{clock() - t_start:.0f} s total"
          + ("; ratio > 1 means fastloop is faster" if "fastloop" in names else ""),
          file=out)
    print(", ".join(f"{name} {what}" for name, what in describe_loops(names).items())
          + "\n", file=out)
    print(format_table(results, names), file=out)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `bench` command line; shared by `python -m fastloop bench` and
    `python3 fastloop/_bench.py`."""
    parser.add_argument("--quick", action="store_true",
                        help="1/5 of the ops, 3 repeats (~30 s smoke test)")
    parser.add_argument("--loops", type=csv_list, default=None, metavar="LIST",
                        help="comma-separated event loops "
                             f"(default: every usable one of {','.join(LOOP_NAMES)})")
    parser.add_argument("--only", type=csv_list, default=None, metavar="LIST",
                        help="comma-separated benchmarks (see --list; default: all)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per loop and benchmark (default: 5)")
    parser.add_argument("--list", action="store_true",
                        help="list the benchmarks and exit")


def csv_list(text: str) -> List[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def main(args: argparse.Namespace) -> int:
    if args.list:
        for wl in WORKLOADS.values():
            print(f"{wl.name:<20} n={wl.n:<8} {wl.doc}")
        return 0
    try:
        run(loops=args.loops, benchmarks=args.only, repeat=args.repeat,
            quick=args.quick)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    # Run as a plain script (fallback while the compiled core is not built):
    # sys.path[0] is the package directory, whose module names must not
    # shadow anything; the repository root makes `import fastloop` work.
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    sys.path.insert(0, os.path.dirname(here))
    _parser = argparse.ArgumentParser(prog="python3 fastloop/_bench.py",
                                      description=__doc__.splitlines()[0])
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
