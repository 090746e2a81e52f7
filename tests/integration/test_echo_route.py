"""The test-only echo route (``server.test_echo_path``), wired in the gateway."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from tests.integration.conftest import TIMEOUT, Node


def echo_url(node: Node) -> str:
    return f"ws://127.0.0.1:{node.app.port}/__echo"


async def test_the_echo_path_echoes_without_auth_or_limits(node_factory: Any) -> None:
    node = await node_factory(
        **{
            "server.test_echo_path": "/__echo",
            "server.allowed_origins": ("https://app.example",),
            "limits.max_connections_per_address": 1,
            "limits.max_pending_auth": 1,
            "limits.max_message_size": 1024,
        }
    )
    # No token, a foreign origin, more sockets than the address and pending caps.
    sockets = [
        await connect(echo_url(node), origin="https://evil.example", open_timeout=TIMEOUT)  # type: ignore[arg-type]
        for _ in range(3)
    ]
    ws = sockets[0]
    await ws.send("héllo")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "héllo"
    await ws.send(b"\x00\xff")
    assert await asyncio.wait_for(ws.recv(), TIMEOUT) == b"\x00\xff"
    gateway = node.app.gateway
    assert gateway is not None
    assert not gateway.handles  # not rtcs connections: no actor, not counted
    # The message-size limit still holds.
    await ws.send(b"x" * 2048)
    with pytest.raises(ConnectionClosedError):
        await asyncio.wait_for(ws.recv(), TIMEOUT)
    assert ws.close_code == 1009
    for other in sockets[1:]:
        await other.close()
    # The real endpoint keeps its checks.
    await (await node.client("alice")).request({"type": "ping"}, "pong")


async def test_the_echo_path_is_off_by_default(node: Node) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(echo_url(node), open_timeout=TIMEOUT)
    assert refused.value.response.status_code == 404
