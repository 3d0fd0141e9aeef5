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

STDLIB_INTERNALS = {
    # Calls loop._run_once() and asserts len(loop._ready) == 0: drives
    # BaseEventLoop's private scheduler step and reads its ready deque.
    # (Upstream runs it on test_utils.TestLoop; the runner redirects
    # clock-less TestLoops to the chosen loop.)  8 Task/Future variants.
    "test_tasks.*.test_log_destroyed_pending_task":
        "loop._run_once() / loop._ready (BaseEventLoop private scheduler)",

    # Replaces loop._run_once with a counting wrapper and builds its
    # assertion message from loop._clock_resolution and loop._selector.
    _EV + "test_timeout_rounding":
        "mocks loop._run_once, reads loop._selector/_clock_resolution",

    # Patches asyncio.base_events.socket (the socket module as seen by
    # BaseEventLoop.create_server) and loop._start_serving/_stop_serving,
    # so the "server" is built from mocks inside the stdlib implementation.
    _EV + "test_create_server_multiple_hosts_ipv4":
        "mocks asyncio.base_events.socket and loop._start_serving",
    _EV + "test_create_server_multiple_hosts_ipv6":
        "mocks asyncio.base_events.socket and loop._start_serving",

    # Checks that cancelling a pending sock_recv() is prompt (public; today
    # it stops at sock_recv(), not implemented yet on fastloop), then cleans
    # up with loop._stop_serving(r), a private BaseSelectorEventLoop method:
    # it cannot pass on another loop even once sock_recv() lands.
    _EV + "test_prompt_cancellation":
        "ends with loop._stop_serving() (BaseSelectorEventLoop private)",
}

# ---------------------------------------------------------------------------
# Not yet implemented (issue 3/4): network I/O, pipes, subprocesses and
# signals on fastloop.  These are real gaps, tracked by those issues; delete
# entries as the features land (the runner lists entries that now pass).
# Applies to fastloop only.
# ---------------------------------------------------------------------------
_SP = "test_events.LoopSubprocessTests."
# Entries below count as expected only if the traceback contains this.
NYI_MUST_RAISE = "NotImplementedError"

NOT_YET_IMPLEMENTED = {
    # --- sockets, servers, DNS, SSL (network I/O) ---
    _EV + "test_create_connection": "NYI: create_connection()",
    _EV + "test_create_connection_local_addr": "NYI: create_connection()",
    _EV + "test_create_connection_local_addr_in_use":
        "NYI: create_connection()",
    _EV + "test_create_connection_local_addr_nomatch_family":
        "NYI: create_connection()",
    _EV + "test_create_connection_local_addr_skip_different_family":
        "NYI: create_connection()",
    _EV + "test_create_ssl_connection": "NYI: create_connection(ssl=...)",
    _EV + "test_create_unix_connection": "NYI: create_unix_connection()",
    _EV + "test_create_ssl_unix_connection":
        "NYI: create_unix_connection(ssl=...)",
    _EV + "test_connect_accepted_socket": "NYI: connect_accepted_socket()",
    _EV + "test_ssl_connect_accepted_socket":
        "NYI: connect_accepted_socket(ssl=...)",
    _EV + "test_connect_accepted_socket_ssl_timeout_for_plain_socket":
        "NYI: connect_accepted_socket()",
    _EV + "test_create_server": "NYI: create_server()",
    _EV + "test_create_server_addr_in_use": "NYI: create_server()",
    _EV + "test_create_server_dual_stack": "NYI: create_server()",
    _EV + "test_create_server_reuse_port": "NYI: create_server()",
    _EV + "test_create_server_sock": "NYI: create_server(sock=...)",
    _EV + "test_create_server_trsock": "NYI: create_server() [3.12+]",
    _EV + "test_create_server_ssl": "NYI: create_server(ssl=...)",
    _EV + "test_create_server_ssl_verified": "NYI: create_server(ssl=...)",
    _EV + "test_create_server_ssl_verify_failed":
        "NYI: create_server(ssl=...)",
    _EV + "test_create_server_ssl_match_failed": "NYI: create_server(ssl=...)",
    _EV + "test_server_close": "NYI: create_server()",
    _EV + "test_create_unix_server": "NYI: create_unix_server()",
    _EV + "test_create_unix_server_path_socket_error":
        "NYI: create_unix_server()",
    _EV + "test_create_unix_server_ssl": "NYI: create_unix_server(ssl=...)",
    _EV + "test_create_unix_server_ssl_verified":
        "NYI: create_unix_server(ssl=...)",
    _EV + "test_create_unix_server_ssl_verify_failed":
        "NYI: create_unix_server(ssl=...)",
    _EV + "test_create_datagram_endpoint": "NYI: create_datagram_endpoint()",
    _EV + "test_create_datagram_endpoint_ipv6":
        "NYI: create_datagram_endpoint()",
    _EV + "test_create_datagram_endpoint_sock":
        "NYI: getaddrinfo(), create_datagram_endpoint()",
    _EV + "test_datagram_send_to_non_listening_address":
        "NYI: create_datagram_endpoint() [3.13+]",
    # --- pipes and ptys ---
    _EV + "test_read_pipe": "NYI: connect_read_pipe()",
    _EV + "test_read_pty_output": "NYI: connect_read_pipe()",
    _EV + "test_write_pipe": "NYI: connect_write_pipe()",
    _EV + "test_write_pipe_disconnect_on_close": "NYI: connect_write_pipe()",
    _EV + "test_write_pty": "NYI: connect_write_pipe()",
    _EV + "test_bidirectional_pty":
        "NYI: connect_read_pipe()/connect_write_pipe()",
    # Also asserts "open" in repr(transport) after loop.close(), i.e. the
    # pipe transports' repr must say open/closed like the stdlib's.
    _EV + "test_unclosed_pipe_transport":
        "NYI: connect_read_pipe()/connect_write_pipe()",
    # --- signals ---
    _EV + "test_add_signal_handler": "NYI: add_signal_handler()",
    _EV + "test_signal_handling_args": "NYI: add_signal_handler()",
    _EV + "test_signal_handling_while_selecting": "NYI: add_signal_handler()",
    # --- subprocesses (SubprocessTestsMixin) ---
    _SP + "test_subprocess_exec": "NYI: subprocess_exec()",
    _SP + "test_subprocess_interactive": "NYI: subprocess_exec()",
    _SP + "test_subprocess_shell": "NYI: subprocess_shell()",
    _SP + "test_subprocess_exitcode": "NYI: subprocess_shell()",
    _SP + "test_subprocess_close_after_finish": "NYI: subprocess_shell()",
    _SP + "test_subprocess_kill": "NYI: subprocess_exec()",
    _SP + "test_subprocess_terminate": "NYI: subprocess_exec()",
    _SP + "test_subprocess_send_signal": "NYI: subprocess_exec()",
    _SP + "test_subprocess_stderr": "NYI: subprocess_exec()",
    _SP + "test_subprocess_stderr_redirect_to_stdout":
        "NYI: subprocess_exec()",
    _SP + "test_subprocess_close_client_stream": "NYI: subprocess_exec()",
    _SP + "test_subprocess_wait_no_same_group": "NYI: subprocess_shell()",
    _SP + "test_subprocess_exec_invalid_args": "NYI: subprocess_exec()",
    _SP + "test_subprocess_shell_invalid_args": "NYI: subprocess_shell()",
}

# ---------------------------------------------------------------------------
# Per-Python-version additions: {(major, minor): {test_id: reason}}.
# ---------------------------------------------------------------------------
BY_VERSION = {
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
    return dict(SKIP)
