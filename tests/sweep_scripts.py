"""Sweep many seeds of a random-script test module (tests/test_*_scripts.py)
beyond the 16 the suite runs: each seed's script is played on stdlib
asyncio and on fastloop with every poller, and the first difference in
their logs is printed. Not a test (pytest does not collect it).

    python tests/sweep_scripts.py transport 0 400
    python tests/sweep_scripts.py datagram 16 1000

Kinds: transport, streams, sock (tests/test_transport_scripts.py), server,
datagram. As in the suite, fastloop's poll backend is compared with
asyncio's PollSelector where the module asks for it.
"""
import asyncio
import os
import sys
import warnings

# The test modules, and fastloop from this checkout (built in place, as
# `pip install -e .` or `python setup.py build_ext --inplace` leave it).
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]

import fastloop                                   # noqa: E402
from helpers import asyncio_log                   # noqa: E402

KINDS = {
    "transport": ("test_transport_scripts", "play", True),
    "streams": ("test_transport_scripts", "play_streams", False),
    "sock": ("test_transport_scripts", "play_sock", False),
    "server": ("test_server_scripts", "play_server", False),
    "datagram": ("test_datagram_scripts", "play_datagram", False),
}


def play_on(loop, play, seed):
    try:
        return loop.run_until_complete(asyncio.wait_for(play(loop, seed), 30))
    except Exception as exc:        # a script that fails is a difference too
        return [("failed", repr(exc))]
    finally:
        loop.close()


def first_difference(expected, got):
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            return i, expected[max(0, i - 3):i + 3], got[max(0, i - 3):i + 3]
    return min(len(expected), len(got)), expected[-3:], got[-3:]


def main(kind, first, last):
    module, name, poll_reference = KINDS[kind]
    play = getattr(__import__(module), name)
    differences = 0
    for seed in range(first, last):
        for poller in fastloop._poller.AVAILABLE:
            loop = fastloop.Loop(poller=poller)
            expected = asyncio_log(play, seed, like=loop if poll_reference else None)
            got = play_on(loop, play, seed)
            if got != expected:
                differences += 1
                at, a, b = first_difference(expected, got)
                print(f"seed {seed} {poller}: first difference at entry {at}\n"
                      f"  asyncio:  {a}\n  fastloop: {b}", flush=True)
    print(f"{kind} seeds {first}-{last - 1}: {differences} differences")
    return differences


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    sys.exit(1 if main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])) else 0)
