"""Detached-session limits over real sockets (docs/configuration.md ``[limits]``:
``max_detached_sessions``, ``max_detached_buffered_bytes``).

A user opens sessions, subscribes, abandons them and messages are buffered for
them; past a limit the oldest detached sessions are evicted: a resume of one
gets a new session (also on another node sharing the store: its shared copy
went too), the newer ones still resume with exact replay, and the metrics
count it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration.conftest import Node, metric, start_pair, wait_detached
from tests.support import wait_until

FAST_REAP = {"session.reap_interval": 0.05}


async def abandon(node: Node, user: str, topic: str) -> str:
    """Open a session of ``user`` subscribed to ``topic``, drop its socket, and
    return its id once the node has detached it."""
    client = await node.client(user)
    await client.subscribe(topic)
    session_id: str = client.welcome["session_id"]
    await client.ws.close()
    await wait_detached(node, session_id)
    return session_id


def evicted(node: Node, reason: str) -> float:
    return metric(node, "rtcs_sessions_evicted_total", reason=reason)


async def wait_evicted(node: Node, reason: str, count: int) -> None:
    await wait_until(
        lambda: evicted(node, reason) >= count,
        message=lambda: f"{count} evictions ({reason}), got {evicted(node, reason)}",
    )


async def start(
    kind: str, node_factory: Callable[..., Awaitable[Node]], **settings: Any
) -> tuple[Node, Node]:
    """The node sessions are abandoned on, and the node they are resumed on
    (the same one for the single-node memory backend)."""
    settings = {**FAST_REAP, **settings}
    if kind == "memory":
        node = await node_factory(None, **settings)
        return node, node
    return await start_pair("memory" if kind == "memory-hub" else kind, node_factory, **settings)


KINDS = [
    "memory",
    "memory-hub",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


@pytest.mark.parametrize("kind", KINDS)
async def test_a_users_oldest_detached_sessions_are_evicted_past_the_limit(
    kind: str, node_factory: Callable[..., Awaitable[Node]]
) -> None:
    node, other = await start(kind, node_factory, **{"limits.max_detached_sessions": 2})
    publisher = await node.client("pub")
    sessions = [await abandon(node, "mallory", "t") for _ in range(3)]
    await wait_evicted(node, "user_limit", 1)
    ctx = node.app.ctx
    assert ctx is not None
    assert ctx.sessions.get(sessions[0]) is None
    assert all(ctx.sessions.get(s) is not None for s in sessions[1:])
    await publisher.publish("t", "kept")
    # Another user's detached sessions are not this user's budget.
    await abandon(node, "bob", "t")
    # The evicted one: unknown everywhere (its shared copy went with it).
    gone = await other.resume("mallory", sessions[0], 0)
    assert gone.welcome["resumed"] is False and gone.welcome["session_id"] != sessions[0]
    # The newest still resumes with exact replay.
    back = await other.resume("mallory", sessions[2], 0)
    assert back.welcome["resumed"] is True and back.welcome["replayed"] == 1
    await back.expect("message", seq=1, data="kept")
    assert evicted(node, "user_limit") == 1 and evicted(node, "node_bytes") == 0


@pytest.mark.parametrize("kind", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_the_nodes_detached_buffers_are_bounded_oldest_evicted_first(
    kind: str, node_factory: Callable[..., Awaitable[Node]]
) -> None:
    limit = 4000
    node, other = await start(kind, node_factory, **{"limits.max_detached_buffered_bytes": limit})
    publisher = await node.client("pub")
    body = "x" * 500
    sessions = [await abandon(node, "mallory", f"t{i}") for i in range(4)]
    # Three messages for each: about 1.6 kB of tails per session, 6.4 kB in all.
    for i in range(4):
        for _ in range(3):
            await publisher.publish(f"t{i}", body)
    ctx = node.app.ctx
    assert ctx is not None
    await wait_evicted(node, "node_bytes", 2)
    await wait_until(
        lambda: 0 < metric(node, "rtcs_sessions_detached_buffered_bytes") <= limit,
        message="the buffered-bytes gauge caught up",
    )
    assert [ctx.sessions.get(s) is None for s in sessions] == [True, True, False, False]
    assert evicted(node, "user_limit") == 0
    gone = await other.resume("mallory", sessions[0], 0)
    assert gone.welcome["resumed"] is False
    back = await other.resume("mallory", sessions[3], 0)
    assert back.welcome["resumed"] is True and back.welcome["replayed"] == 3
    seen = [await back.expect("message") for _ in range(3)]
    assert [m["seq"] for m in seen] == [1, 2, 3] and {m["data"] for m in seen} == {body}
    text = node.app.metrics.render()[0].decode()
    assert 'rtcs_sessions_evicted_total{reason="node_bytes"} 2.0' in text
