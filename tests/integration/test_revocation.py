"""``POST /admin/revoke``: sockets closed everywhere, old tokens refused, bad requests answered.

Real nodes on port 0, real sockets; two nodes share a memory hub, a Redis
server or a Redis Cluster (the same ``pair`` as the two-node tests), so a
revocation made on one is seen on the other through the shared log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.integration.conftest import SHARED_BACKENDS, TIMEOUT, Node, start_pair
from tests.support import http

# Polled fast so that a revocation crosses nodes within a test's patience;
# leeway so that a token minted one second after the revocation is valid now.
FAST = {"auth.revocation_poll_interval": 0.1, "auth.leeway": 2.0}


async def post(
    node: Node, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, Any]:
    """One raw HTTP/1.1 POST; the status and the decoded JSON body."""
    answer = await http.request(node.app.port, "POST", path, body, headers, timeout=TIMEOUT)
    return answer.status, answer.body


async def revoke(node: Node, payload: dict[str, Any], roles: tuple[str, ...] = ("admin",)) -> Any:
    token = node.token("ops", roles)
    status, body = await post(
        node, "/admin/revoke", json.dumps(payload).encode(), {"Authorization": f"Bearer {token}"}
    )
    assert status == 200, body
    return body


@pytest.fixture(params=SHARED_BACKENDS)
async def pair(
    request: pytest.FixtureRequest, node_factory: Callable[..., Awaitable[Node]]
) -> tuple[Node, Node]:
    return await start_pair(request.param, node_factory, **FAST)


async def test_revoking_a_user_closes_every_socket_on_every_node(pair: tuple[Node, Node]) -> None:
    a, b = pair
    on_a, on_b = await a.client("bob"), await b.client("bob")
    other = await b.client("carol")
    old_token = a.token("bob")
    started = time.monotonic()
    body = await revoke(a, {"user": "bob"})
    assert body["revoked"] == {"user": "bob"} and body["until"] > body["at"]
    assert await on_a.closed() == 4001
    assert await on_b.closed() == 4001
    assert time.monotonic() - started < 2.0  # the bound, across nodes
    await other.request({"type": "ping"}, reply="pong")  # others untouched

    # Tokens issued at or before the revocation are refused on every node...
    for node in (a, b):
        with pytest.raises(InvalidStatus) as info:
            await connect(node.url, additional_headers={"Authorization": f"Bearer {old_token}"})
        assert info.value.response.status_code == 401
        # ...also as a first-frame auth (4001), not only at the handshake.
        ws = await connect(node.url)
        await ws.send(json.dumps({"type": "auth", "token": old_token}))
        await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
        assert ws.close_code == 4001
    # A token issued after it is accepted.
    fresh = a.token("bob", now=body["at"] + 1)
    async with connect(b.url, additional_headers={"Authorization": f"Bearer {fresh}"}) as ws:
        welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert welcome["type"] == "welcome" and welcome["user"] == "bob"


async def test_revoking_a_session_closes_it_and_it_cannot_be_resumed(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    first = await a.client("bob")
    second = await a.client("bob")
    session = first.welcome["session_id"]
    await revoke(b, {"session": session})
    assert await first.closed() == 4001
    await second.request({"type": "ping"}, reply="pong")  # the user's other session stays
    again = await b.client("bob", query=f"?session={session}&last_seq=0")
    assert again.welcome["session_id"] != session and again.welcome["resumed"] is False


async def test_a_node_started_later_knows_earlier_revocations(
    node_factory: Callable[..., Awaitable[Node]],
) -> None:
    from rtcs.backends.memory import MemoryHub, memory_backends

    hub = MemoryHub()
    first = await node_factory(memory_backends(hub), **FAST, **{"server.node_id": "one"})
    old = first.token("bob")
    await revoke(first, {"user": "bob"})
    late = await node_factory(memory_backends(hub), **FAST, **{"server.node_id": "two"})
    with pytest.raises(InvalidStatus) as info:
        await connect(late.url, additional_headers={"Authorization": f"Bearer {old}"})
    assert info.value.response.status_code == 401


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b'{"user": "bob"}', {}, 401, "unauthorized"),
        (b'{"user": "bob"}', {"Authorization": "Bearer nonsense"}, 401, "unauthorized"),
        (b'{"user": "bob"}', {"Authorization": "Basic b3BzOng="}, 401, "unauthorized"),
        (b'{"user": "bob"}', "user", 403, "forbidden"),
        (b"[1, 2]", "admin", 400, "bad_request"),
        (b"{not json", "admin", 400, "bad_request"),
        (b'{"user": ""}', "admin", 400, "bad_request"),
        (b'{"user": 7}', "admin", 400, "bad_request"),
        (b'{"user": "a", "session": "b"}', "admin", 400, "bad_request"),
        (b'{"group": "a"}', "admin", 400, "bad_request"),
        (json.dumps({"user": "x" * 257}).encode(), "admin", 400, "bad_request"),
        (None, "admin", 411, "bad_request"),
        (b"x" * 70_000, "admin", 413, "too_large"),
    ],
)
async def test_bad_requests_get_clear_answers(
    node_factory: Callable[..., Awaitable[Node]],
    body: bytes | None,
    headers: dict[str, str] | str,
    status: int,
    code: str,
) -> None:
    node = await node_factory(**FAST)
    if isinstance(headers, str):  # a role: a valid token with it
        headers = {"Authorization": f"Bearer {node.token('ops', (headers,))}"}
    got, answer = await post(node, "/admin/revoke", body, headers)
    assert (got, answer["code"]) == (status, code)
    # Nothing was revoked, and the node still serves.
    client = await node.client("bob")
    await client.request({"type": "ping"}, reply="pong")


async def test_other_paths_and_methods(node_factory: Callable[..., Awaitable[Node]]) -> None:
    node = await node_factory(**FAST)
    admin = {"Authorization": f"Bearer {node.token('ops', ('admin',))}"}
    assert (await post(node, "/admin/nothing", b"{}", admin))[0] == 404
    # GET is answered 405 (websockets serves GET; the endpoint takes POST only).
    reader, writer = await asyncio.open_connection("127.0.0.1", node.app.port)
    writer.write(b"GET /admin/revoke HTTP/1.1\r\nHost: x\r\n\r\n")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    writer.close()
    assert head.startswith(b"HTTP/1.1 405 ") and b"\r\nAllow: POST\r\n" in head


async def test_a_slow_request_is_answered_408_and_closed(
    node_factory: Callable[..., Awaitable[Node]],
) -> None:
    node = await node_factory(**FAST, **{"server.open_timeout": 0.3})
    reader, writer = await asyncio.open_connection("127.0.0.1", node.app.port)
    writer.write(b"POST /admin/revoke HTTP/1.1\r\nContent-Length: 10\r\n\r\n{")
    raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 408 ")


async def test_the_shared_log_unavailable_is_503(
    node_factory: Callable[..., Awaitable[Node]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtcs.errors import Unavailable

    node = await node_factory(**FAST)
    revoker = node.app.ctx.revoker if node.app.ctx else None
    assert revoker is not None

    async def down(*args: object) -> int:
        raise Unavailable("backend down")

    monkeypatch.setattr(revoker.store, "revoke", down)
    client = await node.client("bob")
    admin = {"Authorization": f"Bearer {node.token('ops', ('admin',))}"}
    status, answer = await post(node, "/admin/revoke", b'{"user": "bob"}', admin)
    assert (status, answer["code"]) == (503, "unavailable")
    await client.request({"type": "ping"}, reply="pong")  # nothing revoked
