"""Shared fixtures: every behaviour test runs on stdlib asyncio and on fastloop
with each poller backend, and the results must agree.

`loop_factory` is parametrized over them (epoll on Linux, kqueue on macOS and
the BSDs or in a Linux build linked with libkqueue, poll everywhere); `loop`
is a fresh loop from it,
closed after the test. `is_fastloop` tells a test which kind it runs on, for the
few documented differences. Every test also checks that it leaks no fd.
"""
import asyncio
import gc
import os
import socket
import sys

import pytest

import fastloop

IMPLEMENTATIONS = ["asyncio"] + ["fastloop-" + name for name in fastloop._poller.AVAILABLE]
if "kqueue" in fastloop._poller.AVAILABLE and sys.platform.startswith("linux"):
    # libkqueue (see setup.py) opens two fds for the whole process with its
    # first queue: open them before the tests' fd counts start.
    fastloop.Loop(poller="kqueue").close()


def make_factory(name):
    if name == "asyncio":
        return asyncio.SelectorEventLoop if sys.platform != "win32" else asyncio.new_event_loop
    poller = name.split("-", 1)[1]
    return lambda: fastloop.Loop(poller=poller)


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request):
    return request.param


@pytest.fixture
def loop_factory(impl):
    return make_factory(impl)


@pytest.fixture
def is_fastloop(impl):
    return impl.startswith("fastloop")


@pytest.fixture
def loop(loop_factory):
    loop = loop_factory()
    try:
        yield loop
    finally:
        if loop.is_running():
            loop.stop()
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()
        asyncio.set_event_loop(None)


@pytest.fixture
def sockpair():
    """A connected pair of non-blocking sockets."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def _open_fds():
    try:
        return set(os.listdir("/proc/self/fd"))
    except FileNotFoundError:      # not Linux: skip the check
        return None


@pytest.fixture(autouse=True)
def no_fd_leak(request):
    if request.node.get_closest_marker("allow_fd_change"):
        yield
        return
    before = _open_fds()
    yield
    if before is None:
        return
    gc.collect()
    after = _open_fds()
    leaked = sorted(after - before, key=int)
    details = []
    for fd in leaked:
        try:
            details.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            pass    # the listing's own fd, gone by now
    assert not details, f"test leaked file descriptors: {details}"


# ---- reference-leak hunt (a debug build of CPython only)

def pytest_addoption(parser):
    parser.addoption(
        "--refleaks", metavar="WARMUPS:RUNS", default=None,
        help="run each test function 1 + WARMUPS + RUNS times with the same "
             "fixtures and report those whose every measured run left more "
             "references or memory blocks behind (needs sys.gettotalrefcount, "
             "a debug build of CPython; e.g. --refleaks 2:3)")


_LEAKS = []


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    spec = pyfuncitem.config.getoption("--refleaks")
    if not spec:
        return None
    import refleaks
    warmups, runs = (int(n) for n in spec.split(":"))
    func = pyfuncitem.obj
    args = {name: pyfuncitem.funcargs[name] for name in pyfuncitem._fixtureinfo.argnames}
    func(**args)        # the test itself: its outcome is the test's
    try:
        refs, blocks = refleaks.measure(lambda: func(**args), warmups, runs)
    except BaseException as exc:    # a test that cannot run twice (it closes its loop...)
        _LEAKS.append((pyfuncitem.nodeid, "not measured: runs again raised %r" % (exc,)))
        return True
    if refleaks.leaking(refs, blocks):
        _LEAKS.append((pyfuncitem.nodeid, "LEAK references %s, memory blocks %s" % (refs, blocks)))
    return True


def pytest_terminal_summary(terminalreporter, config):
    if config.getoption("--refleaks"):
        terminalreporter.section("reference leaks (--refleaks)")
        for nodeid, what in _LEAKS:
            terminalreporter.write_line("%s: %s" % (nodeid, what))
        leaking = sum(what.startswith("LEAK") for _, what in _LEAKS)
        terminalreporter.write_line("%d leaking, %d not measured" % (leaking, len(_LEAKS) - leaking))


def pytest_configure(config):
    if config.getoption("--refleaks") and not hasattr(sys, "gettotalrefcount"):
        raise pytest.UsageError("--refleaks needs a debug build of CPython (sys.gettotalrefcount)")
    config.addinivalue_line("markers", "allow_fd_change: skip the fd leak check")
    config.addinivalue_line(
        "markers", "cpython_suite: CPython's test_asyncio on fastloop (slow); "
                   "deselect with -m 'not cpython_suite'")
