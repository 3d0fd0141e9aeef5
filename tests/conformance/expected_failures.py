"""Expected failures of CPython's test_asyncio on non-stdlib loops.

Keys are short test ids as printed by run_cpython_asyncio.py
("<module>.<Class>.<test>", without the "test.test_asyncio." prefix); a key
may be an fnmatch pattern ("test_tasks.*Task*Tests.test_foo") when the same
upstream test is instantiated in several classes.  Values say *why*.

Rule: only tests that exercise CPython's own loop implementation (they poke
loop._ready / loop._selector / loop._run_once, mock private methods, assert
on stdlib-specific reprs or warnings...) go in STDLIB_INTERNALS.  A failure
that reflects observable behaviour of the loop is a bug to fix, not an entry
here.  Features that are not implemented yet go in NOT_YET_IMPLEMENTED and
come out of it as they land (the runner reports entries that pass).
"""

# ---------------------------------------------------------------------------
# Tests of stdlib internals: can never pass on a loop that is not a
# subclass of asyncio.BaseEventLoop.  Applies to every non-stdlib loop.
# ---------------------------------------------------------------------------
_EV = "test_events.LoopEventLoopTests."
_SP = "test_events.LoopSubprocessTests."

STDLIB_INTERNALS = {
    # Calls loop._run_once() and asserts len(loop._ready) == 0: drives
    # BaseEventLoop's private scheduler step and reads its ready deque.
    # (Upstream runs it on test_utils.TestLoop; the runner redirects
    # clock-less TestLoops to the chosen loop.)  8 Task/Future variants.
    "test_tasks.*.test_log_destroyed_pending_task":
        "loop._run_once() / loop._ready (BaseEventLoop private scheduler)",

    # Runs on BaseSelectorEventLoop subclasses only and asserts that the
    # self-pipe (one "internal fd") exists as soon as the loop does. fastloop
    # wakes itself with an eventfd and makes the self-pipe only when a
    # signal handler needs it (signal.set_wakeup_fd).
    _EV + "test_internal_fds":
        "loop._internal_fds / eager self-pipe (BaseSelectorEventLoop private)",

    # Patches the module global asyncio.base_events.logger (the name
    # BaseEventLoop._run_once logs through) and reads the mock's call_args.
    # fastloop's core logs the same "Executing <Handle/Task ...> took %.3f
    # seconds" warning on the same "asyncio" logger, through a reference
    # taken at import, so the mock never sees it (assertLogs("asyncio")
    # would).  Same reason as uvloop's _UV_LOG entries below.
    "test_base_events.LoopBaseEventLoopWithSelectorTests."
    "test_log_slow_callbacks":
        (("mocks asyncio.base_events.logger (BaseEventLoop._run_once's "
          "global)"), "m_logger.warning.call_args"),

    # Patches asyncio.unix_events.sys so that sys.is_finalizing() is True
    # inside _UnixSelectorEventLoop.close().  fastloop's Loop.close() makes
    # the same check (and emits the same "skipping signal handlers removal"
    # ResourceWarning) through its own `sys`, which the mock does not reach.
    "test_unix_events.LoopSignalTests.test_close_on_finalizing":
        (("mocks asyncio.unix_events.sys (_UnixSelectorEventLoop.close's "
          "global)"), "ResourceWarning not triggered"),

    # Installs a child watcher that is not attached and expects spawning to
    # fail with RuntimeError. fastloop detects child exits with its own
    # watcher (pidfd, else a thread: fastloop/_children.py) and never asks the
    # policy for one, so spawning works (documented in the README).
    "test_subprocess.GenericWatcherTests.test_create_subprocess_fails_with_inactive_watcher":
        "asyncio's policy child watcher (fastloop uses its own)",
}

# ---------------------------------------------------------------------------
# Not yet implemented on fastloop: empty since the network, pipe, subprocess
# and signal APIs run on fastloop (asyncio's own transports on fastloop's
# core). New entries here only count while the test raises NotImplementedError.
# ---------------------------------------------------------------------------
NYI_MUST_RAISE = "NotImplementedError"

NOT_YET_IMPLEMENTED = {
}

# ---------------------------------------------------------------------------
# Per-Python-version additions: {(major, minor): {test_id: reason}}.
# ---------------------------------------------------------------------------
BY_VERSION = {
    (3, 14): {
        # Read the child watcher a 3.14 unix loop owns (loop._watcher, and
        # its _threads). fastloop's own watcher (fastloop/_children.py) is
        # tested in tests/test_platform.py, including what
        # test_pid_not_reaped_before_exit_published checks: the thread
        # waits without reaping, the loop reaps.
        "test_subprocess.SubprocessPidfdWatcherTests.test_watcher_implementation":
            "loop._watcher (_UnixSelectorEventLoop's child watcher)",
        "test_subprocess.SubprocessThreadedWatcherTests.test_watcher_implementation":
            "loop._watcher (_UnixSelectorEventLoop's child watcher)",
        "test_subprocess.SubprocessThreadedWatcherTests."
        "test_pid_not_reaped_before_exit_published":
            "loop._watcher._threads (_ThreadedChildWatcher's threads)",
    },
}

