"""The HTTP API for services (``POST /api/publish``, ``/api/send``, ``/api/broadcast``).

Real nodes on port 0, real WebSocket clients receiving what a raw HTTP/1.1
client posts; two nodes share a memory hub, a redis-server or a Redis
Cluster for the cross-node cases; a real redis-server is killed for the
backend outage.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from rtcs.actors.context import ROUTE_TOPIC
from rtcs.actors.routing.topic import TopicHandler
from tests.integration.conftest import SHARED_BACKENDS, TIMEOUT, Node, http_get, start_pair
from tests.integration.test_revocation import post
from tests.support.redis_server import RedisServer
from tests.support.waiting import wait_until

NodeFactory = Callable[..., Awaitable[Node]]
SERVICE = ("service",)
# Stopped at once in teardown (the drain's grace is tested in test_drain.py).
QUICK = {"server.drain_grace": 0}


@pytest.fixture
async def node(node_factory: NodeFactory) -> Node:
    return await node_factory(**QUICK)


def bearer(node: Node, sub: str = "billing", roles: tuple[str, ...] = SERVICE) -> dict[str, str]:
    return {"Authorization": f"Bearer {node.token(sub, roles)}"}


async def call(
    node: Node,
    path: str,
    payload: Any,
    *,
    sub: str = "billing",
    roles: tuple[str, ...] = SERVICE,
) -> tuple[int, Any]:
    """POST ``payload`` (JSON, or raw bytes as given) to ``path`` with a token of ``sub``."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return await post(node, path, body, bearer(node, sub, roles))


async def publish(node: Node, topic: str, data: Any, **kw: Any) -> tuple[int, Any]:
    return await call(node, "/api/publish", {"topic": topic, "data": data}, **kw)


# -- publish ------------------------------------------------------------------------------


async def test_a_publish_over_http_reaches_a_websocket_subscriber(node: Node) -> None:
    bob = await node.client("bob")
    await bob.subscribe("news.>")
    status, body = await call(
        node, "/api/publish", {"topic": "news.eu", "data": {"n": 1}, "id": "p-1"}
    )
    assert (status, body) == (202, {"status": "routed", "topic": "news.eu", "id": "p-1"})
    got = await bob.expect("message", topic="news.eu")
    # The token's sub is the sender, as for a WebSocket publish.
    assert (got["data"], got["from"], got["seq"]) == ({"n": 1}, "billing", 1)


async def test_a_publish_nobody_listens_to_is_routed_all_the_same(node: Node) -> None:
    status, body = await publish(node, "nobody.here", None)
    assert (status, body) == (202, {"status": "routed", "topic": "nobody.here"})


RULES = """
[[rule]]
name = "services-stamp"
topic = "orders.>"
when = '"service" in sender.roles && sender.user == "billing"'
transform = { set = { "data.checked" = true }, remove = ["data.secret"] }

[[rule]]
name = "ops-only"
topic = "orders.internal"
target = { roles = ["ops"] }
"""


