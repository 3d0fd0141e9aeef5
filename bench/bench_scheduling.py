"""pyperf driver for fastloop's scheduling benchmarks.

    python bench/bench_scheduling.py --fast -o /tmp/sched.json
    python bench/compare.py /tmp/sched.json

For every workload in fastloop/_bench.py and every usable event loop this
registers a benchmark named ``<workload>[<loop>]``.  pyperf runs benchmarks
one after the other, so they are registered workload by workload with the
loops alternating (call_soon[fastloop], call_soon[asyncio], ...): a slow drift
of the machine then shows up in all loops' numbers for a workload, not in one.

Values are seconds per operation (pyperf's "loops" are whole workload runs and
inner_loops is the workload's op count); compare.py turns them into ops/s.

Extra options: --event-loops LIST (pyperf already owns --loops) and
--only LIST; everything else is pyperf's (--fast, --rigorous, -o, -p, ...).
"""
import sys

import pyperf

from _common import load_bench  # bench/ is sys.path[0] when run as a script

bench = load_bench()


def time_workload(loops, workload, loop_factory, n):
    """pyperf time function: `loops` complete runs of `workload`, each timed
    by the workload itself (loop creation and teardown are excluded)."""
    total = 0.0
    for _ in range(loops):
        total += workload(loop_factory, n)
    return total


def forward_args(cmd, args):
    """Pass our own options on to the worker processes pyperf spawns."""
    if args.event_loops:
        cmd.extend(("--event-loops", ",".join(args.event_loops)))
    if args.only:
        cmd.extend(("--only", ",".join(args.only)))


def main():
    runner = pyperf.Runner(add_cmdline_args=forward_args)
    runner.argparser.add_argument(
        "--event-loops", type=bench.csv_list, default=None, metavar="LIST",
        help="comma-separated event loops (default: every usable one of "
             + ",".join(bench.LOOP_NAMES) + ")")
    runner.argparser.add_argument(
        "--only", type=bench.csv_list, default=None, metavar="LIST",
        help="comma-separated workloads: " + ",".join(bench.WORKLOADS))
    args = runner.parse_args()
    # pyperf gives workers a scrubbed environment; FASTLOOP_POLLER selects
    # fastloop's backend and must reach them.
    args.inherit_environ = (args.inherit_environ or []) + ["FASTLOOP_POLLER"]

    try:
        workloads = bench.select_workloads(args.only)
        factories, skipped = bench.loop_factories(args.event_loops)
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    if skipped and (args.event_loops or not factories):
        sys.exit("error: unusable event loop(s): " + "; ".join(
            f"{name}: {why}" for name, why in skipped.items()))
    if not args.worker:
        for name, why in skipped.items():
            print(f"note: skipping {name} ({why})", file=sys.stderr)
    for name, what in bench.describe_loops(list(factories)).items():
        if name != "asyncio":  # pyperf records the Python version itself
            runner.metadata[f"{name}_version"] = what

    for wl in workloads:
        for name, factory in factories.items():
            runner.bench_time_func(
                f"{wl.name}[{name}]", time_workload, wl.func, factory, wl.n,
                inner_loops=wl.n,
                metadata={"workload": wl.name, "event_loop": name})


if __name__ == "__main__":
    main()
