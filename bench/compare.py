"""Summarise bench_scheduling.py results as a markdown table.

    python bench/compare.py /tmp/sched.json [more.json ...]

Prints median ops/s per event loop for every workload and fastloop's speed
ratios against asyncio, uvloop, rloop and the best of uvloop/rloop (> 1 means
fastloop is faster), plus a geometric mean.  Several files are merged (later
files win), e.g. a fresh fastloop run against older baseline runs.
"""
import argparse
import re

import pyperf

from _common import load_bench  # bench/ is sys.path[0] when run as a script

NAME = re.compile(r"^(?P<workload>.+)\[(?P<loop>[^\]]+)\]$")
NOISY = 0.10  # flag benchmarks whose stdev exceeds 10% of the mean


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", metavar="JSON",
                        help="pyperf output of bench/bench_scheduling.py")
    args = parser.parse_args()

    bench = load_bench()
    results, loops, spread, meta = {}, [], {}, {}
    for path in args.files:
        suite = pyperf.BenchmarkSuite.load(path)
        for b in suite.get_benchmarks():
            match = NAME.match(b.get_name())
            if not match or not b.get_nvalue():
                continue
            workload, loop = match["workload"], match["loop"]
            if loop not in loops:
                loops.append(loop)
            # Values are seconds per op (the driver sets inner_loops = n);
            # 1/median(time) is also the median of ops/s.
            results.setdefault(workload, {})[loop] = 1.0 / b.median()
            if b.get_nvalue() > 1:
                spread[b.get_name()] = b.stdev() / b.mean()
            meta.update(b.get_metadata())

    # Known workloads in their canonical order, anything else after them.
    order = [w for w in bench.WORKLOADS if w in results] + \
            [w for w in results if w not in bench.WORKLOADS]
    versions = [f"{name} {meta[f'{name}_version']}" for name in loops
                if f"{name}_version" in meta]
    if "python_version" in meta:
        versions.append(f"Python {meta['python_version']}")
    print("Median ops/s" + (f" ({', '.join(versions)})" if versions else ""))
    print()
    print(bench.format_table({w: results[w] for w in order}, loops))
    noisy = sorted(((rel, name) for name, rel in spread.items() if rel > NOISY),
                   reverse=True)
    if noisy:
        worst = ", ".join(f"{name} {rel:.0%}" for rel, name in noisy[:5])
        print(f"\nNoisy (stdev > {NOISY:.0%} of mean): {len(noisy)} of "
              f"{len(spread)} benchmarks; worst: {worst}")


if __name__ == "__main__":
    main()
