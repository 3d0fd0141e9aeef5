"""fastloop: a Cython-accelerated drop-in replacement for the asyncio event loop.

    import fastloop
    fastloop.run(main())                                   # like asyncio.run
    asyncio.run(main(), loop_factory=fastloop.new_event_loop)   # Python 3.12+
    with asyncio.Runner(loop_factory=fastloop.new_event_loop) as runner: ...
"""
import asyncio as _asyncio
import sys as _sys
import warnings as _warnings

from fastloop.loop import Loop
from fastloop._runner import run

__version__ = "0.1.0"
__all__ = ["Loop", "new_event_loop", "run", "install", "EventLoopPolicy", "__version__"]


def new_event_loop():
    """Return a new fastloop event loop."""
    return Loop()


# The platform's default policy (on Unix it also provides the child watcher
# that subprocess support asks the policy for before 3.14); its private name
# avoids the deprecation warning 3.14 attaches to the public one.
_BasePolicy = (getattr(_asyncio, "unix_events", None)
               and getattr(_asyncio.unix_events, "_UnixDefaultEventLoopPolicy", None)
               or getattr(_asyncio.events, "BaseDefaultEventLoopPolicy", None)
               or getattr(_asyncio.events, "_BaseDefaultEventLoopPolicy"))


class EventLoopPolicy(_BasePolicy):
    """An asyncio event loop policy whose loops are fastloop loops.

    Policies are deprecated from Python 3.14 on; prefer fastloop.run() or
    loop_factory=fastloop.new_event_loop.
    """

    def _loop_factory(self):
        return new_event_loop()

    def __repr__(self):
        return f"<{type(self).__module__}.{type(self).__qualname__}>"


def install():
    """Make fastloop the loop asyncio creates (asyncio.new_event_loop(),
    asyncio.run(), get_event_loop()) by setting the event loop policy.

    On Python 3.12+ prefer `fastloop.run(main())` or
    `asyncio.run(main(), loop_factory=fastloop.new_event_loop)`, which do not
    change global state. Python 3.14 deprecates event loop policies: there,
    install() still works but warns, as asyncio.set_event_loop_policy() does.
    """
    if _sys.version_info >= (3, 14):
        _warnings.warn(
            "fastloop.install() relies on asyncio's event loop policies, "
            "deprecated since Python 3.14; use fastloop.run(main()) or "
            "asyncio.run(main(), loop_factory=fastloop.new_event_loop)",
            DeprecationWarning, stacklevel=2)
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", DeprecationWarning)
            _asyncio.set_event_loop_policy(EventLoopPolicy())
    else:
        _asyncio.set_event_loop_policy(EventLoopPolicy())
