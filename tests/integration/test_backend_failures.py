"""A backend that fails: clear errors and readiness, never a hang or a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from rtcs.actors.context import ROUTE_TOPIC
from rtcs.backends.base import Backends
from rtcs.backends.memory import MemoryBroker, MemoryPresenceStore, MemorySessionStore
from rtcs.errors import Unavailable
from tests.integration.conftest import Node, http_get, metric
from tests.support.waiting import wait_until_returns


class FlakyPresence(MemoryPresenceStore):
    """A presence store that can be switched off, like a Redis that went away."""

    down = False

    def healthy(self) -> bool:
        return not self.down

    async def members(self, room: str) -> list[str]:
        if self.down:
            raise Unavailable("presence store down")
        return await super().members(room)

    async def join(self, room: str, user: str, member: str, node: str) -> bool:
        if self.down:
            raise Unavailable("presence store down")
        return await super().join(room, user, member, node)


@pytest.fixture
async def flaky(node_factory: Any) -> tuple[Node, FlakyPresence]:
    presence = FlakyPresence()
    backends = Backends(MemoryBroker(), MemorySessionStore(), presence)
    return await node_factory(backends), presence


async def test_requests_needing_a_failed_backend_get_unavailable(flaky: Any) -> None:
    node, presence = flaky
    alice = await node.client("alice")
    presence.down = True
    await alice.send({"type": "join", "id": 1, "room": "r"})
    await alice.expect("error", id=1, code="unavailable")
    admin = await node.client("root", ("admin",))  # may query rooms it is not in
    await admin.send({"type": "presence", "id": 2, "room": "r"})
    await admin.expect("error", id=2, code="unavailable")
    # what does not need the backend keeps working
    await alice.subscribe("t")
    await alice.publish("t", 1)
    await alice.expect("message", data=1)
    # the failed join left nothing behind: no room messages, and a later
    # join (backend back) works as a first join
    error = await alice.request({"type": "broadcast", "room": "r", "data": "x"}, "error")
    assert error["code"] == "forbidden"  # not a member
    await alice.request({"type": "ping"}, "pong")
    await alice.silent()
    presence.down = False
    joined = await alice.request({"type": "join", "room": "r"}, "joined")
    assert joined["members"] == ["alice"]


class FlakySessions(MemorySessionStore):
    """A session store that can be switched off with the presence store."""

    def __init__(self, presence: FlakyPresence) -> None:
        super().__init__()
        self.presence = presence

    async def count(self) -> int:
        if self.presence.down:
            raise Unavailable("session store down")
        return await super().count()


async def test_a_backend_outage_is_degraded_mode_said_out_loud(node_factory: Any) -> None:
    presence = FlakyPresence()
    backends = Backends(MemoryBroker(), FlakySessions(presence), presence)
    node = await node_factory(backends, **{"breaker.failure_threshold": 2, "breaker.timeout": 0.2})
    alice = await node.client("alice")
    status, body = await http_get(node, "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready", "degraded": False})

    presence.down = True
    for i in (1, 2):  # failure_threshold failed calls open the breaker
        await alice.send({"type": "join", "id": i, "room": "r"})
    await alice.expect("status", degraded=True, reason="backend")
    assert metric(node, "rtcs_degraded") == 1
    assert metric(node, "rtcs_backend_breaker_transitions_total", to="open") >= 1
    # Ready, and saying so: a shared outage must not empty the load balancer.
    status, body = await http_get(node, "/readyz")
    assert (status, json.loads(body)) == (200, {"status": "ready", "degraded": True})
    bob = await node.client("bob")
    assert bob.welcome["degraded"] is True
    # Local delivery goes on; what needs the backend is refused at once.
    await bob.subscribe("t")
    await alice.publish("t", "still here")
    await bob.expect("message", data="still here")
    admin = await node.client("root", ("admin",))  # may query rooms it is not in
    await admin.send({"type": "presence", "id": 3, "room": "r"})
    await admin.expect("error", id=3, code="unavailable")

    # As if Redis restarted empty: the node's presence entries are gone.
    await presence.drop_node(node.app.node_id)
    assert await presence.user_connections("alice") == 0

    presence.down = False  # the probes close the breaker without client traffic
    await alice.expect("status", degraded=False, timeout=5)
    # ... and the node states again what it holds.
    await wait_until_returns(lambda: presence.user_connections("alice"), 1)
    await bob.expect("status", degraded=False, timeout=5)
    status, body = await http_get(node, "/readyz")
    assert json.loads(body)["degraded"] is False
    joined = await alice.request({"type": "join", "room": "r"}, "joined")
    assert joined["members"] == ["alice"]
    carol = await node.client("carol")
    assert "degraded" not in carol.welcome


async def test_readiness_refuses_while_the_routing_actors_restart(node: Node) -> None:
    # What a router restart looks like from outside: route.topic is not in
    # the directory until its replacement registers.
    node.app.directory.unregister(ROUTE_TOPIC)
    status, body = await http_get(node, "/readyz")
    assert (status, json.loads(body)) == (
        503,
        {"status": "unavailable", "reason": "restarting: route.topic"},
    )
    with pytest.raises(InvalidStatus) as info:
        await connect(node.url, additional_headers={"Authorization": f"Bearer {node.token()}"})
    assert info.value.response.status_code == 503
