"""Shared setup for the scripts in bench/: find fastloop and its workloads.

The scripts are meant to be run from a checkout (``python bench/...``), where
``sys.path[0]`` is bench/ and not the repository root.
"""
import asyncio
import importlib
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_bench():
    """Return the fastloop._bench module of this checkout.

    It is loaded by file path rather than as ``fastloop._bench`` because
    importing the package also imports the compiled core: the workloads and
    the report code must work (e.g. against asyncio/uvloop/rloop, or to read
    old results) even when the core is not built.
    """
    # An installed fastloop (or PYTHONPATH) wins; otherwise use the in-place
    # build of this checkout.
    if importlib.util.find_spec("fastloop") is None:
        sys.path.insert(0, str(ROOT))
    name = "fastloop_bench"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "fastloop" / "_bench.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def loop_factories():
    """{name: new_event_loop} for fastloop, asyncio and whichever of uvloop
    and rloop are installed, in that order."""
    if importlib.util.find_spec("fastloop") is None:
        sys.path.insert(0, str(ROOT))
    import fastloop
    result = {"fastloop": fastloop.new_event_loop, "asyncio": asyncio.new_event_loop}
    for name in ("uvloop", "rloop"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        result[name] = module.new_event_loop
    return result
