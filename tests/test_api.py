"""The public surface: new_event_loop, Loop, EventLoopPolicy, install, run,
asyncio.Runner / asyncio.run with loop_factory, and Ctrl-C handling."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import pytest

import fastloop

pytestmark = pytest.mark.timeout(60)

FASTLOOP_PATH = os.path.dirname(os.path.dirname(os.path.abspath(fastloop.__file__)))


POLICIES_DEPRECATED = sys.version_info >= (3, 14)


def _quietly(function, *args):
    """Call a policy function of asyncio's (deprecated from 3.14) without its
    DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return function(*args)


@pytest.fixture
def restore_policy():
    saved = _quietly(asyncio.get_event_loop_policy)
    yield
    _quietly(asyncio.set_event_loop_policy, saved)


def test_version_and_exports():
    assert isinstance(fastloop.__version__, str) and fastloop.__version__.count(".") >= 1
    for name in fastloop.__all__:
        assert hasattr(fastloop, name)


def test_new_event_loop_is_an_asyncio_loop():
    loop = fastloop.new_event_loop()
    try:
        assert isinstance(loop, fastloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert repr(loop) == "<fastloop.loop.Loop running=False closed=False debug=False>"
    finally:
        loop.close()


def test_each_platform_poller_can_be_chosen(monkeypatch):
    available = fastloop._poller.AVAILABLE
    assert available[-1] == "poll"                  # everywhere, the fallback
    if sys.platform.startswith("linux"):
        assert available[0] == "epoll"
    elif sys.platform == "darwin" or "bsd" in sys.platform:
        assert available[0] == "kqueue"
    for name in available:
        loop = fastloop.Loop(poller=name)
        try:
            assert loop._poller_name == name
            assert loop.run_until_complete(asyncio.sleep(0.001, name)) == name
        finally:
            loop.close()
    monkeypatch.delenv("FASTLOOP_POLLER", raising=False)
    loop = fastloop.Loop()
    try:
        assert loop._poller_name == available[0]    # the best one by default
    finally:
        loop.close()


def test_unknown_poller_is_a_value_error():
    with pytest.raises(ValueError, match="unknown or unavailable poller"):
        fastloop.Loop(poller="nope")


def test_install_sets_the_policy(restore_policy):
    # From 3.14 it warns, as asyncio.set_event_loop_policy() does.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastloop.install()
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert len(deprecations) == (1 if POLICIES_DEPRECATED else 0)
    if deprecations:
        assert "fastloop.run(main())" in str(deprecations[0].message)
        assert deprecations[0].filename == __file__      # the caller's line
    assert isinstance(_quietly(asyncio.get_event_loop_policy), fastloop.EventLoopPolicy)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, fastloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, "ok")) == "ok"
    finally:
        loop.close()


def test_policy_creates_fastloop_loops():
    loop = fastloop.EventLoopPolicy().new_event_loop()
    try:
        assert isinstance(loop, fastloop.Loop)
    finally:
        loop.close()


def test_run_returns_result_on_a_fastloop_loop():
    async def main():
        await asyncio.sleep(0.001)
        return type(asyncio.get_running_loop())

    assert fastloop.run(main()) is fastloop.Loop


def test_run_propagates_exceptions_and_closes_the_loop():
    loops = []

    async def main():
        loops.append(asyncio.get_running_loop())
        raise LookupError("from main")

    with pytest.raises(LookupError, match="from main"):
        fastloop.run(main())
    assert loops[0].is_closed()


def test_run_debug_flag():
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert fastloop.run(main(), debug=True) is True
    assert fastloop.run(main(), debug=False) is False


def test_run_inside_a_running_loop_is_refused():
    async def inner():
        pass

    async def main():
        coro = inner()
        try:
            with pytest.raises(RuntimeError, match="cannot be called from a running event loop"):
                fastloop.run(coro)
        finally:
            coro.close()

    fastloop.run(main())


def test_run_finalizes_async_generators_and_cancels_leftover_tasks():
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("agen finalized")

    async def forever():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            events.append("task cancelled")
            raise

    async def main():
        g = agen()
        await g.__anext__()
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)
        main.g = g            # keep it alive past main()

    fastloop.run(main())
    assert sorted(events) == ["agen finalized", "task cancelled"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_asyncio_runner_with_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    with asyncio.Runner(loop_factory=fastloop.new_event_loop) as runner:
        assert runner.run(main()) is fastloop.Loop
        assert runner.run(main()) is fastloop.Loop


@pytest.mark.skipif(sys.version_info < (3, 12), reason="loop_factory is new in 3.12")
def test_asyncio_run_with_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main(), loop_factory=fastloop.new_event_loop) is fastloop.Loop


CTRL_C_CHILD = textwrap.dedent("""
    import asyncio, signal, sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import fastloop

    async def main():
        print("ready", flush=True)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            print("main cancelled", flush=True)
            raise

    runner = fastloop.run if sys.argv[1] == "fastloop" else asyncio.run
    try:
        runner(main())
    except KeyboardInterrupt:
        print("KeyboardInterrupt", flush=True)
""")


@pytest.mark.parametrize("runner", ["asyncio", "fastloop"])
def test_ctrl_c_cancels_main_task_then_raises_keyboard_interrupt(runner):
    if runner == "asyncio" and sys.version_info < (3, 11):
        pytest.skip("asyncio.run() cancels the main task on Ctrl-C from 3.11 on "
                    "(fastloop.run() does on 3.10 too)")
    env = dict(os.environ, PYTHONPATH=FASTLOOP_PATH)
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, runner],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert out.split() == ["main", "cancelled", "KeyboardInterrupt"], err
    assert proc.returncode == 0
