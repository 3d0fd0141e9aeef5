"""User-space instructions per request of each loop's server, counted by
valgrind's callgrind: the loop's own cost without the noise of CPU time.

    python bench/net/instructions.py                       # protocol-1k, http, sock-1k, streams-1k
    python bench/net/instructions.py --only protocol-1k --loops fastloop,rloop --by-module

CPU time on a shared machine swings with the kernel's state; the count of
user-space instructions a server executes per request does not (it varies by
well under 1% between runs). The server runs under callgrind (~50x slower in
user space, the kernel at full speed); after it is ready the counters are
dumped and reset, the client (bench/net/client.py, same cells as run.py) runs
for --duration seconds, and the second dump divided by the requests served is
the figure. Instructions are not time (a cache miss costs more than an add),
but for the same workload on the same interpreter they compare loops well.

Needs valgrind (apt-get install valgrind).
"""
import argparse
import collections
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

from run import CELLS, LOOPS, Lines

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT = ["protocol-1k", "http", "sock-1k", "streams-1k"]


def exclusive_costs(path):
    """{(object file, function): instructions} from a callgrind output file
    written with --compress-strings=no (cost lines follow fn=; the line after
    a calls= line is the callee's inclusive cost, not ours)."""
    costs = collections.Counter()
    obj = fn = None
    skip = False
    with open(path) as f:
        for line in f:
            if line.startswith("ob="):
                obj = os.path.basename(line[3:].strip())
            elif line.startswith("fn="):
                fn = line[3:].strip()
            elif line.startswith("calls="):
                skip = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                if skip:
                    skip = False
                    continue
                parts = line.split()
                if len(parts) >= 2:
                    costs[(obj, fn)] += int(parts[1])
    return costs


def measure(args, loop, cell, tmp):
    style, size, addr, two_writes, reconnect = CELLS[cell]
    if addr != "tcp":
        raise SystemExit(f"{cell}: only TCP cells are supported here")
    out = os.path.join(tmp, f"cg.{loop}.{cell}")
    for old in glob.glob(out + "*"):
        os.unlink(old)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no",
         f"--callgrind-out-file={out}", sys.executable,
         os.path.join(HERE, "servers.py"), "--loop", loop, "--style", style, "--port", "0"]
        + (["--two-writes"] if two_writes else []),
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        ready = Lines(server).readline(timeout=300).split()
        port = ready[3]
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        what = ["--http"] if size is None else ["--size", str(size)]
        if reconnect:
            what.append("--reconnect")
        client = subprocess.run(
            [sys.executable, os.path.join(HERE, "client.py"), "--port", port, *what,
             "--conns", str(args.conns), "--duration", str(args.duration), "--warmup", "0"],
            capture_output=True, text=True)
        if client.returncode:
            raise SystemExit(f"client failed against {loop} {cell}: {client.stderr.strip()}")
        requests = int(client.stdout.split("result")[1].split()[0])
        subprocess.run(["callgrind_control", "-d", str(server.pid)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    finally:
        server.kill()
        server.wait()
    dumps = sorted(glob.glob(out + ".*"), key=lambda p: int(p.rsplit(".", 1)[1]))
    costs = exclusive_costs(dumps[-1])
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)
        shutil.copy(dumps[-1], os.path.join(args.keep, f"callgrind.{loop}.{cell}"))
    return requests, costs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--loops", default=",".join(LOOPS))
    p.add_argument("--only", default=",".join(DEFAULT), help="comma-separated cells (see run.py --list)")
    p.add_argument("--duration", type=float, default=4.0, help="seconds of client load (default 4)")
    p.add_argument("--conns", type=int, default=8)
    p.add_argument("--by-module", action="store_true", help="also break the counts down by module")
    p.add_argument("--keep", metavar="DIR",
                   help="keep each measured callgrind dump in DIR (callgrind.LOOP.CELL), "
                        "for callgrind_annotate --inclusive=yes --tree=caller")
    p.add_argument("--top", type=int, default=0, metavar="N",
                   help="also list the N costliest functions (instructions/request)")
    args = p.parse_args()
    if not shutil.which("valgrind"):
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    loops = args.loops.split(",")
    cells = args.only.split(",")
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for cell in cells:
            for loop in loops:
                requests, costs = measure(args, loop, cell, tmp)
                per = sum(costs.values()) / requests
                table[cell, loop] = per
                print(f"{cell:14} {loop:9} {requests:8d} requests  {per:8.0f} instructions/request",
                      file=sys.stderr, flush=True)
                if args.by_module:
                    modules = collections.Counter()
                    for (obj, _), v in costs.items():
                        modules[obj] += v
                    for obj, v in modules.most_common(6):
                        print(f"    {v / requests:8.0f}  {obj}", file=sys.stderr)
                for (obj, fn), v in costs.most_common(args.top):
                    print(f"    {v / requests:8.1f}  {obj}  {fn}", file=sys.stderr)
    ratio_to = [l for l in loops if l != "fastloop"] if "fastloop" in loops else []
    print("| cell | " + " | ".join(loops) + "".join(f" | fl/{l}" for l in ratio_to) + " |")
    print("|---" * (1 + len(loops) + len(ratio_to)) + "|")
    for cell in cells:
        row = [f"{table[cell, l]:.0f}" for l in loops]
        row += [f"{table[cell, 'fastloop'] / table[cell, l]:.2f}" for l in ratio_to]
        print(f"| {cell} | " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