async def test_routing_rules_apply_with_the_token_as_sender(
    node_factory: NodeFactory, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    node = await node_factory(**QUICK, **{"rules.file": str(rules)})
    clerk, ops = await node.client("clerk"), await node.client("olga", ("ops",))
    for client in (clerk, ops):
        await client.subscribe("orders.>")
    status, _ = await publish(node, "orders.new", {"id": 7, "secret": "x"})
    assert status == 202
    for client in (clerk, ops):
        got = await client.expect("message", topic="orders.new")
        assert got["data"] == {"id": 7, "checked": True}
    # Another sender does not match the condition; a target rule narrows.
    assert (await publish(node, "orders.internal", {"id": 8}, sub="other"))[0] == 202
    got = await ops.expect("message", topic="orders.internal")
    assert got["data"] == {"id": 8} and got["from"] == "other"
    await clerk.request({"type": "ping"}, "pong")
    await clerk.silent()


async def test_the_topic_permission_of_the_tokens_roles_applies(node: Node) -> None:
    bob = await node.client("bob")
    await bob.subscribe("system.>")
    # The default policy keeps system.> for admin, as on a WebSocket.
    status, body = await publish(node, "system.alert", "x")
    assert (status, body["code"]) == (403, "forbidden")
    assert "system.alert" in body["message"]
    status, _ = await publish(node, "system.alert", "from ops", sub="ops", roles=("admin",))
    assert status == 202
    got = await bob.expect("message", topic="system.alert")
    assert got["data"] == "from ops"  # the refused one was never delivered


async def test_rbac_configured_for_the_service_role(node_factory: NodeFactory) -> None:
    rbac = {
        "roles": {
            "*": {"subscribe": [">"]},
            "service": {"publish": ["billing.>"]},
        }
    }
    node = await node_factory(**QUICK, rbac=rbac)
    assert (await publish(node, "billing.paid", 1))[0] == 202
    status, body = await publish(node, "chat.x", 1)
    assert (status, body["code"]) == (403, "forbidden")


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer not-a-token"}, 401, "unauthorized"),
        ({"Authorization": "Basic Zm9vOmJhcg=="}, 401, "unauthorized"),
        (None, 403, "forbidden"),  # a valid token, but a plain user's
    ],
)
async def test_who_may_call(
    node: Node, headers: dict[str, str] | None, status: int, code: str
) -> None:
    if headers is None:
        headers = bearer(node, "mallory", ("user",))
    answer = await post(node, "/api/publish", b'{"topic": "a", "data": 1}', headers)
    assert (answer[0], answer[1]["code"]) == (status, code)
    assert answer[1]["message"]


async def test_an_expired_token_is_401(node: Node) -> None:
    token = node.token("billing", SERVICE, ttl=10, now=time.time() - 60)
    status, body = await post(
        node, "/api/publish", b'{"topic": "a", "data": 1}', {"Authorization": f"Bearer {token}"}
    )
    assert (status, body["code"]) == (401, "unauthorized")


BAD_BODIES = [
    (b"not json", "bad_request"),
    (b"[1, 2]", "bad_request"),
    (b'"a string"', "bad_request"),
    (b"", "bad_request"),
    (b'{"topic": "a"}', "bad_request"),  # no data
    (b'{"data": 1}', "bad_request"),  # no topic
    (b'{"topic": 5, "data": 1}', "bad_request"),
    (b'{"topic": "a", "data": 1, "extra": true}', "bad_request"),
    (b'{"type": "publish", "topic": "a", "data": 1}', "bad_request"),
    (b'{"topic": "a", "data": NaN}', "bad_request"),
    (b'{"topic": "a", "data": 1e400}', "bad_request"),
    (b'{"topic": "a", "data": 1, "id": true}', "bad_request"),
    (b'{"topic": "a", "data": "\xff"}', "bad_request"),  # not UTF-8
    (b'{"topic": "a", "data": ' + b"[" * 40 + b"]" * 40 + b"}", "bad_request"),  # too deep
    (b'{"topic": "a..b", "data": 1}', "bad_topic"),
    (b'{"topic": "news.*", "data": 1}', "bad_topic"),  # a pattern
    (b'{"topic": "' + b"s." * 8 + b'x", "data": 1}', "bad_topic"),  # 9 segments
]


@pytest.mark.parametrize(("body", "code"), BAD_BODIES)
async def test_bad_input_is_400_with_the_protocol_code(node: Node, body: bytes, code: str) -> None:
    status, answer = await call(node, "/api/publish", body)
    assert (status, answer["code"]) == (400, code), answer
    assert answer["message"]


async def test_an_error_echoes_a_valid_id(node: Node) -> None:
    status, answer = await call(node, "/api/publish", {"id": 9, "topic": "a..b", "data": 1})
    assert (status, answer["code"], answer["id"]) == (400, "bad_topic", 9)


