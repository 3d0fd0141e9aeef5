#!/usr/bin/env python3
"""Run CPython's own ``test.test_asyncio`` suite against an event loop.

The interpreter's bundled ``test.test_asyncio`` modules (they differ between
Python versions) are run with the chosen loop installed as the event-loop
policy, so ``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner``
and ``unittest.IsolatedAsyncioTestCase`` all produce it.  For ``test_events``
the loop-independent ``EventLoopTestsMixin`` (and ``SubprocessTestsMixin``)
is run through a small TestCase whose ``create_event_loop()`` returns the
chosen loop; the other mixins and TestCases that take their loop from such
a hook (test_sock_lowlevel, test_sendfile, test_server, test_sslproto...)
get the same treatment (``LOOP_HOOK_ADAPTERS``).

Every test is tracked: a test counts as *on-loop* only if an instance of the
chosen loop was created **and run** (``run_forever``/``run_until_complete``)
while it executed.  Tests that only used their own loops (``TestLoop`` with a
virtual clock, mocked ``BaseEventLoop`` objects, ``SelectorEventLoop``
subclasses...) are counted as *not-on-loop*.

Failures are classified against ``expected_failures.py``; an unexpected
failure is re-run in isolation on the chosen loop (to spot flakes) and on the
stdlib loop under the same harness (to spot tests that fail there too).
Exit status is 0 iff there is no unexpected failure.

Usage (see README.md next to this file)::

    PYTHONPATH=/work/main python3 tests/conformance/run_cpython_asyncio.py --loop fastloop
    python3 tests/conformance/run_cpython_asyncio.py --loop uvloop -v
    python3 tests/conformance/run_cpython_asyncio.py --loop asyncio   # harness self-check

Each module runs in its own subprocess ("worker", ``--worker``) with a
per-test watchdog and a per-module timeout; a hanging or crashing test is
recorded and the worker is restarted on the rest of the module.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import fnmatch
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
SCRIPT = os.path.abspath(__file__)
ID_PREFIX = "test.test_asyncio."

# Modules that test public asyncio behaviour, roughly longest-first so that
# the parallel scheduler packs them well (durations on fastloop, 2 workers:
# test_tasks ~25 s, test_subprocess ~15 s, test_ssl ~10 s, test_events and
# test_taskgroups ~5 s, test_sslproto ~4.5 s, the rest 2 s or less).
# Modules missing from the running interpreter's test package are skipped
# (test_ssl, test_taskgroups and test_timeouts are 3.11+,
# test_eager_task_factory is 3.12+).
#
# Scheduling and tasks: test_tasks, test_taskgroups, test_futures(2),
# test_locks, test_waitfor, test_queues, test_runners, test_timeouts,
# test_pep492, test_context, plus test_eager_task_factory
# (loop.set_task_factory(asyncio.eager_task_factory)) and test_threads
# (asyncio.to_thread(): run_in_executor, context propagation).
# test_events: EventLoopTestsMixin/SubprocessTestsMixin (see build_suite).
# Networking, transports, pipes, subprocesses, signals, TLS (the stdlib
# selector-loop code fastloop runs on its core): test_subprocess, test_ssl,
# test_sslproto, test_streams, test_base_events, test_unix_events,
# test_sendfile, test_sock_lowlevel, test_server, test_buffered_proto,
# test_selector_events, test_protocols; the mixins among them that pick a
# selector loop are pointed at the chosen loop (LOOP_HOOK_ADAPTERS).
MODULES = [
    "test_tasks",
    "test_subprocess",
    "test_ssl",
    "test_events",
    "test_taskgroups",
    "test_sslproto",
    "test_futures",
    "test_base_events",
    "test_streams",
    "test_locks",
    "test_waitfor",
    "test_unix_events",
    "test_sendfile",
    "test_sock_lowlevel",
    "test_selector_events",
    "test_queues",
    "test_runners",
    "test_timeouts",
    "test_pep492",
    "test_eager_task_factory",
    "test_server",
    "test_futures2",
    "test_context",
    "test_threads",
    "test_buffered_proto",
    "test_protocols",
]

# Modules a loop does not run unless named with --modules.  uvloop (the
# harness' stand-in, see expected_failures.BY_LOOP) has its own transports,
# servers, sendfile and subprocess code instead of asyncio's, and fails ~200
# of these tests for that reason (several hang until the watchdog): its
# deviation list covers the scheduling modules and test_events only.
NETWORK_MODULES = (
    "test_subprocess", "test_ssl", "test_sslproto", "test_streams",
    "test_base_events", "test_unix_events", "test_sendfile",
    "test_sock_lowlevel", "test_selector_events", "test_server",
    "test_buffered_proto", "test_protocols")
DEFAULT_EXCLUDED_BY_LOOP = {"uvloop": NETWORK_MODULES}

KNOWN_LOOPS = ("fastloop", "uvloop", "asyncio")

# Outcomes recorded by the worker.
PASS, FAIL, ERROR, SKIP, XFAIL_UT, XPASS_UT, CRASH = (
    "pass", "fail", "error", "skip", "expected-failure",
    "unexpected-success", "crash")


def short_id(test_id: str) -> str:
    return test_id.replace(ID_PREFIX, "")


def module_of(sid: str) -> str:
    """'test_tasks.Foo.test_x' -> 'test_tasks'; fixture errors too."""
    if "(" in sid:  # "setUpClass (test_tasks.Foo)"
        sid = sid[sid.index("(") + 1:].rstrip(")")
    return sid.split(".", 1)[0]


# ===========================================================================
# Worker side: runs one module's tests in this process.
# ===========================================================================

_CURRENT = [None]     # id of the test currently running
_RAN = set()          # ids of tests during which a chosen loop was run
_CREATED = set()      # ids of tests during which a chosen loop was created
_SUPPRESS = [0]       # >0 while harness code (not the test) runs a loop
_ON_FIRST_RUN = [None]  # callback(test_id) when a test first runs a loop


def _mark(kind):
    tid = _CURRENT[0]
    if tid is not None and not _SUPPRESS[0] and tid not in kind:
        kind.add(tid)
        if kind is _RAN and _ON_FIRST_RUN[0] is not None:
            _ON_FIRST_RUN[0](tid)


def _resolve_loop(name):
    """Return (loop_base_class, policy_base_class, fallback_factory)."""
    import asyncio
    if name == "asyncio":
        base_policy = getattr(asyncio, "_DefaultEventLoopPolicy", None) or \
            asyncio.DefaultEventLoopPolicy
        return asyncio.SelectorEventLoop, base_policy, asyncio.SelectorEventLoop
    if name in ("fastloop", "uvloop"):
        mod = __import__(name)
        return mod.Loop, mod.EventLoopPolicy, mod.new_event_loop
    # "package" or "package:LoopClass" for other loops exposing the same API.
    modname, _, attr = name.partition(":")
    import importlib
    mod = importlib.import_module(modname)
    return (getattr(mod, attr or "Loop"), getattr(mod, "EventLoopPolicy"),
            getattr(mod, "new_event_loop", None) or getattr(mod, attr or "Loop"))


def install_loop(name):
    """Install the chosen loop as policy; return (new_loop, loop_class)."""
    import asyncio
    import warnings

    loop_base, policy_base, fallback_factory = _resolve_loop(name)

    try:
        class TrackedLoop(loop_base):
            # A transparent subclass: same name, only records that the loop
            # was created and run during the current test.
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                _mark(_CREATED)

            def run_forever(self, *args, **kwargs):
                _mark(_RAN)
                return super().run_forever(*args, **kwargs)

            def run_until_complete(self, *args, **kwargs):
                _mark(_RAN)
                return super().run_until_complete(*args, **kwargs)

            # Remember whether the default executor may exist, so that the
            # harness' close_loop() only runs shutdown_default_executor()
            # when upstream's version (which reads loop._default_executor)
            # would.
            def run_in_executor(self, executor, *args, **kwargs):
                if executor is None:
                    self._conformance_executor_used = True
                return super().run_in_executor(executor, *args, **kwargs)

            def set_default_executor(self, executor):
                self._conformance_executor_used = True
                return super().set_default_executor(executor)

        TrackedLoop.__name__ = loop_base.__name__
        TrackedLoop.__qualname__ = loop_base.__qualname__
        TrackedLoop.__module__ = loop_base.__module__

        def new_loop():
            return TrackedLoop()
        loop_class = TrackedLoop
    except TypeError:
        # Loop class cannot be subclassed: fall back to a marker callback
        # that only fires if the loop actually runs.
        sys.stderr.write("conformance: %s is not subclassable; tracking via "
                         "call_soon marker\n" % loop_base)

        def new_loop():
            loop = fallback_factory()
            _mark(_CREATED)
            tid = _CURRENT[0]
            loop.call_soon(lambda: tid is not None and _RAN.add(tid))
            return loop
        loop_class = loop_base

    class TrackingPolicy(policy_base):
        def new_event_loop(self):
            return new_loop()

    TrackingPolicy.__name__ = policy_base.__name__
    TrackingPolicy.__qualname__ = policy_base.__qualname__

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # set_event_loop_policy(None) (done by every test module's
        # tearDownModule and by test_runners) re-creates the default policy
        # via `from asyncio import DefaultEventLoopPolicy`: make that ours.
        for mod in (asyncio, getattr(asyncio, "unix_events", None)):
            for attr in ("DefaultEventLoopPolicy", "_DefaultEventLoopPolicy"):
                if mod is not None and attr in vars(mod):
                    setattr(mod, attr, TrackingPolicy)
        asyncio.set_event_loop_policy(TrackingPolicy())
    return new_loop, loop_class


# ---------------------------------------------------------------------------
# Adapters.  Upstream tests often use a stdlib test double instead of a real
# loop.  Where the double is only a convenience (no virtual clock, no mocked
# internals used by the test), it is replaced by the chosen loop so that the
# test exercises it.  The same adapters are active when the runner is used
# with --loop asyncio, which is how the baseline ("fails on stdlib too") is
# computed, and `--loop asyncio` must pass cleanly (the harness self-check).
# Disable them all with --no-adapters to see the raw upstream picture.
# ---------------------------------------------------------------------------

# Tests/classes (fnmatch on the short id) where `new_test_loop()` keeps
# returning test_utils.TestLoop even without a time generator.
NEW_TEST_LOOP_KEEP = [
    # GatherTestsBase._run_loop() drains the loop with `while loop._ready:`,
    # i.e. it needs a stdlib BaseEventLoop; gather() itself is pure asyncio.
    "test_tasks.FutureGatherTests.*",
    "test_tasks.CoroutineGatherTests.*",
    # Transport and child-watcher unit tests: TestLoop is a recording double
    # there (its _add_reader/_remove_reader record into loop.readers/writers,
    # assert_reader(), remove_reader_count; the watchers get mock
    # add_signal_handler()s and fake pids), not a convenience.
    "test_selector_events.*",
    "test_unix_events.UnixReadPipeTransportTests.*",
    "test_unix_events.UnixWritePipeTransportTests.*",
    "test_unix_events.*ChildWatcherTests.*",
]

# Upstream TestCases that take their loop from a hook (a mixin's
# create_event_loop()/new_loop(), or a setUp() that builds
# asyncio.SelectorEventLoop() itself) and otherwise test the loop through
# its public API.  For each, the upstream class and every subclass of it
# (upstream's per-selector copies: EPoll/Poll/Select...EventLoopTests) are
# dropped, and one adapter class named `adapter`, a subclass of it, runs
# its tests on the chosen loop (as LoopEventLoopTests does for
# test_events).  Entries naming a class a Python version lacks are ignored.
# (module, upstream class, hook, adapter class name)
LOOP_HOOK_ADAPTERS = [
    ("test_sock_lowlevel", "BaseSockTestsMixin", "create_event_loop",
     "LoopSockTests"),
    ("test_sendfile", "SendfileTestsBase", "create_event_loop",
     "LoopSendfileTests"),
    ("test_server", "SelectorStartServerTests", "new_loop",
     "LoopStartServerTests"),
    ("test_buffered_proto", "BufferedProtocolSelectorTests", "new_loop",
     "LoopBufferedProtocolTests"),
    ("test_sslproto", "SelectorStartTLSTests", "new_loop",
     "LoopStartTLSTests"),
    # create_connection/create_server/create_datagram_endpoint/... with
    # mocked sockets and getaddrinfo (its setUp: SelectorEventLoop()).
    ("test_base_events", "BaseEventLoopWithSelectorTests", "setUp",
     "LoopBaseEventLoopWithSelectorTests"),
    # create_unix_server()/create_unix_connection() and signal handlers
    # (with the `signal` module mocked).
    ("test_unix_events", "SelectorEventLoopUnixSocketTests", "setUp",
     "LoopUnixSocketTests"),
    ("test_unix_events", "SelectorEventLoopSignalTests", "setUp",
     "LoopSignalTests"),
]


def install_adapters(new_loop, loop_class, enable):
    import asyncio
    from test import support
    from test.test_asyncio import utils as test_utils

    orig_new_test_loop = test_utils.TestCase.new_test_loop

    def close_loop(loop):
        # test_utils.TestCase.close_loop() reads loop._default_executor and
        # calls policy.get_child_watcher() (stdlib-only names).  Same steps
        # via public API for other loops and policies.  Loop runs done here
        # are harness work and do not count as "the test ran on the loop".
        _SUPPRESS[0] += 1
        try:
            if isinstance(loop, asyncio.BaseEventLoop):
                if loop._default_executor is not None:
                    if not loop.is_closed():
                        loop.run_until_complete(
                            loop.shutdown_default_executor())
                    else:
                        loop._default_executor.shutdown(wait=True)
            elif (not loop.is_closed() and not loop.is_running() and (
                    getattr(loop, "_conformance_executor_used", False) or
                    getattr(loop, "_default_executor", None) is not None)):
                loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
        finally:
            _SUPPRESS[0] -= 1
        getpol = getattr(support, "maybe_get_event_loop_policy", None)
        policy = getpol() if getpol else None
        if policy is None or not hasattr(policy, "get_child_watcher"):
            return
        import warnings
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                watcher = policy.get_child_watcher()
        except NotImplementedError:
            return
        if isinstance(watcher, getattr(asyncio, "ThreadedChildWatcher", ())):
            for thread in list(watcher._threads.values()):
                thread.join(timeout=support.SHORT_TIMEOUT)
                if thread.is_alive():
                    raise RuntimeError(f"thread {thread} still alive: "
                                       "subprocess still running")

    # close_loop is harness code used by every test_utils.TestCase; it is
    # patched even with --no-adapters (it would fail for any non-stdlib loop
    # or policy before the test itself is even looked at).
    test_utils.TestCase.close_loop = staticmethod(close_loop)

    if not enable:
        return

    def new_test_loop(self, gen=None):
        # A TestLoop without a time generator has a frozen clock and no
        # timers: a plain real loop is a faithful replacement.
        if gen is None and not any(fnmatch.fnmatchcase(short_id(self.id()), p)
                                   for p in NEW_TEST_LOOP_KEEP):
            loop = new_loop()
            self.set_event_loop(loop)
            return loop
        return orig_new_test_loop(self, gen)

    test_utils.TestCase.new_test_loop = new_test_loop

    # test_pep492.BaseTest builds `asyncio.BaseEventLoop()` with a mocked
    # selector; its tests only use run_until_complete() on it.
    try:
        from test.test_asyncio import test_pep492
    except ImportError:
        pass
    else:
        def pep492_setUp(self):
            test_utils.TestCase.setUp(self)
            self.loop = new_loop()
            self.set_event_loop(self.loop)
        test_pep492.BaseTest.setUp = pep492_setUp

    # test_runners.BaseTest installs a policy whose loops are mocked
    # BaseEventLoops instrumented to record shutdown_asyncgens(); the tests
    # check asyncio.run()/Runner behaviour, so give them the chosen loop
    # with the same instrumentation.
    try:
        from test.test_asyncio import test_runners
    except ImportError:
        pass
    else:
        def runners_new_loop(self):
            loop = new_loop()
            loop.shutdown_ag_run = False
            orig_shutdown_asyncgens = loop.shutdown_asyncgens

            async def shutdown_asyncgens():
                loop.shutdown_ag_run = True
                await orig_shutdown_asyncgens()
            loop.shutdown_asyncgens = shutdown_asyncgens
            return loop
        if hasattr(test_runners, "BaseTest"):
            test_runners.BaseTest.new_loop = runners_new_loop


def build_suite(module, new_loop):
    import unittest
    import importlib
    loader = unittest.TestLoader()
    if module != "test_events":
        mod = importlib.import_module(ID_PREFIX + module)
        suite = loader.loadTestsFromModule(mod)
        hooks = [(getattr(mod, name), hook, adapter)
                 for m, name, hook, adapter in LOOP_HOOK_ADAPTERS
                 if m == module and hasattr(mod, name)]
        if not hooks:
            return suite
        from test.test_asyncio import utils as test_utils
        replaced = tuple(base for base, _, _ in hooks)
        kept = [t for t in _flatten(suite)
                if not isinstance(t, replaced)]
        adapted = unittest.TestSuite(kept)
        for base, hook, adapter in hooks:
            adapted.addTests(loader.loadTestsFromTestCase(
                _loop_adapter(base, hook, adapter, new_loop, test_utils)))
        return adapted

    from test.test_asyncio import test_events as te
    from test.test_asyncio import utils as test_utils

    class LoopEventLoopTests(te.EventLoopTestsMixin, test_utils.TestCase):
        """EventLoopTestsMixin (upstream: EPollEventLoopTests etc.) run on the
        chosen loop.  Upstream also mixes in UnixEventLoopTestsMixin, which only
        attaches a SafeChildWatcher (stdlib-policy plumbing, gone in 3.14)."""

        def create_event_loop(self):
            return new_loop()

    class LoopSubprocessTests(te.SubprocessTestsMixin, te.EventLoopTestsMixin,
                              test_utils.TestCase):
        """SubprocessTestsMixin run on the chosen loop (EventLoopTestsMixin
        only provides setUp/tearDown here; its tests are hidden below)."""

        def create_event_loop(self):
            return new_loop()

    for name in dir(te.EventLoopTestsMixin):
        if name.startswith("test") and not hasattr(te.SubprocessTestsMixin,
                                                   name):
            setattr(LoopSubprocessTests, name, None)  # not collected

    suite = unittest.TestSuite()
    for cls in (LoopEventLoopTests, LoopSubprocessTests):
        cls.__module__ = te.__name__
        cls.__qualname__ = cls.__name__
        suite.addTests(loader.loadTestsFromTestCase(cls))
    return suite


def _loop_adapter(base, hook, name, new_loop, test_utils):
    """A subclass of the upstream class/mixin `base` whose `hook` gives the
    chosen loop (see LOOP_HOOK_ADAPTERS)."""
    import unittest
    bases = (base,) if issubclass(base, unittest.TestCase) else \
        (base, test_utils.TestCase)
    ns = {"__module__": base.__module__, "__qualname__": name,
          "__doc__": "%s.%s with %s() giving the chosen loop" % (
              base.__module__.rsplit(".", 1)[-1], base.__name__, hook)}
    if hook == "setUp":
        def setUp(self):
            # Upstream: super().setUp(); self.loop = SelectorEventLoop();
            # self.set_event_loop(self.loop)
            super(base, self).setUp()
            self.loop = new_loop()
            self.set_event_loop(self.loop)
        ns["setUp"] = setUp
    else:
        ns[hook] = lambda self: new_loop()
    return type(name, bases, ns)


def _flatten(suite):
    import unittest
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from _flatten(t)
        else:
            yield t


def worker_main(args):
    import faulthandler
    import unittest

    faulthandler.enable(file=sys.__stderr__, all_threads=True)

    # A CI job started in the background inherits SIGINT as ignored; the
    # suite's Ctrl-C tests (test_runners) expect Python's default handler,
    # which asyncio.Runner only replaces when it is installed.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    # Die with the parent runner (it may be killed by a CI timeout): the
    # worker runs in its own session, so nothing else would stop it.
    import threading
    parent = os.getppid()

    def watch_parent():
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(3)
    threading.Thread(target=watch_parent, daemon=True,
                     name="conformance-parent-watch").start()
    events = open(args.events, "a", buffering=1, encoding="utf-8")

    lock = threading.Lock()

    def emit(**kw):
        line = json.dumps(kw) + "\n"
        with lock:   # loops may run in other threads
            events.write(line)

    # Lets the parent know a test used the loop even if it then hangs or
    # crashes the worker.
    _ON_FIRST_RUN[0] = lambda tid: emit(event="ran", id=tid)

    only = set(json.load(open(args.only))) if args.only else None
    exclude = set(json.load(open(args.exclude))) if args.exclude else set()

    try:
        from test import support
        # Upstream waits up to support.SHORT_TIMEOUT (30 s) for events that
        # take milliseconds; a loop that misses them would make every such
        # test take 30 s.  Set before test.test_asyncio.utils is imported
        # (run_until() binds it as a default argument).
        support.SHORT_TIMEOUT = min(support.SHORT_TIMEOUT, args.short_timeout)
        new_loop, loop_class = install_loop(args.loop)
        install_adapters(new_loop, loop_class, not args.no_adapters)
        suite = build_suite(args.module, new_loop)
    except BaseException:
        emit(event="module-error", detail=traceback.format_exc())
        return 2

    skips = json.load(open(args.skips)) if args.skips else {}
    tests = []
    for t in _flatten(suite):
        sid = short_id(t.id())
        if sid in exclude or (only is not None and sid not in only):
            continue
        if args.pattern and not any(fnmatch.fnmatchcase(sid, p)
                                    for p in args.pattern):
            continue
        reason = next((r for p, r in skips.items()
                       if fnmatch.fnmatchcase(sid, p)), None)
        if reason is not None:
            # In the runner's skip list (slow/flaky): not run at all.
            emit(event="end", id=sid, outcome=SKIP, detail=reason,
                 skip_list=True, on_loop=False, created=False, duration=0)
            continue
        tests.append(t)
    emit(event="collected", ids=[short_id(t.id()) for t in tests])

    class Recorder(unittest.TestResult):
        def __init__(self):
            super().__init__()
            self._cur = None

        def startTest(self, test):
            super().startTest(test)
            sid = short_id(test.id())
            self._cur = {"id": sid, "outcome": PASS, "detail": "",
                         "t0": time.monotonic()}
            _CURRENT[0] = sid
            emit(event="start", id=sid)
            if args.test_timeout:
                faulthandler.dump_traceback_later(
                    args.test_timeout, exit=True, file=sys.__stderr__)

        def stopTest(self, test):
            if args.test_timeout:
                faulthandler.cancel_dump_traceback_later()
            super().stopTest(test)
            cur, self._cur = self._cur, None
            if cur is None:
                return
            sid = cur["id"]
            _CURRENT[0] = None
            emit(event="end", id=sid, outcome=cur["outcome"],
                 detail=cur["detail"][-6000:],
                 on_loop=sid in _RAN, created=sid in _CREATED,
                 duration=round(time.monotonic() - cur["t0"], 3))

        def _set(self, test, outcome, detail):
            rank = [PASS, SKIP, XFAIL_UT, XPASS_UT, FAIL, ERROR]
            if self._cur is None:
                # setUpModule/setUpClass/tearDown*Class errors (_ErrorHolder).
                emit(event="end", id=short_id(str(test)), outcome=outcome,
                     detail=detail[-6000:], on_loop=False, created=False,
                     duration=0)
                return
            if rank.index(outcome) >= rank.index(self._cur["outcome"]):
                self._cur["outcome"] = outcome
            if detail:
                self._cur["detail"] += detail

        def _fmt(self, test, err):
            return self._exc_info_to_string(err, test)

        def addSuccess(self, test):
            super().addSuccess(test)

        def addError(self, test, err):
            super().addError(test, err)
            self._set(test, ERROR, self._fmt(test, err))

        def addFailure(self, test, err):
            super().addFailure(test, err)
            self._set(test, FAIL, self._fmt(test, err))

        def addSkip(self, test, reason):
            if self._cur is None and isinstance(test, unittest.TestCase):
                # 3.12.0/3.12.1 report a skipped class's tests with
                # addSkip() + stopTest(), without startTest().
                self.startTest(test)
            super().addSkip(test, reason)
            self._set(test, SKIP, reason)

        def addExpectedFailure(self, test, err):
            super().addExpectedFailure(test, err)
            self._set(test, XFAIL_UT, "")

        def addUnexpectedSuccess(self, test):
            super().addUnexpectedSuccess(test)
            self._set(test, XPASS_UT, "unexpected success (unittest)")

        def addSubTest(self, test, subtest, err):
            super().addSubTest(test, subtest, err)
            if err is not None:
                kind = FAIL if issubclass(err[0], test.failureException) \
                    else ERROR
                self._set(test, kind, "[%s]\n%s" % (subtest._subDescription(),
                                                     self._fmt(test, err)))

    result = Recorder()

    def guard(test):
        # Some TestCase.run() implementations (IsolatedAsyncioTestCase on
        # 3.10/3.11 creates its loop before startTest) can raise out of the
        # suite when the loop misbehaves; record that as the test's error
        # instead of losing the rest of the module.
        orig_run = test.run

        def run(result=None):
            try:
                return orig_run(result)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                exc = sys.exc_info()
                if result._cur is None or result._cur["id"] != \
                        short_id(test.id()):
                    result.startTest(test)
                result.addError(test, exc)
                result.stopTest(test)
        test.run = run
        return test

    unittest.TestSuite([guard(t) for t in tests]).run(result)
    emit(event="done")
    events.flush()
    # Threads leaked by a broken loop must not keep the worker alive.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# ===========================================================================
# Parent side: schedules workers, classifies, reports.
# ===========================================================================

def available_modules(python):
    code = ("import importlib.util,json;print(json.dumps([m for m in %r if "
            "importlib.util.find_spec('test.test_asyncio.'+m)]))" % (MODULES,))
    out = subprocess.run([python, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


_LIVE = set()          # worker processes running now
_STOPPING = [False]    # set on Ctrl-C: no new workers


def _kill_all_workers():
    _STOPPING[0] = True
    for proc in list(_LIVE):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class Job:
    """One module run (with restarts after hangs/crashes)."""

    def __init__(self, opts, module, loop, only=None, tag=""):
        self.opts, self.module, self.loop = opts, module, loop
        self.only = only
        self.tag = tag
        self.results = {}         # sid -> record
        self.order = []
        self.module_error = None
        self.log_tail = ""
        self.restarts = 0
        self.elapsed = 0.0

    def _spawn(self, tmpdir, exclude, attempt):
        events = os.path.join(tmpdir, "events.jsonl")
        log = os.path.join(tmpdir, "log-%d.txt" % attempt)
        open(events, "w").close()
        cmd = [self.opts.python, SCRIPT, "--worker", "--module", self.module,
               "--loop", self.loop, "--events", events,
               "--test-timeout", str(self.opts.test_timeout),
               "--short-timeout", str(self.opts.short_timeout)]
        if self.opts.no_adapters:
            cmd.append("--no-adapters")
        for p in self.opts.pattern or ():
            cmd += ["--pattern", p]
        if self.opts.skips:
            path = os.path.join(tmpdir, "skips.json")
            json.dump(self.opts.skips, open(path, "w"))
            cmd += ["--skips", path]
        if self.only is not None:
            path = os.path.join(tmpdir, "only.json")
            json.dump(sorted(self.only), open(path, "w"))
            cmd += ["--only", path]
        if exclude:
            path = os.path.join(tmpdir, "exclude-%d.json" % attempt)
            json.dump(sorted(exclude), open(path, "w"))
            cmd += ["--exclude", path]
        return cmd, events, log

    def run(self):
        t0 = time.monotonic()
        deadline = t0 + self.opts.module_timeout
        with tempfile.TemporaryDirectory(prefix="cpy-asyncio-") as tmpdir:
            exclude = set()
            attempt = 0
            while not _STOPPING[0]:
                cmd, events_path, log_path = self._spawn(tmpdir, exclude,
                                                         attempt)
                timed_out = False
                with open(log_path, "w") as logf:
                    proc = subprocess.Popen(
                        cmd, stdout=logf, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, env=self.opts.env,
                        start_new_session=True)
                    _LIVE.add(proc)
                    try:
                        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        timed_out = True
                        # The whole group: subprocess tests spawn children.
                        with contextlib.suppress(ProcessLookupError):
                            os.killpg(proc.pid, signal.SIGKILL)
                        proc.wait()
                    finally:
                        _LIVE.discard(proc)
                if _STOPPING[0]:
                    break
                with open(log_path, errors="replace") as f:
                    log_text = f.read()
                self.log_tail = log_text[-4000:]
                started, started_on_loop, done = None, False, False
                with open(events_path, encoding="utf-8") as f:
                    for line in f:
                        try:
                            ev = json.loads(line)
                        except ValueError:
                            continue
                        kind = ev["event"]
                        if kind == "start":
                            started = ev["id"]
                            started_on_loop = False
                        elif kind == "ran" and ev["id"] == started:
                            started_on_loop = True
                        elif kind == "end":
                            if ev["id"] not in self.results:
                                self.order.append(ev["id"])
                            self.results[ev["id"]] = ev
                            if ev["id"] == started:
                                started = None
                        elif kind == "module-error":
                            self.module_error = ev["detail"]
                        elif kind == "done":
                            done = True
                if done or self.module_error:
                    break
                # The worker died or hung: blame the test in flight.
                if timed_out:
                    why = "module timeout (%ss) hit" % self.opts.module_timeout
                else:
                    why = "worker exited with status %s" % proc.returncode
                if started is None:
                    self.module_error = "%s outside of any test\n%s" % (
                        why, self.log_tail)
                    break
                if proc.returncode == 1 and "Timeout (" in log_text[-20000:]:
                    why = "hung: per-test timeout (%ss)" % self.opts.test_timeout
                self.order.append(started)
                self.results[started] = {
                    "id": started, "outcome": CRASH,
                    "on_loop": started_on_loop,
                    "detail": "%s while running this test; worker output "
                              "tail:\n%s" % (why, log_text[-5000:]),
                    "duration": None}
                exclude = set(self.results)
                attempt += 1
                self.restarts += 1
                if timed_out or attempt > self.opts.max_restarts:
                    if timed_out:
                        self.module_error = ("module timeout: remaining tests "
                                             "not run")
                    else:
                        self.module_error = ("too many worker crashes/hangs; "
                                             "remaining tests not run")
                    break
        self.elapsed = time.monotonic() - t0
        return self


def run_jobs(jobs, parallel):
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=parallel)
    try:
        return list(ex.map(lambda j: j.run(), jobs))
    except BaseException:   # Ctrl-C: do not leave workers behind
        _kill_all_workers()
        raise
    finally:
        ex.shutdown(wait=True)


def is_failure(rec):
    return rec["outcome"] in (FAIL, ERROR, CRASH, XPASS_UT)


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", default="fastloop",
                    help="fastloop | uvloop | asyncio (stdlib, harness "
                         "self-check) | module[:LoopClass] (default fastloop)")
    ap.add_argument("--modules", default=None,
                    help="comma-separated subset of modules (default: all "
                         "that exist in this Python)")
    ap.add_argument("-k", "--pattern", action="append",
                    help="fnmatch pattern on test ids, e.g. "
                         "'test_events.*.test_call_later' (repeatable)")
    ap.add_argument("-j", "--jobs", type=int,
                    default=max(1, min(os.cpu_count() or 1, 4)),
                    help="modules run in parallel (default: CPU count, max 4)")
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter whose test.test_asyncio is used "
                         "(default: this one)")
    ap.add_argument("--test-timeout", type=float, default=60.0,
                    help="per-test watchdog in seconds (default 60)")
    ap.add_argument("--module-timeout", type=float, default=240.0,
                    help="per-module wall clock limit in seconds (default 240)")
    ap.add_argument("--short-timeout", type=float, default=10.0,
                    help="cap for test.support.SHORT_TIMEOUT, upstream's wait "
                         "for things that should happen at once (default 10; "
                         "upstream 30)")
    ap.add_argument("--max-restarts", type=int, default=5,
                    help="worker restarts per module after crash/hang")
    ap.add_argument("--no-adapters", action="store_true",
                    help="do not redirect upstream test doubles (TestLoop "
                         "without clock, mocked loops) to the chosen loop")
    ap.add_argument("--no-recheck", action="store_true",
                    help="do not re-run unexpected failures (isolated retry "
                         "and stdlib baseline)")
    ap.add_argument("--strict", action="store_true",
                    help="also fail on expected failures that passed and on "
                         "tests that only passed when retried")
    ap.add_argument("--json", metavar="PATH",
                    help="write a machine-readable summary here")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="show tracebacks of unexpected failures and list "
                         "not-on-loop tests")
    ap.add_argument("--durations", type=int, default=0, metavar="N",
                    help="print the N slowest tests")
    ap.add_argument("--list-modules", action="store_true")
    # worker-only options
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--module", help=argparse.SUPPRESS)
    ap.add_argument("--events", help=argparse.SUPPRESS)
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--exclude", help=argparse.SUPPRESS)
    ap.add_argument("--skips", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)

    if opts.worker:
        return worker_main(opts)

    def on_sigterm(signum, frame):
        _kill_all_workers()
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_sigterm)

    sys.path.insert(0, HERE)
    import expected_failures as xf_mod

    opts.env = dict(os.environ)
    py_version = tuple(int(x) for x in subprocess.run(
        [opts.python, "-c", "import sys;print('%d %d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True).stdout.split())
    loop_key = opts.loop.partition(":")[0]

    # Make the loop importable for the workers.  Prefer whatever the target
    # interpreter already imports (installed wheel, PYTHONPATH); fall back
    # to an in-tree build in this repository.
    if loop_key != "asyncio":
        probe = [opts.python, "-c", "import %s" % loop_key]
        if subprocess.run(probe, capture_output=True,
                          env=opts.env).returncode != 0:
            env2 = dict(opts.env)
            env2["PYTHONPATH"] = os.pathsep.join(
                [REPO_ROOT] + [p for p in env2.get("PYTHONPATH", "").split(
                    os.pathsep) if p])
            r = subprocess.run(probe, capture_output=True, text=True, env=env2)
            if r.returncode != 0:
                print("error: cannot import %r with %s:\n%s" % (
                    loop_key, opts.python, r.stderr.strip()[-3000:]))
                return 2
            opts.env = env2

    modules = available_modules(opts.python)
    if opts.modules:
        wanted = [m.strip() for m in opts.modules.split(",") if m.strip()]
        unknown = [m for m in wanted if m not in MODULES]
        if unknown:
            print("error: unknown module(s): %s (known: %s)" % (
                ", ".join(unknown), ", ".join(MODULES)))
            return 2
        modules = [m for m in modules if m in wanted]
    else:
        modules = [m for m in modules
                   if m not in DEFAULT_EXCLUDED_BY_LOOP.get(loop_key, ())]
    if opts.list_modules:
        print("\n".join(modules))
        return 0
    if not modules:
        print("error: no test.test_asyncio modules to run with %s (is "
              "CPython's test suite installed? Debian/Ubuntu ship it as "
              "libpython3.X-testsuite)" % opts.python)
        return 2

    expected = xf_mod.expected_failures(loop_key, py_version)
    skips = xf_mod.skipped_tests(loop_key, py_version)

    def expected_entry(sid):
        """(reason, required text in the traceback or None), or None."""
        entry = expected.get(sid)
        if entry is None:
            for pat, e in expected.items():
                if any(c in pat for c in "*?[") and \
                        fnmatch.fnmatchcase(sid, pat):
                    entry = e
                    break
        if entry is None:
            return None
        return entry if isinstance(entry, tuple) else (entry, None)

    def expected_reason(sid, rec=None):
        """Why `sid` may fail; with `rec`, only if its failure is the
        expected kind (e.g. NYI entries must fail with
        NotImplementedError, so they do not hide later bugs)."""
        entry = expected_entry(sid)
        if entry is None:
            return None
        reason, must = entry
        if rec is not None and must and must not in (rec.get("detail") or ""):
            return None
        return reason

    print("CPython test_asyncio conformance: loop=%s python=%s (%s) "
          "poller=%s jobs=%d" % (
              opts.loop, "%d.%d" % py_version, opts.python,
              os.environ.get("FASTLOOP_POLLER", "default"), opts.jobs))
    print("modules: %s" % ", ".join(modules))
    sys.stdout.flush()

    t_start = time.monotonic()
    jobs = [Job(opts, m, opts.loop) for m in modules]
    opts.skips = skips
    run_jobs(jobs, opts.jobs)

    # ----------------------------------------------------------- classify
    records = {}   # sid -> record (from the chosen-loop run)
    for job in jobs:
        for sid in job.order:
            records[sid] = job.results[sid]
    skipped_by_list = {sid: rec["detail"] for sid, rec in records.items()
                       if rec.get("skip_list")}

    candidates = [sid for sid, rec in records.items()
                  if is_failure(rec) and expected_reason(sid, rec) is None]

    retry = {}
    baseline = {}
    if candidates and not opts.no_recheck and loop_key != "asyncio":
        by_mod = {}
        for sid in candidates:
            by_mod.setdefault(module_of(sid), set()).add(sid)
        rjobs = []
        for m, ids in by_mod.items():
            if m not in modules:
                continue
            rjobs.append(Job(opts, m, opts.loop, only=ids, tag="retry"))
            rjobs.append(Job(opts, m, "asyncio", only=ids, tag="stdlib"))
        run_jobs(rjobs, opts.jobs)
        for j in rjobs:
            target = retry if j.tag == "retry" else baseline
            for sid, rec in j.results.items():
                target[sid] = rec
            if j.module_error:
                for sid in j.only:
                    target.setdefault(sid, {"outcome": ERROR,
                                            "detail": j.module_error})

    unexpected, stdlib_too, flaky, xfailed, xpassed = {}, {}, {}, {}, {}
    for sid, rec in records.items():
        reason = expected_reason(sid)
        if is_failure(rec):
            if reason is not None and expected_reason(sid, rec) is None:
                # Listed, but failing differently than the entry says.
                rec = dict(rec, detail="(in expected_failures.py as %r, "
                           "but the failure lacks %r)\n%s" % (
                               reason, expected_entry(sid)[1],
                               rec.get("detail", "")))
                reason = None
            if reason is not None:
                xfailed[sid] = reason
            elif sid in baseline and is_failure(baseline[sid]):
                stdlib_too[sid] = rec
            elif sid in retry and not is_failure(retry[sid]):
                flaky[sid] = rec
            else:
                unexpected[sid] = rec
        elif rec["outcome"] == PASS and reason is not None and \
                rec.get("on_loop"):
            # (A listed test that passed without running the loop, e.g.
            # with --no-adapters, says nothing about the entry.)
            xpassed[sid] = reason
    # The stdlib baseline itself is the reference: nothing is unexpected
    # except failures (which are reported as "fails on stdlib too").
    if loop_key == "asyncio":
        for sid in list(unexpected):
            stdlib_too[sid] = unexpected.pop(sid)

    # ------------------------------------------------------------- report
    cols = ["pass", "fail", "error", "xfail", "skip", "notloop", "xpass",
            "UNEXP"]
    hdr = "%-24s %5s " % ("module", "tests") + " ".join(
        "%7s" % c for c in cols) + "   time"
    print()
    print("Per module (pass/fail/error/xfail count tests that ran on the "
          "chosen loop; notloop = ran, but never ran a %s loop):" % loop_key)
    print(hdr)
    print("-" * len(hdr))
    totals = dict.fromkeys(cols, 0)
    totals["tests"] = 0
    per_module = {}
    for job in jobs:
        c = dict.fromkeys(cols, 0)
        ids = job.order
        for sid in ids:
            rec = records[sid]
            if rec["outcome"] == SKIP:
                c["skip"] += 1
            elif sid in xpassed:
                c["xpass"] += 1
            elif not rec.get("on_loop"):
                c["notloop"] += 1
            elif sid in xfailed:
                c["xfail"] += 1
            elif rec["outcome"] in (PASS, XFAIL_UT):
                c["pass"] += 1
            elif rec["outcome"] == FAIL:
                c["fail"] += 1
            else:
                c["error"] += 1
            if sid in unexpected:
                c["UNEXP"] += 1
        c["tests"] = len(ids)
        per_module[job.module] = dict(c, elapsed=round(job.elapsed, 1),
                                      restarts=job.restarts,
                                      module_error=job.module_error)
        for k in cols + ["tests"]:
            totals[k] += c[k]
        flag = "  MODULE ERROR" if job.module_error else ""
        print("%-24s %5d " % (job.module, len(ids)) + " ".join(
            "%7d" % c[k] for k in cols) + "  %5.1fs%s" % (job.elapsed, flag))
    print("-" * len(hdr))
    print("%-24s %5d " % ("TOTAL", totals["tests"]) + " ".join(
        "%7d" % totals[k] for k in cols) + "  %5.1fs" % (
            time.monotonic() - t_start))
    created_only = sum(1 for r in records.values() if r["outcome"] != SKIP
                       and not r.get("on_loop") and r.get("created"))
    print("notloop: %d test(s) never created a %s loop, %d created one but "
          "never ran it (-v lists them)" % (totals["notloop"] - created_only,
                                            loop_key, created_only))
    notloop_fail = [s for s in unexpected if not records[s].get("on_loop")]
    if notloop_fail:
        print("(fail/error columns include only on-loop tests; %d not-on-loop "
              "test(s) also failed and are listed below)" % len(notloop_fail))

    module_errors = {j.module: j.module_error for j in jobs if j.module_error}
    for m, err in module_errors.items():
        print("\nMODULE ERROR in %s:\n%s" % (m, _indent(err[-3000:])))
        unexpected.setdefault("%s (module)" % m, {
            "outcome": ERROR, "detail": err, "on_loop": False})

    if opts.verbose:
        nl = [s for s, r in records.items() if r["outcome"] != SKIP
              and not r.get("on_loop") and s not in xpassed]
        print("\nNot-on-loop tests (%d):" % len(nl))
        for s in nl:
            print("  %s%s" % (s, "  (created a %s loop, never ran it)" % (
                loop_key) if records[s].get("created") else ""))

    if skipped_by_list:
        print("\nSkipped by the runner's skip list (%d):" % len(skipped_by_list))
        for s, r in sorted(skipped_by_list.items()):
            print("  %s  -- %s" % (s, r))
    if stdlib_too:
        print("\nFail on stdlib asyncio too (not counted, %d):" %
              len(stdlib_too))
        for s in sorted(stdlib_too):
            print("  %s  [%s]" % (s, _first_line(records[s])))
    if flaky:
        print("\nFailed in the module run but passed when retried alone "
              "(flaky or order-dependent, %d):" % len(flaky))
        for s in sorted(flaky):
            print("  %s  [%s]" % (s, _first_line(records[s])))
    if xpassed:
        print("\nExpected failures that PASSED (remove them from "
              "expected_failures.py, %d):" % len(xpassed))
        for s in sorted(xpassed):
            print("  %s  -- was: %s" % (s, xpassed[s]))
    unused = [p for p in expected if not any(
        p == s or fnmatch.fnmatchcase(s, p) for s in records)]
    if unused and not opts.pattern and not opts.modules:
        print("\n%d expected-failure entr%s matched no test in this run "
              "(fine if for another Python version%s)" % (
                  len(unused), "y" if len(unused) == 1 else "ies",
                  "" if opts.verbose else "; -v lists them"))
        if opts.verbose:
            for p in sorted(unused):
                print("  " + p)

    if unexpected:
        print("\nUNEXPECTED FAILURES (%d):" % len(unexpected))
        for s in sorted(unexpected):
            rec = unexpected[s]
            tag = "" if rec.get("on_loop") else " [not on loop]"
            print("  %s  %s%s  [%s]" % (s, rec["outcome"].upper(), tag,
                                         _first_line(rec)))
            if opts.verbose:
                tb = "\n".join(ln for ln in rec.get("detail", "").splitlines()
                               if ln.strip(" ^~"))
                print(_indent(tb[-3000:], "      "))
    print("\nSummary: %d tests, %d on-loop passed, %d expected failures, "
          "%d skipped, %d not-on-loop, %d fail on stdlib too, %d flaky, "
          "%d xpass, %d UNEXPECTED" % (
              totals["tests"], totals["pass"], len(xfailed), totals["skip"],
              totals["notloop"], len(stdlib_too), len(flaky), len(xpassed),
              len(unexpected)))

    if opts.durations:
        durs = sorted(((r.get("duration") or 0, s) for s, r in records.items()),
                      reverse=True)[:opts.durations]
        print("\nSlowest tests:")
        for d, s in durs:
            print("  %6.2fs  %s" % (d, s))

    failed = bool(unexpected) or (opts.strict and bool(xpassed or flaky))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({
                "loop": opts.loop, "python": "%d.%d" % py_version,
                "poller": os.environ.get("FASTLOOP_POLLER"),
                "ok": not failed,
                "modules": per_module, "totals": totals,
                "unexpected": {s: {"outcome": r["outcome"],
                                   "on_loop": r.get("on_loop", False),
                                   "detail": r.get("detail", "")[-3000:]}
                               for s, r in unexpected.items()},
                "stdlib_too": sorted(stdlib_too), "flaky": sorted(flaky),
                "xpassed": xpassed, "xfailed": xfailed,
                "skipped_by_list": skipped_by_list,
            }, f, indent=1)
    return 1 if failed else 0


def _first_line(rec):
    """The most informative line of a traceback: the exception line."""
    detail = (rec.get("detail") or "").strip()
    if not detail:
        return rec.get("outcome", "")
    lines = [ln for ln in detail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if not ln.startswith(" ") and not ln.startswith("Traceback"):
            return ln.strip()[:200]
    return lines[-1].strip()[:200]


def _indent(text, prefix="    "):
    return "\n".join(prefix + ln for ln in text.splitlines())


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
