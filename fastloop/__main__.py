"""``python -m fastloop``: small command line toolbox.

    python -m fastloop bench [--quick] [--loops fastloop,asyncio,...] [--only NAME,...]
    python -m fastloop info
    python -m fastloop run SCRIPT [args...]
    python -m fastloop run -m MODULE [args...]

Optional imports (uvloop, rloop, the event loop itself) happen inside the
command that needs them; ``run`` does not even load the benchmark module.
"""
import argparse
import os
import platform
import sys

RUN_USAGE = "python -m fastloop run (SCRIPT | -m MODULE) [args...]"


def _version(dist: str):
    """Installed version of ``dist``, or None if it is not installed."""
    from importlib import metadata, util
    if util.find_spec(dist) is None:
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:  # importable but not pip-installed
        return "unknown version"


def _available_pollers():
    try:
        from fastloop import _poller
    except ImportError:       # reported with the loop below
        return ["?"]
    return _poller.AVAILABLE


def _info(args) -> int:
    import fastloop
    print(f"fastloop {getattr(fastloop, '__version__', '?')} "
          f"({os.path.dirname(os.path.abspath(fastloop.__file__ or '.'))})")
    print(f"Python   {platform.python_version()} "
          f"({platform.python_implementation()}, {sys.platform})")
    try:
        loop = fastloop.new_event_loop()
    except Exception as exc:  # e.g. the compiled core is missing or stale
        poller = f"unavailable ({type(exc).__name__}: {exc})"
    else:
        try:
            poller = getattr(loop, "_poller_name", None) or "unknown"
        finally:
            loop.close()
    requested = os.environ.get("FASTLOOP_POLLER")
    print(f"poller   {poller}"
          + (f" (FASTLOOP_POLLER={requested})" if requested else "")
          + f"; available: {', '.join(_available_pollers())}")
    for dist in ("uvloop", "rloop"):
        print(f"{dist:<8} {_version(dist) or 'not installed'}")
    return 0


def _run(argv) -> int:
    """Run a script or module the way ``python SCRIPT`` / ``python -m MODULE``
    would, but with fastloop installed as the asyncio event loop."""
    import runpy

    first = argv[0] if argv else "-"
    if first in ("-h", "--help"):
        print(f"usage: {RUN_USAGE}")
        return 0
    module = script = None
    if first == "-m" and len(argv) > 1:
        module, rest = argv[1], argv[2:]
    elif first.startswith("-m") and len(first) > 2:  # -mMODULE, as python accepts
        module, rest = first[2:], argv[1:]
    elif not first.startswith("-"):
        script, rest = first, argv[1:]
    else:
        print(f"usage: {RUN_USAGE}", file=sys.stderr)
        return 2

    import fastloop
    fastloop.install()

    # We were started with `python -m`, so sys.path[0] is the working
    # directory; that is already right for `-m MODULE`.  For a script python
    # would put the script's directory there instead.
    if module is not None:
        sys.argv = [module] + rest  # run_module replaces argv[0] by the file path
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = [script] + rest
        if os.path.isfile(script):
            sys.path[0] = os.path.dirname(os.path.realpath(script))
        else:  # a directory or zip file with __main__.py: run_path adds it
            del sys.path[0]
        runpy.run_path(script, run_name="__main__")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `run` is parsed by hand: like the python command line, everything after
    # SCRIPT or -m MODULE belongs to the program, options included, which
    # argparse cannot express.
    if argv[:1] == ["run"]:
        return _run(argv[1:])

    parser = argparse.ArgumentParser(
        prog="python -m fastloop",
        description="fastloop: a Cython-accelerated asyncio event loop.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    from . import _bench  # pure Python and cheap; needed for the options
    bench = sub.add_parser(
        "bench", help="compare scheduling speed with asyncio/uvloop/rloop",
        description="Scheduling micro-benchmarks (for careful numbers use "
                    "bench/bench_scheduling.py, which uses pyperf).")
    _bench.add_arguments(bench)
    bench.set_defaults(func=_bench.main)

    info = sub.add_parser("info", help="show versions and the poller in use")
    info.set_defaults(func=_info)

    sub.add_parser("run", help="run a script or module with fastloop installed",
                   usage=RUN_USAGE)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
