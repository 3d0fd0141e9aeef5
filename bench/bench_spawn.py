"""Subprocess spawn benchmark: fastloop vs asyncio, uvloop and rloop.

    python bench/bench_spawn.py [--count 200] [--rounds 5] [--ballast-mb 200]

Each operation is `await asyncio.create_subprocess_exec("true")` then
`await proc.wait()` ("spawn+wait"), or the same with stdout=PIPE and
`communicate()` ("spawn+pipe"). The parent first allocates --ballast-mb of
memory, because what makes spawning slow is copying a big parent's page
tables (fork), which vfork/posix_spawn avoid. Loops run interleaved, rounds
rotate the starting loop, and the table gives the median time per operation
and the ratios (> 1: fastloop faster).
"""
import argparse
import asyncio
import shutil
import statistics
import sys
import time

from _common import loop_factories


async def spawn_wait(exe, count):
    for _ in range(count):
        proc = await asyncio.create_subprocess_exec(exe)
        await proc.wait()


async def spawn_pipe(exe, count):
    for _ in range(count):
        proc = await asyncio.create_subprocess_exec(exe, "hello", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        assert out == b"hello\n", out


CASES = {"spawn+wait": ("true", spawn_wait), "spawn+pipe": ("echo", spawn_pipe)}


def measure(factory, case, count):
    exe_name, func = CASES[case]
    exe = shutil.which(exe_name)
    loop = factory()
    try:
        loop.run_until_complete(func(exe, 3))           # warm up
        t0 = time.perf_counter()
        loop.run_until_complete(func(exe, count))
        return (time.perf_counter() - t0) / count
    finally:
        loop.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--ballast-mb", type=int, default=200)
    args = p.parse_args()
    ballast = bytearray(args.ballast_mb * 1024 * 1024)
    for i in range(0, len(ballast), 4096):              # touch every page
        ballast[i] = 1
    loops = loop_factories()
    names = list(loops)
    results = {(case, name): [] for case in CASES for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for case in CASES:
            for name in order:
                try:
                    results[case, name].append(measure(loops[name], case, args.count))
                except Exception as exc:                # a loop without subprocess support
                    print(f"{name} {case}: {type(exc).__name__}: {exc}", file=sys.stderr)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    print(f"Python {sys.version.split()[0]}, {args.count} operations x {args.rounds} rounds, "
          f"{args.ballast_mb} MB parent; median µs per operation (lower is better)\n")
    others = [n for n in names if n != "fastloop"]
    print("| case | " + " | ".join(names) + " | " + " | ".join(f"{n}/fastloop" for n in others) + " |")
    print("|---" * (len(names) + len(others) + 1) + "|")
    for case in CASES:
        med = {n: statistics.median(results[case, n]) * 1e6 if results[case, n] else None
               for n in names}
        cells = [f"{med[n]:.0f}" if med[n] else "n/a" for n in names]
        ratios = [f"{med[n] / med['fastloop']:.2f}x" if med[n] else "n/a" for n in others]
        print(f"| {case} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")


if __name__ == "__main__":
    main()
