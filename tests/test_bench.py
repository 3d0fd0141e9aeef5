"""The network benchmark's parts run: the C reference server builds and
answers, and the load generator drives it and a fastloop server, checking
every reply as it goes (client.py exits non-zero on a wrong byte). Short runs
with no timing asserted: this guards the harness, not the figures."""
import json
import os
import shutil
import subprocess
import sys

import pytest

NET = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "net")

needs_c_server = pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("cc") is None,
    reason="the C reference server is Linux-only and needs cc")


def start(cmd, **kw):
    """Start a server; return (process, client.py's address arguments)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    ready = proc.stdout.readline().decode().split()
    if ready[:2] == ["ready", "tcp"]:
        return proc, ["--addr", "tcp", "--host", ready[2], "--port", ready[3]]
    if ready[:2] == ["ready", "unix"]:
        return proc, ["--addr", "unix", "--path", ready[2]]
    proc.kill()
    proc.wait()
    raise AssertionError(f"server said {ready!r}: {proc.stderr.read().decode()}")


def drive(target, *what):
    """Run client.py briefly; return the number of requests it completed."""
    out = subprocess.run(
        [sys.executable, os.path.join(NET, "client.py"), *target, *what,
         "--conns", "4", "--duration", "0.3", "--warmup", "0.05"],
        capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr.decode()
    result = [l for l in out.stdout.decode().splitlines() if l.startswith("result ")]
    assert result, out.stdout.decode()
    return int(result[-1].split()[1])


def stop(proc):
    proc.kill()
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


@pytest.fixture(scope="module")
def epoll_echo(tmp_path_factory):
    exe = str(tmp_path_factory.mktemp("epoll") / "epoll_echo")
    subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", exe,
                    os.path.join(NET, "epoll_echo.c")], check=True, timeout=60)
    return exe


@needs_c_server
@pytest.mark.parametrize("mode", [
    ("--size", "1024"), ("--size", "102400"), ("--http",),
    ("--size", "1024", "--reconnect"), ("--size", "1024", "--rate", "2000"),
    ("--size", "1024", "--reconnect", "--rate", "500")],
    ids=["echo-1k", "echo-100k", "http", "reconnect", "paced", "paced-reconnect"])
def test_c_reference_server_tcp(epoll_echo, mode):
    proc, target = start([epoll_echo] + (["-H"] if "--http" in mode else [])
                         + ["tcp", "127.0.0.1", "0"])
    try:
        assert drive(target, *mode) > 0
    finally:
        stop(proc)


@needs_c_server
def test_c_reference_server_unix(epoll_echo, tmp_path):
    proc, target = start([epoll_echo, "unix", str(tmp_path / "s.sock")])
    try:
        assert drive(target, "--size", "1024") > 0
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def uring_echo(tmp_path_factory):
    """uring_probe.py's io_uring server, where liburing's headers are
    installed (CI does not install them) and the kernel lets us use it."""
    exe = str(tmp_path_factory.mktemp("uring") / "uring_echo")
    built = subprocess.run(["cc", "-O2", "-Wall", "-Werror", "-o", exe,
                            os.path.join(NET, "uring_echo.c"), "-luring"],
                           capture_output=True, timeout=60)
    if built.returncode != 0:
        if b"liburing.h" in built.stderr:
            pytest.skip("liburing is not installed (apt-get install liburing-dev)")
        raise AssertionError(built.stderr.decode())
    return exe


@needs_c_server
@pytest.mark.parametrize("flags", ["", "defer"])
@pytest.mark.parametrize("mode", [("--size", "1024"), ("--size", "102400"),
                                  ("--size", "1024", "--reconnect")],
                         ids=["echo-1k", "echo-100k", "reconnect"])
def test_io_uring_probe_server(uring_echo, flags, mode):
    proc = subprocess.Popen([uring_echo, "tcp", "127.0.0.1", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=dict(os.environ, URING_FLAGS=flags))
    first = proc.stdout.readline().decode()
    if not first:
        err = proc.stderr.read().decode()
        stop(proc)
        if "io_uring_queue_init" in err:
            pytest.skip(f"io_uring refused here: {err.strip()}")
        raise AssertionError(err)
    _, _, host, port = first.split()
    try:
        assert drive(["--addr", "tcp", "--host", host, "--port", port], *mode) > 0
    finally:
        stop(proc)


@pytest.mark.parametrize("style", ["protocol", "http", "streams", "sock"])
def test_fastloop_bench_server(style):
    # No PYTHONPATH: servers.py imports the installed fastloop, and falls
    # back to this checkout's (built in place) only when none is installed.
    if style == "http":
        pytest.importorskip("httptools")
    proc, target = start([sys.executable, os.path.join(NET, "servers.py"), "--loop", "fastloop",
                          "--style", style, "--port", "0"])
    try:
        assert drive(target, *(["--http"] if style == "http" else ["--size", "1024"])) > 0
    finally:
        stop(proc)


@needs_c_server
def test_driver_reports_every_loop_and_the_c_reference(tmp_path):
    """run.py end to end for one short round: the C reference builds, each
    loop's server runs, and the tables carry their figures."""
    pytest.importorskip("psutil")
    out = subprocess.run(
        [sys.executable, os.path.join(NET, "run.py"), "--only", "protocol-1k,connect-1k",
         "--loops", "fastloop,asyncio", "--rounds", "1", "--duration", "0.3",
         "--warmup", "0.1", "--json", str(tmp_path / "net.json")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines()
            if line.startswith("| protocol-1k") or line.startswith("| connect-1k")}
    assert set(rows) == {"protocol-1k", "connect-1k"}
    assert "Skipped" not in out.stdout
    data = json.loads((tmp_path / "net.json").read_text())
    for cell in ("protocol-1k", "connect-1k"):
        for loop in ("fastloop", "asyncio"):
            (run,) = data["results"][cell][loop]
            assert run["requests"] > 0 and run["cpu_us"] > 0
            # Both close what they accept: no fd gained per connection.
            assert run["fds_per_req"] < 0.1
    assert data["c_ref"]["echo-1k"] and data["c_ref"]["connect-echo-1k"]