async def test_a_body_over_the_message_size_limit_is_too_large(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(**QUICK, **{"limits.max_message_size": 1024})
    bob = await node.client("bob")
    await bob.subscribe("big")
    status, answer = await publish(node, "big", "x" * 2000)
    assert (status, answer["code"]) == (413, "too_large")
    assert (await publish(node, "big", "x" * 900))[0] == 202  # under the limit
    got = await bob.expect("message", topic="big")
    assert got["data"] == "x" * 900  # the large one was never delivered


async def test_a_body_over_what_the_gateway_reads_is_413(node: Node) -> None:
    status, answer = await publish(node, "big", "x" * 70_000)  # over the default 64 KiB
    assert (status, answer["code"]) == (413, "too_large")


async def test_other_methods_and_paths(node: Node) -> None:
    status, body = await http_get(node, "/api/publish")
    assert (status, json.loads(body)["code"]) == (405, "method_not_allowed")
    status, answer = await call(node, "/api/nothing", {"topic": "a", "data": 1})
    assert (status, answer["code"]) == (404, "not_found")


# -- send and broadcast ------------------------------------------------------------------


async def test_send_to_a_user_and_to_a_connection(node: Node) -> None:
    bob = await node.client("bob")
    status, body = await call(node, "/api/send", {"to": {"user": "bob"}, "data": "hi"})
    assert (status, body) == (202, {"status": "routed", "to": {"user": "bob"}})
    got = await bob.expect("message", data="hi")
    assert got["from"] == "billing" and "topic" not in got
    connection = bob.welcome["connection_id"]
    payload = {"to": {"connection": connection}, "data": 2, "id": "d-1"}
    status, body = await call(node, "/api/send", payload)
    assert (status, body["to"], body["id"]) == (202, {"connection": connection}, "d-1")
    await bob.expect("message", data=2)


async def test_send_to_nobody_online_is_404_offline(node: Node) -> None:
    status, body = await call(node, "/api/send", {"to": {"user": "ghost"}, "data": 1})
    assert (status, body["code"]) == (404, "offline")
    bad = {"to": {"user": "bob", "connection": "c-1"}, "data": 1}
    assert (await call(node, "/api/send", bad))[1]["code"] == "bad_request"
    status, body = await call(node, "/api/send", {"user": "bob", "data": 1})
    assert (status, body["code"]) == (400, "bad_request")  # the frame's fields: "to"


async def test_send_needs_the_direct_permission(node_factory: NodeFactory) -> None:
    node = await node_factory(**QUICK, rbac={"roles": {"*": {"direct": False}}})
    await node.client("bob")
    status, body = await call(node, "/api/send", {"to": {"user": "bob"}, "data": 1})
    assert (status, body["code"]) == (403, "forbidden")


async def test_broadcast_into_a_room(node: Node) -> None:
    bob, carol = await node.client("bob"), await node.client("carol")
    await bob.request({"type": "join", "room": "game:1"}, "joined")
    status, body = await call(node, "/api/broadcast", {"room": "game:1", "data": "go"})
    assert (status, body) == (202, {"status": "routed", "room": "game:1"})
    got = await bob.expect("message", room="game:1")
    assert (got["data"], got["from"]) == ("go", "billing")
    await carol.request({"type": "ping"}, "pong")
    await carol.silent()


async def test_a_room_broadcast_needs_permission_to_join_the_room(
    node_factory: NodeFactory,
) -> None:
    rbac = {"roles": {"*": {"rooms": True, "broadcast": ["room"], "join_deny": ["vip-*"]}}}
    node = await node_factory(**QUICK, rbac=rbac)
    status, body = await call(node, "/api/broadcast", {"room": "vip-1", "data": 1})
    assert (status, body["code"]) == (403, "forbidden")
    assert (await call(node, "/api/broadcast", {"room": "lobby", "data": 1}))[0] == 202


async def test_global_and_filtered_broadcasts_need_their_scope(node: Node) -> None:
    bob, olga = await node.client("bob"), await node.client("olga", ("ops",))
    everyone = {"scope": "global", "data": "all"}
    status, body = await call(node, "/api/broadcast", everyone)
    assert (status, body["code"]) == (403, "forbidden")  # the default policy: admin only
    status, body = await call(node, "/api/broadcast", everyone, roles=("admin",))
    assert (status, body) == (202, {"status": "routed", "scope": "global"})
    for client in (bob, olga):
        got = await client.expect("message", room="*")
        assert got["data"] == "all"
    only_ops = {"filter": {"roles": ["ops"]}, "data": "ops"}
    status, body = await call(node, "/api/broadcast", only_ops, roles=("admin",))
    assert (status, body["filter"]) == (202, {"roles": ["ops"], "users": []})
    await olga.expect("message", data="ops")
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()
    both = {"room": "r", "scope": "global", "data": 1}
    assert (await call(node, "/api/broadcast", both, roles=("admin",)))[0] == 400


# -- route plugins ---------------------------------------------------------------------------


async def test_route_plugins_see_the_caller_and_answer_it(node_factory: NodeFactory) -> None:
    upper = {"actor": "tests.support.route_plugins:Upper", "timeout": 0.5}
    node = await node_factory(**QUICK, plugins={"upper": upper})
    bob = await node.client("bob")
    await bob.subscribe("chat.>")
    status, body = await publish(node, "chat.room", {"text": "hi"})
    assert status == 202 and "answers" not in body
    got = await bob.expect("message", topic="chat.room")
    assert got["data"] == {"text": "HI", "by": "billing"}
    # An answer goes back to the caller, in the 202.
    status, body = await publish(node, "chat.room", {"text": "spam"})
    assert (status, body["answers"]) == (202, [{"refused": "spam"}])
    # A plugin that never decides fails the publish (its timeout): internal.
    status, body = await publish(node, "chat.room", {"text": "hang"})
    assert (status, body["code"]) == (500, "internal")
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()


# -- across nodes ----------------------------------------------------------------------------


@pytest.fixture(params=SHARED_BACKENDS)
async def pair(request: pytest.FixtureRequest, node_factory: NodeFactory) -> tuple[Node, Node]:
    return await start_pair(request.param, node_factory, **QUICK)


async def test_an_http_publish_reaches_every_node(pair: tuple[Node, Node]) -> None:
    a, b = pair
    on_a, on_b = await a.client("alice"), await b.client("bob")
    for client in (on_a, on_b):
        await client.subscribe("news.>")
    status, _ = await publish(a, "news.x", {"from": "a"})
    assert status == 202
    for client in (on_a, on_b):
        got = await client.expect("message", topic="news.x")
        assert (got["data"], got["from"]) == ({"from": "a"}, "billing")
    # A direct message to a user connected to the other node only.
    status, _ = await call(a, "/api/send", {"to": {"user": "bob"}, "data": "over there"})
    assert status == 202
    await on_b.expect("message", data="over there")
    await on_b.request({"type": "join", "room": "r"}, "joined")
    assert (await call(a, "/api/broadcast", {"room": "r", "data": "room"}))[0] == 202
    await on_b.expect("message", room="r", data="room")


# -- when routing cannot answer ------------------------------------------------------------


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.redis
async def test_a_publish_while_redis_is_down_is_503(
    node_factory: NodeFactory, own_redis: RedisServer
) -> None:
    node = await node_factory(
        **QUICK,
        **{
            "backend.kind": "redis",
            "backend.redis_url": own_redis.url,
            "breaker.failure_threshold": 1,
        },
    )
    bob = await node.client("bob")
    await bob.subscribe("news")
    assert (await publish(node, "news", "before"))[0] == 202
    await bob.expect("message", data="before")
    own_redis.kill()
    ctx = node.app.ctx
    assert ctx is not None
    await wait_until(lambda: ctx.degraded, message="the breaker opened")
    status, body = await publish(node, "news", "during")
    assert (status, body["code"]) == (503, "unavailable")
    # As on a WebSocket: delivered here, but never acked without the broker.
    await bob.expect("message", data="during")


async def test_routing_that_does_not_answer_in_time_is_503(
    node_factory: Callable[..., Awaitable[Node]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def swallow(self: TopicHandler, msg: object, sender: object) -> None:
        """A route handler that loses the request."""

    monkeypatch.setattr(TopicHandler, "receiveMsg_RoutePublish", swallow)
    node = await node_factory(**{"limits.api_timeout": 0.2})
    started = asyncio.get_running_loop().time()
    status, body = await publish(node, "news", 1)
    assert (status, body["code"]) == (503, "unavailable")
    assert asyncio.get_running_loop().time() - started < TIMEOUT


async def test_routing_restarting_is_503(node: Node) -> None:
    # What a router restart looks like from outside: route.topic is not in
    # the directory until its replacement registers.
    node.app.directory.unregister(ROUTE_TOPIC)
    status, body = await publish(node, "news", 1)
    assert (status, body["code"]) == (503, "unavailable")
