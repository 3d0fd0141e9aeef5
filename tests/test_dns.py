"""getaddrinfo/getnameinfo agree with asyncio; IP literals skip the pool."""
import asyncio
import socket
import sys

import pytest

from helpers import collect_quietly

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("host, port", [
    ("127.0.0.1", 80), ("127.0.0.1", "80"), (None, 8080), ("::1", 0),
    ("localhost", 80), ("127.0.0.1", None),
])
@pytest.mark.parametrize("kind", [0, socket.SOCK_STREAM])
def test_getaddrinfo_matches_socket_module(loop, host, port, kind):
    if host == "::1" and not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        expected = socket.getaddrinfo(host, port, 0, kind)
    except socket.gaierror as exc:
        with pytest.raises(socket.gaierror) as info:
            loop.run_until_complete(loop.getaddrinfo(host, port, type=kind))
        assert info.value.errno == exc.errno
        return
    assert loop.run_until_complete(loop.getaddrinfo(host, port, type=kind)) == expected


def test_getaddrinfo_errors_match(loop):
    with pytest.raises(socket.gaierror):
        loop.run_until_complete(loop.getaddrinfo("999.1.1.1.invalid.", 80))
    with pytest.raises(TypeError):
        loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, family="x"))


def test_ip_literal_needs_no_executor(loop, is_fastloop):
    loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80))
    # asyncio always goes through the default executor; fastloop answers an
    # IP literal directly (a documented optimisation, same result).
    assert (loop._default_executor is None) == is_fastloop


def test_getaddrinfo_on_closed_loop(loop):
    loop.close()
    coro = loop.getaddrinfo("127.0.0.1", 80)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        coro.send(None)
    coro.close()


def test_getnameinfo(loop):
    result = loop.run_until_complete(
        loop.getnameinfo(("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV))
    assert result == ("127.0.0.1", "80")


def test_create_connection_to_literal_and_name(loop):
    async def main():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        for host in ("127.0.0.1", "localhost"):
            reader, writer = await asyncio.open_connection(host, port)
            assert writer.get_extra_info("peername")[:2] == ("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()

    loop.run_until_complete(main())


class _Index:
    def __index__(self):
        return 0


def test_getaddrinfo_takes_flags_as_the_socket_module_does(loop):
    expected = socket.getaddrinfo("127.0.0.1", 80)
    assert loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, flags=_Index())) == expected
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80, flags=None))


def test_getaddrinfo_after_the_default_executor_shut_down(loop):
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match="Executor shutdown has been called"):
        loop.run_until_complete(loop.getaddrinfo("127.0.0.1", 80))


def test_getaddrinfo_of_a_literal_lets_other_callbacks_run_first(loop, is_fastloop):
    # asyncio's answer comes from a thread, so what is already scheduled runs
    # before it, and a cancellation meanwhile cancels the lookup. (From 3.14
    # asyncio takes a thread's result at once when the thread has finished
    # before the loop waits for it, so there either outcome can happen;
    # fastloop's is the first, always.)
    racy = not is_fastloop and sys.version_info >= (3, 14)
    order = []

    async def lookup():
        await loop.getaddrinfo("127.0.0.1", 80)
        order.append("getaddrinfo")

    async def main():
        loop.call_soon(order.append, "other")
        await lookup()
        task = asyncio.ensure_future(lookup())
        await asyncio.sleep(0)               # its first step: inside getaddrinfo
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return "cancelled"
        return "finished"

    outcome = loop.run_until_complete(main())
    if racy:
        assert outcome in ("cancelled", "finished")
        assert set(order) == {"getaddrinfo", "other"}
        return
    assert outcome == "cancelled"
    assert order == ["other", "getaddrinfo"]


@pytest.mark.parametrize("how", ["create_connection", "connect_accepted_socket"])
def test_connections_on_a_closed_loop_raise(loop, is_fastloop, how):
    # (create_datagram_endpoint raises too, but asyncio's leaves the socket
    # it made to the garbage collector.)
    loop.close()
    a, b = socket.socketpair()
    try:
        coro = getattr(loop, how)(asyncio.Protocol, sock=a)
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            coro.send(None)
        coro.close()
    finally:
        a.close()
        b.close()
        if not is_fastloop:
            collect_quietly()                # asyncio's transport, failed half-made
