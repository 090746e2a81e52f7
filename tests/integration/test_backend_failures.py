"""A backend that fails: clear errors and readiness, never a hang or a traceback."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from rtcs.backends.base import Backends
from rtcs.backends.memory import MemoryBroker, MemoryPresenceStore, MemorySessionStore
from rtcs.errors import Unavailable
from tests.integration.conftest import Node, http_get


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
    await alice.send({"type": "presence", "id": 2, "room": "r"})
    await alice.expect("error", id=2, code="unavailable")
    # what does not need the backend keeps working
    await alice.subscribe("t")
    await alice.publish("t", 1)
    await alice.expect("message", data=1)
    # the failed join left nothing behind: no room messages, and a later
    # join (backend back) works as a first join
    await alice.request({"type": "broadcast", "room": "r", "data": "x"})
    await alice.request({"type": "ping"}, "pong")
    await alice.silent()
    presence.down = False
    joined = await alice.request({"type": "join", "room": "r"}, "joined")
    assert joined["members"] == ["alice"]


async def test_readiness_follows_the_backend(flaky: Any) -> None:
    node, presence = flaky
    status, body = await http_get(node, "/readyz")
    assert status == 200
    presence.down = True
    status, body = await http_get(node, "/readyz")
    assert status == 503 and json.loads(body) == {
        "status": "unavailable",
        "reason": "backend presence unavailable",
    }
    with pytest.raises(InvalidStatus) as info:
        await connect(node.url, additional_headers={"Authorization": f"Bearer {node.token()}"})
    assert info.value.response.status_code == 503
    presence.down = False
    status, _ = await http_get(node, "/readyz")
    assert status == 200
