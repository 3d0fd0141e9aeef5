"""Small helpers shared by the network and platform test modules."""
import asyncio
import socket

WAIT = 10.0     # generous bound for anything that should happen at once


def run(loop, coro, timeout=WAIT):
    """Run coro on loop, failing instead of hanging past `timeout`."""
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))


async def spin(n):
    """Let the loop run n more iterations."""
    for _ in range(n):
        await asyncio.sleep(0)


def _has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


HAS_IPV6 = _has_ipv6()
