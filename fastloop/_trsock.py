"""get_extra_info("socket") of fastloop's stream transports.

asyncio's TransportSocket, except that the writes a transport holds back
until the current callback returns (SocketTransport.settle_writes in
_transports.pyx) are sent before the socket itself is used: a shutdown(), a
socket option or a dup() made right after write() then comes after the
data, as with asyncio, which sends at once.
"""
import weakref
from asyncio import trsock


class TransportSocket(trsock.TransportSocket):
    # (Named as asyncio's class: code that shows or compares the type name
    # sees the same.)
    __slots__ = ("_transport",)

    def __init__(self, sock, transport):
        super().__init__(sock)
        self._transport = weakref.ref(transport)


def _sending_held_writes_first(name):
    method = getattr(trsock.TransportSocket, name)

    def call(self, *args, **kwargs):
        transport = self._transport()
        if transport is not None:
            transport._send_held_writes()
        return method(self, *args, **kwargs)

    call.__name__ = name
    call.__qualname__ = f"TransportSocket.{name}"
    call.__doc__ = method.__doc__
    return call


# Every method that reaches the socket (3.10's TransportSocket still has the
# deprecated send/recv/close family too).
for _name, _value in vars(trsock.TransportSocket).items():
    if callable(_value) and _name not in ("__init__", "__repr__", "__getstate__"):
        setattr(TransportSocket, _name, _sending_held_writes_first(_name))
del _name, _value
