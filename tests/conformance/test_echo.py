"""The test-only echo endpoint the Autobahn suite drives (rtcs.gateway.echo).

:func:`serve_echo` on a bare websockets server with the gateway's settings:
text comes back as text, binary as binary, and a close of either kind ends
the handler without an exception. Then the real ``python -m rtcs`` process
with ``server.test_echo_path`` set: the path needs no token, and the
message-size limit still holds there (1009).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from rtcs.gateway.echo import serve_echo
from tests.support.processes import RtcsProcess, temporary_directory

TIMEOUT = 5.0
ECHO_PATH = "/__echo"
LIMIT = 1024  # limits.max_message_size for these tests
ENV = {k: v for k, v in os.environ.items() if not k.startswith("RTCS_")}


class EchoServer:
    """``serve_echo`` behind websockets' ``serve``; records how each handler ended."""

    def __init__(self) -> None:
        self.ended: asyncio.Queue[BaseException | None] = asyncio.Queue()
        self.server: Server | None = None

    async def handler(self, ws: ServerConnection) -> None:
        try:
            await serve_echo(ws)
        except BaseException as exc:
            self.ended.put_nowait(exc)
            raise
        self.ended.put_nowait(None)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/"

    async def outcome(self) -> BaseException | None:
        """How the next handler ended: None when it returned."""
        async with asyncio.timeout(TIMEOUT):
            return await self.ended.get()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    # The settings rtcs's gateway passes that matter to frames.
    async with serve(
        server.handler, "127.0.0.1", 0, compression=None, max_size=LIMIT, max_queue=64
    ) as ws_server:
        server.server = ws_server
        yield server


async def test_text_comes_back_as_text_and_binary_as_binary(echo: EchoServer) -> None:
    async with connect(echo.url, compression=None) as ws:
        await ws.send("héllo")
        assert await ws.recv() == "héllo"
        await ws.send(b"\x00\xff")
        assert await ws.recv() == b"\x00\xff"
        await ws.send(["frag", "mented"])  # one message in two frames
        assert await ws.recv() == "fragmented"
        await ws.send("")
        assert await ws.recv() == ""
    assert await echo.outcome() is None


async def test_a_close_by_the_server_side_limit_ends_the_handler_quietly(echo: EchoServer) -> None:
    async with connect(echo.url, compression=None, max_size=None) as ws:
        await ws.send("x" * (LIMIT + 1))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1009
    assert await echo.outcome() is None


async def test_a_dropped_connection_ends_the_handler_quietly(echo: EchoServer) -> None:
    ws = await connect(echo.url, compression=None)
    await ws.send("before")
    assert await ws.recv() == "before"
    ws.transport.abort()  # no closing handshake: the TCP connection just ends
    assert await echo.outcome() is None


async def test_a_peer_that_never_reads_ends_the_handler_quietly(echo: EchoServer) -> None:
    # The client sends and closes without reading its echoes.
    async with connect(echo.url, compression=None) as ws:
        for _ in range(50):
            await ws.send("y" * LIMIT)
    assert await echo.outcome() is None


# -- the echo path of a real rtcs process ----------------------------------------------


@pytest.fixture
async def node() -> AsyncIterator[RtcsProcess]:
    directory = temporary_directory("rtcs-echo-")
    settings = {
        "RTCS_SERVER_TEST_ECHO_PATH": ECHO_PATH,
        "RTCS_BACKEND_KIND": "memory",
        "RTCS_LIMITS_MAX_MESSAGE_SIZE": str(LIMIT),
    }
    process = RtcsProcess("rtcs", {**ENV, **settings}, directory)
    try:
        yield await process.start()
    finally:
        process.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def test_rtcs_echo_path_needs_no_token_and_keeps_the_size_limit(node: RtcsProcess) -> None:
    url = f"ws://127.0.0.1:{node.port}{ECHO_PATH}"
    async with connect(url, compression=None, max_size=None) as ws:
        await ws.send("text")
        assert await ws.recv() == "text"
        await ws.send(b"\x01\x02")
        assert await ws.recv() == b"\x01\x02"
        await ws.send("z" * (LIMIT + 1))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1009
