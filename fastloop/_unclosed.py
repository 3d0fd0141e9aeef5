"""The ResourceWarning of a transport collected unclosed.

Issued from this Python frame rather than from the transport's C
finalizer: a warning from C takes the innermost Python frame running when
the collection happens as its place (any line of the program), and the
warnings machinery then works with that frame's globals, which may have no
usable builtins (a namedtuple's __new__), so that the warning itself fails.
asyncio's warning likewise comes from its transport's own __del__.
"""
import warnings


def warn_unclosed_transport(transport, _warn=warnings.warn):
    # warnings.warn is bound at definition, as asyncio's __del__ binds it:
    # at interpreter shutdown this module's globals may already be None.
    _warn(f"unclosed transport {transport!r}", ResourceWarning, source=transport)
