"""Crash storms stay local: a client whose connections keep crashing their
actors is refused for a while; the node keeps serving everyone else."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from rtcs.actors.connection import WebSocketActor
from tests.integration.conftest import TIMEOUT, Node, http_get, metric

VICTIM = "victim"


def crash_pings_of(monkeypatch: pytest.MonkeyPatch, user: str | None) -> None:
    """Every ``ping`` of ``user`` crashes its connection actor (``None``: an
    unauthenticated socket's first frame crashes it): a bug a client can
    trigger again and again."""
    on_ping, fail_auth = WebSocketActor._on_ping, WebSocketActor._fail_auth

    def crashing_ping(self: WebSocketActor, *args: Any) -> Any:
        if self.handle.user == user:
            raise RuntimeError("simulated bug")
        return on_ping(self, *args)

    def crashing_fail_auth(self: WebSocketActor, reason: str) -> None:
        if user is None and reason == "authentication required":
            raise RuntimeError("simulated bug")
        fail_auth(self, reason)

    # Patched before the actors exist: they bind their handlers when created.
    monkeypatch.setattr(WebSocketActor, "_on_ping", crashing_ping)
    monkeypatch.setattr(WebSocketActor, "_fail_auth", crashing_fail_auth)


async def crash(node: Node, user: str | None = VICTIM, local: str = "127.0.0.1") -> int | None:
    """Connect, trigger the crash, and return the close code."""
    headers = {"Authorization": f"Bearer {node.token(user)}"} if user else None
    ws = await connect(
        node.url, additional_headers=headers, local_addr=(local, 0), open_timeout=TIMEOUT
    )
    if user:
        assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "welcome"
    await ws.send(json.dumps({"type": "ping", "id": 1}))
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    return ws.close_code


async def refused(node: Node, user: str | None = VICTIM, local: str = "127.0.0.1") -> int:
    headers = {"Authorization": f"Bearer {node.token(user)}"} if user else None
    with pytest.raises(InvalidStatus) as info:
        await connect(
            node.url, additional_headers=headers, local_addr=(local, 0), open_timeout=TIMEOUT
        )
    return info.value.response.status_code


async def test_hundreds_of_crashes_leave_the_node_serving_others(
    node_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_pings_of(monkeypatch, VICTIM)
    # No penalty here: every crash reaches the supervisor.
    node = await node_factory(**{"limits.crash_threshold": 100_000})
    bystander = await node.client("bystander")
    await bystander.subscribe("news")
    for _ in range(300):
        assert await crash(node) == 1011
    await bystander.request({"type": "ping"}, "pong")
    newcomer = await node.client("newcomer")
    await newcomer.publish("news", "still here")
    await bystander.expect("message", topic="news", data="still here")
    assert not node.app.stopped.is_set()  # nothing escalated to the root
    assert (await http_get(node, "/readyz"))[0] == 200


async def test_a_crashing_user_is_refused_then_admitted_after_the_penalty(
    node_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_pings_of(monkeypatch, VICTIM)
    penalty = 1.0
    node = await node_factory(**{"limits.crash_threshold": 3, "limits.crash_penalty": penalty})
    bystander = await node.client("bystander")
    loop = asyncio.get_running_loop()
    for _ in range(3):
        assert await crash(node) == 1011
    penalized_at = loop.time()
    # A header token: refused before the upgrade.
    assert await refused(node) == 429
    # A first-frame auth: closed with 4029 when the auth succeeds.
    ws = await connect(node.url, open_timeout=TIMEOUT)
    await ws.send(json.dumps({"type": "auth", "token": node.token(VICTIM), "id": 1}))
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
    assert ws.close_code == 4029
    # Others are served meanwhile.
    await bystander.request({"type": "ping"}, "pong")
    await node.client("someone-else")
    # Admitted again once the penalty is over (waiting on the refusal to end).
    admitted = await _admitted_within(node, penalty + TIMEOUT)
    assert loop.time() - penalized_at >= penalty * 0.9
    await admitted.close()
    assert metric(node, "rtcs_handshakes_rejected_total", status="429") >= 1


async def _admitted_within(node: Node, timeout: float) -> ClientConnection:
    headers = {"Authorization": f"Bearer {node.token(VICTIM)}"}
    async with asyncio.timeout(timeout):
        while True:
            try:
                ws = await connect(node.url, additional_headers=headers, open_timeout=TIMEOUT)
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                await asyncio.sleep(0.1)  # polling the refusal, not settling
                continue
            assert json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["type"] == "welcome"
            return ws


async def test_crashes_before_auth_penalize_the_address(
    node_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    crash_pings_of(monkeypatch, None)
    node = await node_factory(**{"limits.crash_threshold": 3, "limits.crash_penalty": 60.0})
    for _ in range(3):
        assert await crash(node, None) == 1011
    # Unauthenticated sockets from that address are refused...
    assert await refused(node, None) == 429
    # ...not those from another address, nor users with a token from it.
    other = await connect(node.url, local_addr=("127.0.0.2", 0), open_timeout=TIMEOUT)
    await (await node.client("alice")).request({"type": "ping"}, "pong")
    await other.close()
