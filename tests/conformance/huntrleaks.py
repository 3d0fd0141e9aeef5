#!/usr/bin/env python3
"""Reference-leak hunt: CPython's test_asyncio tests, each run several times
on the chosen loop, with the interpreter's total reference count and live
memory blocks compared between runs (what `python -m test -R` does, on the
loop and the adapters of run_cpython_asyncio.py).

Needs a debug build of CPython (sys.gettotalrefcount(); Debian/Ubuntu:
python3.X-dbg with libpython3.X-testsuite) and fastloop built for it, which
`.ci/run-pydebug leaks` sets up in .ci/venv-dbg before running this::

    PYTHONPATH=. .ci/venv-dbg/bin/python tests/conformance/huntrleaks.py --loop fastloop
    PYTHONPATH=. .ci/venv-dbg/bin/python tests/conformance/huntrleaks.py --loop asyncio

A test is reported when every measured run left more references (or more
memory blocks) than the one before; compare the two loops' reports, as some
upstream tests leak on asyncio too. Each module runs in its own process.
"""
import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]
import refleaks                                          # noqa: E402
import run_cpython_asyncio as runner                     # noqa: E402

# The modules whose tests run the network layer, and the task/future ones.
DEFAULT_MODULES = (
    "test_sock_lowlevel", "test_streams", "test_server", "test_sendfile",
    "test_buffered_proto", "test_events", "test_base_events",
    "test_unix_events", "test_sslproto", "test_ssl", "test_subprocess",
    "test_futures", "test_tasks", "test_locks", "test_queues", "test_runners",
    "test_timeouts", "test_taskgroups", "test_waitfor", "test_context",
    "test_threads", "test_pep492")


TEST_TIMEOUT = 60       # seconds per run of a test


def hunt_module(module, loop_name, warmups, runs, pattern, verbose):
    import faulthandler
    import fnmatch
    import signal
    import unittest
    from test import support
    # A background job inherits SIGINT ignored; test_runners' Ctrl-C tests
    # need Python's handler (as in run_cpython_asyncio's workers).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    support.SHORT_TIMEOUT = min(support.SHORT_TIMEOUT, 10.0)
    new_loop, loop_class = runner.install_loop(loop_name)
    runner.install_adapters(new_loop, loop_class, True)
    suite = runner.build_suite(module, new_loop)
    found = measured = unmeasured = 0
    for test in runner._flatten(suite):
        sid = runner.short_id(test.id())
        if pattern and not any(fnmatch.fnmatchcase(sid, p) for p in pattern):
            continue
        if verbose:
            print("# " + sid, file=sys.stderr, flush=True)
        # A hung test ends the module's run with the stacks printed.
        faulthandler.dump_traceback_later(TEST_TIMEOUT * (warmups + runs),
                                          exit=True)
        last = [None]

        def run_once():
            # A new instance each time, as a TestCase need not run twice
            # (3.11.2's IsolatedAsyncioTestCase refuses to), in a suite of its
            # own: its class's and module's set-up and tear-down around it.
            result = last[0] = unittest.TestResult()
            try:
                unittest.TestSuite([type(test)(test._testMethodName)]).run(result)
            except Exception as exc:
                result.errors.append((test, "run raised %r" % (exc,)))
            return not (result.errors or result.failures or result.skipped)

        growth = refleaks.measure(run_once, warmups, runs)
        faulthandler.cancel_dump_traceback_later()
        if growth is None:
            unmeasured += 1
            if verbose:         # not a leak question: run_cpython_asyncio's
                result = last[0]
                for _, why in result.errors + result.failures + result.skipped:
                    print("#   not measured: " + why.strip().splitlines()[-1],
                          file=sys.stderr, flush=True)
            continue
        measured += 1
        if refleaks.leaking(*growth):
            found += 1
            print("LEAK %s: references %s, memory blocks %s" % ((sid,) + growth),
                  flush=True)
    print("# %s: %d tests measured, %d leaking; %d not measured (failed or "
          "skipped in a run)" % (module, measured, found, unmeasured), flush=True)
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--loop", default="fastloop")
    ap.add_argument("--modules", default=",".join(DEFAULT_MODULES))
    ap.add_argument("-k", "--pattern", action="append",
                    help="fnmatch pattern on test ids (repeatable)")
    ap.add_argument("--warmups", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="name each test (on stderr) before its runs")
    ap.add_argument("--module", help=argparse.SUPPRESS)   # worker
    opts = ap.parse_args()
    if not hasattr(sys, "gettotalrefcount"):
        ap.error("needs a debug build of CPython (sys.gettotalrefcount)")
    if opts.module:
        found = hunt_module(opts.module, opts.loop, opts.warmups, opts.runs,
                            opts.pattern, opts.verbose)
        sys.stdout.flush()
        os._exit(1 if found else 0)     # threads a test left must not hang us
    available = runner.available_modules(sys.executable)
    failed = []
    for module in opts.modules.split(","):
        if module not in available:
            continue
        t0 = time.monotonic()
        cmd = [sys.executable, os.path.abspath(__file__), "--module", module,
               "--loop", opts.loop, "--warmups", str(opts.warmups),
               "--runs", str(opts.runs)]
        for p in opts.pattern or ():
            cmd += ["--pattern", p]
        if opts.verbose:
            cmd.append("--verbose")
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL).returncode
        print("# %s: %s (%.0f s)" % (module, {0: "no leak", 1: "leaks"}.get(
            rc, "worker exit %d" % rc), time.monotonic() - t0), flush=True)
        if rc:
            failed.append(module)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
