"""CPython's own test_asyncio suite, run on fastloop (tests/conformance/).

Runs tests/conformance/run_cpython_asyncio.py --loop fastloop as a subprocess,
once per poller backend (each full run takes ~20 s on a 2-core machine), and
fails with the list of unexpected failures.  Slow-ish: deselect with
    pytest -m "not cpython_suite"
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

import fastloop

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.path.join(HERE, "conformance", "run_cpython_asyncio.py")
# Wall-clock cap for one runner invocation (it has its own per-test and
# per-module limits; this only guards against the runner itself hanging).
RUN_TIMEOUT = 900


def _runner_env(poller):
    env = dict(os.environ, FASTLOOP_POLLER=poller)
    # The runner's workers must import the very fastloop this session does
    # (in-place build, editable or regular install).
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastloop.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def _describe(summary):
    lines = []
    for sid, rec in sorted(summary.get("unexpected", {}).items()):
        where = "" if rec.get("on_loop") else " [not on loop]"
        lines.append("%s: %s%s" % (sid, rec["outcome"].upper(), where))
        # Drop caret lines and the runner's own loop-tracking frames.
        tb = [ln for ln in rec.get("detail", "").rstrip().splitlines()
              if ln.strip(" ^~") and "conformance/run_cpython_asyncio" not in ln
              and "return super().run_" not in ln]
        lines.extend("    " + ln for ln in tb[-12:])
    return "\n".join(lines)


@pytest.mark.cpython_suite
@pytest.mark.timeout(RUN_TIMEOUT + 60)
@pytest.mark.parametrize("poller", fastloop._poller.AVAILABLE)
def test_cpython_asyncio_suite(poller, tmp_path):
    env = _runner_env(poller)
    if importlib.util.find_spec("test.test_asyncio") is None:
        pytest.skip("this Python ships without CPython's test suite "
                    "(test.test_asyncio); Debian/Ubuntu: libpython3.X-testsuite")
    out_json = tmp_path / "summary.json"
    cmd = [sys.executable, RUNNER, "--loop", "fastloop",
           "--json", str(out_json)]
    try:
        proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        print(out)
        pytest.fail("conformance runner did not finish in %ss" % RUN_TIMEOUT)
    print(proc.stdout)   # per-module table and summary (shown with -rP/-s)
    if not out_json.exists():
        pytest.fail("conformance runner failed (exit %d) before writing its "
                    "summary:\n%s" % (proc.returncode, proc.stdout[-5000:]))
    summary = json.loads(out_json.read_text())
    if proc.returncode != 0 or not summary["ok"]:
        pytest.fail(
            "CPython test_asyncio on fastloop (FASTLOOP_POLLER=%s, Python "
            "%s): %d unexpected failure(s); fix them, or, only if the test "
            "checks stdlib internals, list them in "
            "tests/conformance/expected_failures.py\n%s" % (
                poller, summary["python"], len(summary["unexpected"]),
                _describe(summary)),
            pytrace=False)