# ---------------------------------------------------------------------------
# Known deviations of other loops, used only with --loop <name>.  uvloop is
# the stand-in used to develop the harness; keeping its list lets
# `--loop uvloop` double as a check of the runner itself.
# ---------------------------------------------------------------------------
_UV_LOG = "uvloop logs through its own logger reference; the test mocks " \
    "asyncio.base_events.logger"
_UV_TRANSPORT = "uvloop transports do not subclass asyncio.Transport"

BY_LOOP = {
    # uvloop 0.2x on Python 3.11 (uvloop is only installed there).
    "uvloop": {
        "test_tasks.*.test_cancel_yield":
            "uvloop's stop() lets the task run more steps than stdlib",
        "test_tasks.*.test_error_in_call_soon": _UV_LOG,
        "test_futures.*.test_future_exception_never_retrieved": _UV_LOG,
        "test_futures.*.test_future_exception_never_retrieved_debug": _UV_LOG,
        "test_futures.*.test_tb_logger_exception_unretrieved": _UV_LOG,
        "test_runners.RunTests.test_asyncio_run_debug":
            "mocks asyncio.coroutines._is_debug_mode (read by BaseEventLoop)",
        "test_tasks.RunCoroutineThreadsafeTests."
        "test_run_coroutine_threadsafe_task_factory_exception":
            "uvloop always passes context= to the task factory",
        _EV + "test_create_connection": _UV_TRANSPORT,
        _EV + "test_create_unix_connection": _UV_TRANSPORT,
        _EV + "test_create_ssl_connection": _UV_TRANSPORT,
        _EV + "test_create_ssl_unix_connection": _UV_TRANSPORT,
        _EV + "test_create_datagram_endpoint": _UV_TRANSPORT,
        _EV + "test_create_datagram_endpoint_ipv6": _UV_TRANSPORT,
        _EV + "test_create_datagram_endpoint_sock": _UV_TRANSPORT,
        _EV + "test_create_connection_local_addr_in_use":
            "uvloop's bind error message lacks the address",
        _EV + "test_run_until_complete_nesting":
            "uvloop wraps the coroutine before refusing to nest",
        _EV + "test_unclosed_pipe_transport": "uvloop transport repr",
        _EV + "test_writer_callback": "uvloop remove_writer() return value",
        _SP + "test_subprocess_shell_invalid_args":
            "uvloop raises TypeError, not ValueError",
        _EV + "test_add_signal_handler":
            "uvloop signal handling differs (then upstream's run_until() "
            "hits the missing asyncio.futures.TimeoutError)",
        _EV + "test_bidirectional_pty":
            "uvloop pty handling differs (then upstream's run_until() "
            "hits the missing asyncio.futures.TimeoutError)",
    },
}

# ---------------------------------------------------------------------------
# Tests the runner does not run at all (slow or flaky on a loaded machine,
# for every loop including stdlib).  {pattern: reason}.  Keep this short.
# ---------------------------------------------------------------------------
SKIP = {
}

# The same, per Python version: {(major, minor): {pattern: reason}}.
SKIP_BY_VERSION = {
}


def expected_failures(loop, version):
    """The expected-failure dict for `loop` ("fastloop", "uvloop", "asyncio"
    or another name) on Python `version` ((major, minor)).

    Values are a reason string, or (reason, text) when the entry only
    applies to failures whose traceback contains `text`."""
    if loop == "asyncio":
        return {}   # the stdlib loop is the reference: nothing is expected
    result = dict(STDLIB_INTERNALS)
    if loop == "fastloop":
        # A not-yet-implemented entry only covers a NotImplementedError;
        # once the feature exists, any other failure is reported.
        result.update({k: (v, NYI_MUST_RAISE)
                       for k, v in NOT_YET_IMPLEMENTED.items()})
    for ver, entries in BY_VERSION.items():
        if tuple(version[:2]) == ver:
            result.update(entries)
    result.update(BY_LOOP.get(loop, {}))
    return result


def skipped_tests(loop, version):
    result = dict(SKIP)
    if loop != "asyncio":
        result.update(SKIP_BY_VERSION.get(tuple(version[:2]), {}))
    return result
