"""Hostile clients against a real node: invalid-frame floods, duplicate
handshake headers, and what a debug-level log may show of them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from tests.integration.conftest import TIMEOUT, Client, Node, metric
from tests.support.logs import json_logs

NodeFactory = Callable[..., Awaitable[Node]]

CLOSE_AFTER = 5


# -- error budget (docs/protocol.md "Limits and close codes") ----------------------


@pytest.mark.parametrize(
    "frame",
    [
        "not json",
        '{"type": "nope", "id": 1}',
        '{"type": "subscribe", "id": 1}',
        '{"type": "subscribe", "id": 1, "topic": "a..b"}',
    ],
)
async def test_invalid_frames_spend_the_error_budget_then_4029(
    node_factory: NodeFactory, frame: str
) -> None:
    node = await node_factory(**{"limits.rate_limit_close_after": CLOSE_AFTER})
    client = await node.client("alice")
    errors = 0
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            for _ in range(10 * CLOSE_AFTER):
                await client.send(frame)
            while True:
                reply = await client.recv()
                assert reply["type"] == "error", reply
                assert reply["code"] in ("bad_request", "bad_topic")
                errors += 1
    assert errors == CLOSE_AFTER
    assert client.ws.close_code == 4029
    assert client.ws.close_reason == "error budget exhausted"


async def test_valid_traffic_alone_is_not_closed(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"limits.rate_limit_close_after": CLOSE_AFTER})
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    for i in range(10 * CLOSE_AFTER):
        await alice.publish("news", i)
        assert (await bob.expect("message", topic="news"))["data"] == i
    await alice.request({"type": "ping"}, "pong")


# -- duplicate handshake headers -----------------------------------------------------


async def _handshake(node: Node, extra: list[tuple[str, str]], host: bool = True) -> int:
    """Send a hand-written upgrade request; return the HTTP status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.app.port)
    try:
        lines = ["GET /ws HTTP/1.1"]
        if host:
            lines.append(f"Host: 127.0.0.1:{node.app.port}")
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in extra),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), TIMEOUT)
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


@pytest.mark.parametrize(
    ("headers", "host", "status"),
    [
        ([("Origin", "http://a.example"), ("Origin", "http://b.example")], True, 400),
        ([("Host", "other.example")], True, 400),
        (
            [("Host", "a.example"), ("Host", "b.example"), ("Origin", "http://a.example")],
            False,
            400,
        ),
        # Not ambiguous enough to crash: joined into one bad credential (401)
        # or one list (Cookie, Sec-WebSocket-Protocol).
        ([("Authorization", "Bearer {token}"), ("Authorization", "Bearer {token}")], True, 401),
        ([("Cookie", "a=1"), ("Cookie", "rtcs_token={token}")], True, 101),
        ([("Sec-WebSocket-Protocol", "rtcs.v1"), ("Sec-WebSocket-Protocol", "x")], True, 101),
    ],
)
async def test_duplicate_headers_are_refused_without_a_traceback(
    node: Node,
    caplog: pytest.LogCaptureFixture,
    headers: list[tuple[str, str]],
    host: bool,
    status: int,
) -> None:
    caplog.set_level(logging.INFO)
    token = node.token("alice")
    extra = [(name, value.format(token=token)) for name, value in headers]
    assert await _handshake(node, extra, host=host) == status
    # The server keeps serving.
    client = await node.client("bob")
    await client.request({"type": "ping"}, "pong")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text
    if status == 400:
        assert metric(node, "rtcs_handshakes_rejected_total", status="400") == 1


# -- logs at debug level -------------------------------------------------------------


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """rtcs logging configured at debug into a buffer (as ``python -m rtcs`` does)."""
    with json_logs("debug") as stream:
        caplog.set_level(logging.DEBUG)  # stdlib records too, before any filter
        yield stream


async def test_debug_logs_hold_no_token_and_no_body(
    node_factory: NodeFactory, debug_logs: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    node = await node_factory(**{"log.level": "debug"})
    header_token = node.token("alice")
    subprotocol_token = node.token("bob")
    query_token = node.token("carol")
    body = "hush-5f3a9c-private-body"

    alice = await node.client(
        "alice", additional_headers={"Authorization": f"Bearer {header_token}"}
    )
    bob = Client(
        await connect(
            node.url,
            subprotocols=[Subprotocol("rtcs.v1"), Subprotocol(f"rtcs.bearer.{subprotocol_token}")],
            open_timeout=TIMEOUT,
        )
    )
    node.clients.append(bob)
    await bob.expect("welcome", user="bob")
    carol = await node.client("carol", query=f"?token={query_token}", additional_headers={})
    await bob.subscribe("secrets")
    await alice.publish("secrets", {"text": body})
    assert (await bob.expect("message", topic="secrets"))["data"] == {"text": body}
    await alice.request({"type": "send", "to": {"user": "carol"}, "data": body})
    assert (await carol.expect("message"))["data"] == body
    await carol.send(json.dumps({"type": "publish", "topic": "a..b", "data": body}))
    await carol.expect("error", code="bad_topic")
    await alice.ws.close()
    await bob.ws.close()
    await carol.ws.close()

    structured = debug_logs.getvalue()
    stdlib = caplog.text + "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    )
    assert "connection authenticated" in structured  # debug lines were written
    assert any(r.name.startswith("rtcs") and r.levelno == logging.DEBUG for r in caplog.records)
    for secret in (header_token, subprotocol_token, query_token, body):
        for text in (structured, stdlib):
            assert secret not in text
            # Nor a recognisable part of it (a JWT's signature).
            assert secret.rsplit(".", 1)[-1] not in text
