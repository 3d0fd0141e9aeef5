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
STDLIB_INTERNALS = {
}

# ---------------------------------------------------------------------------
# Not yet implemented (issue 3/4): network I/O, pipes, subprocesses and
# signals on fastloop.  These are real gaps, tracked by those issues; delete
# entries as the features land (the runner lists entries that now pass).
# Applies to fastloop only.
# ---------------------------------------------------------------------------
NOT_YET_IMPLEMENTED = {
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
BY_LOOP = {
    "uvloop": {
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
    or another name) on Python `version` ((major, minor))."""
    if loop == "asyncio":
        return {}   # the stdlib loop is the reference: nothing is expected
    result = dict(STDLIB_INTERNALS)
    if loop == "fastloop":
        result.update(NOT_YET_IMPLEMENTED)
    for ver, entries in BY_VERSION.items():
        if tuple(version[:2]) == ver:
            result.update(entries)
    result.update(BY_LOOP.get(loop, {}))
    return result


def skipped_tests(loop, version):
    return dict(SKIP)
