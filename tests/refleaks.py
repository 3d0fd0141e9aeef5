"""Reference-leak measurement for a debug build of CPython (it alone has
sys.gettotalrefcount()): run the same code several times and see whether
every run leaves more references or memory blocks behind than the one before.
Used by tests/conftest.py (--refleaks) and tests/conformance/huntrleaks.py."""
import gc
import linecache
import re
import sys


def _settled_counts():
    # What a repeat run would otherwise be charged for: objects in cycles,
    # the method cache, caches that fill on first use.
    for _ in range(3):
        gc.collect()
    # 3.13+ name, the only one without a DeprecationWarning from 3.14 on
    (getattr(sys, "_clear_internal_caches", None) or sys._clear_type_cache)()
    re.purge()
    linecache.clearcache()
    return sys.gettotalrefcount(), sys.getallocatedblocks()


def measure(run, warmups, runs):
    """Call run() warmups + runs times. Returns the growth in references and
    in memory blocks over each of the last `runs` calls, or None as soon as
    run() returns False (it could not run again)."""
    # Differences only, into lists made beforehand: a count kept per run would
    # itself be a new object per run (small differences are cached ints).
    refs, blocks = [0] * runs, [0] * runs
    r0 = b0 = 0
    for i in range(warmups + runs):
        if run() is False:
            return None
        if i >= warmups - 1:
            r, b = _settled_counts()
            if i >= warmups:
                refs[i - warmups], blocks[i - warmups] = r - r0, b - b0
            r0, b0 = r, b
            del r, b
    return refs, blocks


def leaking(refs, blocks):
    return all(d > 0 for d in refs) or all(d > 0 for d in blocks)
