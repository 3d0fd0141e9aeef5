"""The libraries production services put on the loop, end to end: uvicorn (h11
and httptools; also answering clients that closed), httpx and aiohttp as
clients and servers, websockets, anyio's streams and processes. Each test
runs on stdlib asyncio and on fastloop (see conftest.py); a library that is
not installed skips its test (the `test` extra installs them all). Loopback
only, bounded sizes.
"""
import asyncio
import socket
import sys

import pytest

from helpers import LostWrites, asyncio_log, run

PAYLOAD = bytes(range(256)) * 4096          # 1 MiB, every byte value


async def reversing_app(scope, receive, send):
    """ASGI app: answers a request with its body reversed."""
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    await send({"type": "http.response.body", "body": body[::-1] or b"hello"})


async def start_uvicorn(app, http):
    """A uvicorn server of app on 127.0.0.1, serving in a task: (the
    server, the task, its port). Stop it with server.should_exit."""
    import uvicorn
    config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="none",
                            http=http, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), serving
        await asyncio.sleep(0.01)
    return server, serving, server.servers[0].sockets[0].getsockname()[1]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_uvicorn_served_to_httpx(loop, http):
    uvicorn = pytest.importorskip("uvicorn")
    httpx = pytest.importorskip("httpx")
    pytest.importorskip(http)

    async def main():
        server, serving, port = await start_uvicorn(reversing_app, http)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            first = (await client.get("/")).content
            big = (await client.post("/", content=PAYLOAD)).content
            many = await asyncio.gather(*(client.post("/", content=b"%d" % i)
                                          for i in range(100)))
        server.should_exit = True
        await serving
        return first, big, [r.content for r in many]

    first, big, many = run(loop, main(), timeout=50)
    assert first == b"hello"
    assert big == PAYLOAD[::-1]
    assert many == [(b"%d" % i)[::-1] for i in range(100)]


async def streaming_app(scope, receive, send):
    """ASGI app: a chunked response of ten pieces, each its own write."""
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(10):
        await send({"type": "http.response.body", "body": b"x" * 1000, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def requests_from_clients_that_close(loop, http):
    """uvicorn answering clients that send a request and close at once: how
    many writes to a lost connection asyncio's transport logs for each.
    (The response's first write draws the closed client's reset, so its
    second fails, and the ten after it count as lost.)"""
    server, serving, port = await start_uvicorn(streaming_app, http)
    counts = []
    with LostWrites() as lost:
        for i in range(3):
            before = lost.count
            with socket.create_connection(("127.0.0.1", port)) as client:
                client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            state = server.server_state
            while state.total_requests <= i or state.connections or state.tasks:
                await asyncio.sleep(0.01)
            counts.append(lost.count - before)
    server.should_exit = True
    await serving
    return counts


@pytest.mark.timeout(60)
@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_uvicorn_answering_clients_that_closed(loop, impl, http):
    # fastloop sends a callback's writes together, but not to a peer that
    # has shut down its side: the response fails as on asyncio.
    pytest.importorskip("uvicorn")
    pytest.importorskip(http)
    counts = run(loop, requests_from_clients_that_close(loop, http), timeout=50)
    if impl != "asyncio":
        assert counts == asyncio_log(requests_from_clients_that_close, http, like=loop)
    if sys.platform.startswith("linux"):
        assert counts == [6, 6, 6]


@pytest.mark.timeout(60)
def test_aiohttp_server_and_client(loop):
    web = pytest.importorskip("aiohttp.web")
    aiohttp = pytest.importorskip("aiohttp")

    async def reverse(request):
        return web.Response(body=(await request.read())[::-1])

    async def ws_echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            await ws.send_bytes(msg.data)
        return ws

    async def main():
        app = web.Application(client_max_size=2 * len(PAYLOAD))
        app.add_routes([web.post("/", reverse), web.get("/ws", ws_echo)])
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                async with session.post(f"http://127.0.0.1:{port}/", data=PAYLOAD) as resp:
                    big = await resp.read()
                async with session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
                    await ws.send_bytes(b"ping" * 1000)
                    echoed = (await ws.receive()).data
        finally:
            await runner.cleanup()
        return big, echoed

    big, echoed = run(loop, main(), timeout=50)
    assert big == PAYLOAD[::-1]
    assert echoed == b"ping" * 1000


@pytest.mark.timeout(60)
def test_websockets_echo(loop):
    websockets = pytest.importorskip("websockets")

    async def echo(ws):
        async for message in ws:
            await ws.send(message)

    async def main():
        got = []
        async with websockets.serve(echo, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            async with websockets.connect(f"ws://127.0.0.1:{port}", max_size=None) as ws:
                for message in ["hi", PAYLOAD, "end"]:
                    await ws.send(message)
                    got.append(await ws.recv())
        return got

    assert run(loop, main(), timeout=50) == ["hi", PAYLOAD, "end"]


@pytest.mark.timeout(60)
def test_anyio_tcp_streams_and_process(loop):
    anyio = pytest.importorskip("anyio")

    async def upper(stream):
        async with stream:
            await stream.send((await stream.receive()).upper())

    async def main():
        replies = []
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, upper)
            for i in range(20):
                async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                    await stream.send(b"abc%d" % i)
                    replies.append(await stream.receive())
            tg.cancel_scope.cancel()
        async with await anyio.open_process(["cat"]) as process:
            await process.stdin.send(b"piped")
            await process.stdin.aclose()
            piped = await process.stdout.receive()
        return replies, piped

    replies, piped = run(loop, main(), timeout=50)
    assert replies == [b"ABC%d" % i for i in range(20)]
    assert piped == b"piped"
