"""`python -m fastloop`: `run` (a script or module run as the python command
would run it, with fastloop installed), `info` and `bench`.

`run` is checked against the interpreter itself: the same program started
with `python ...` and with `python -m fastloop run ...` must see the same
argv, sys.path[0], __name__ and exit status; only the event loop differs.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import fastloop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastloop.__file__)))

# Prints what the program sees, as one JSON line, then exits with $EXIT_WITH.
PROGRAM = textwrap.dedent("""\
    import asyncio, json, os, sys
    import sibling      # beside the program: found through sys.path[0]

    async def main():
        loop = asyncio.get_running_loop()
        return type(loop).__module__ + "." + type(loop).__name__

    print(json.dumps({"argv": sys.argv, "path0": os.path.realpath(sys.path[0]),
                      "name": __name__, "loop": asyncio.run(main()),
                      "sibling": sibling.VALUE}))
    sys.exit(int(os.environ.get("EXIT_WITH", "0")))
""")


def _python(args, cwd, **env):
    # The child imports this very fastloop; it picks its own poller unless
    # the test says otherwise.
    environ = {k: v for k, v in os.environ.items() if k != "FASTLOOP_POLLER"}
    environ.update(env)
    environ["PYTHONPATH"] = os.pathsep.join(
        [ROOT] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return subprocess.run([sys.executable] + args, cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=60)


def _seen(proc):
    assert proc.stdout, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.fixture
def program_dir(tmp_path):
    """A directory with the program as app.py, as the module appmod and as a
    __main__.py, plus the sibling module all three import."""
    (tmp_path / "app.py").write_text(PROGRAM)
    (tmp_path / "appmod.py").write_text(PROGRAM)
    (tmp_path / "__main__.py").write_text(PROGRAM)
    (tmp_path / "sibling.py").write_text("VALUE = 42\n")
    return tmp_path


def _compare(python_args, fastloop_args, cwd, **env):
    plain = _python(python_args, cwd, **env)
    ours = _python(["-m", "fastloop", "run"] + fastloop_args, cwd, **env)
    assert ours.returncode == plain.returncode, ours.stderr
    seen_plain, seen_ours = _seen(plain), _seen(ours)
    assert seen_plain.pop("loop").startswith("asyncio.")
    assert seen_ours.pop("loop") == "fastloop.loop.Loop"
    assert seen_ours == seen_plain
    return seen_ours


@pytest.mark.timeout(120)
def test_run_script_as_python_would(program_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("cwd")       # not the script's directory
    script = str(program_dir / "app.py")
    seen = _compare([script, "a", "-x", "--flag"], [script, "a", "-x", "--flag"], elsewhere)
    assert seen["argv"] == [script, "a", "-x", "--flag"]   # options belong to the script
    assert seen["path0"] == os.path.realpath(program_dir)
    assert seen["name"] == "__main__"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("spelling", [["-m", "appmod"], ["-mappmod"]])
def test_run_module_as_python_would(program_dir, spelling):
    seen = _compare(["-m", "appmod", "b"], spelling + ["b"], program_dir)
    assert seen["argv"] == [str(program_dir / "appmod.py"), "b"]
    assert seen["name"] == "__main__"


@pytest.mark.timeout(120)
def test_run_directory_with_main(program_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("cwd")
    seen = _compare([str(program_dir), "c"], [str(program_dir), "c"], elsewhere)
    assert seen["argv"] == [str(program_dir), "c"]


@pytest.mark.timeout(120)
def test_run_passes_on_the_exit_status(program_dir):
    _compare(["app.py"], ["app.py"], program_dir, EXIT_WITH="3")


@pytest.mark.timeout(60)
def test_run_usage(tmp_path):
    for args in ([], ["--bogus"], ["-m"]):
        proc = _python(["-m", "fastloop", "run"] + args, tmp_path)
        assert proc.returncode == 2, args
        assert "usage: python -m fastloop run" in proc.stderr
    proc = _python(["-m", "fastloop", "run", "-h"], tmp_path)
    assert proc.returncode == 0
    assert "usage: python -m fastloop run" in proc.stdout


@pytest.mark.timeout(60)
def test_no_command_is_a_usage_error(tmp_path):
    proc = _python(["-m", "fastloop"], tmp_path)
    assert proc.returncode == 2
    assert "required: COMMAND" in proc.stderr


@pytest.mark.timeout(60)
def test_info_names_the_poller_in_use(tmp_path):
    available = fastloop._poller.AVAILABLE
    proc = _python(["-m", "fastloop", "info"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"fastloop {fastloop.__version__} (")
    assert f"poller   {available[0]}; available: {', '.join(available)}" in lines
    proc = _python(["-m", "fastloop", "info"], tmp_path, FASTLOOP_POLLER="poll")
    assert f"poller   poll (FASTLOOP_POLLER=poll); available: {', '.join(available)}" \
        in proc.stdout.splitlines()


@pytest.mark.timeout(120)
def test_bench_runs_and_reports_ratios(tmp_path):
    proc = _python(["-m", "fastloop", "bench", "--list"], tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("call_soon ")
    proc = _python(["-m", "fastloop", "bench", "--quick", "--repeat", "1",
                    "--only", "call_soon,timer_churn", "--loops", "fastloop,asyncio"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert [cell.strip() for cell in rows[0].split("|")[1:-1]] == [
        "ops/s", "fastloop", "asyncio", "fastloop/asyncio"]
    names = [row.split("|")[1].strip() for row in rows[1:]]
    assert names == ["call_soon", "timer_churn", "**geomean**"]
    for row in rows[1:]:
        assert row.split("|")[-2].strip().strip("*").endswith("x")   # the ratio


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, message", [
    (["--only", "nope"], "unknown benchmark(s) nope"),
    (["--loops", "nope"], "unknown event loop 'nope'"),
])
def test_bench_rejects_unknown_names(tmp_path, args, message):
    proc = _python(["-m", "fastloop", "bench"] + args, tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr
