"""Supervision, backpressure and limits, against a real node."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from rtcs import config
from rtcs.actors.connection import WebSocketActor
from rtcs.actors.context import ROUTE_BROADCAST, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_TOPIC
from rtcs.actors.routing import RoomHandler, TopicHandler
from rtcs.app import App, stop_within
from tests.integration.conftest import TIMEOUT, Client, Node, metric
from tests.support import wait_until, wait_until_returns

HANDLERS = (ROUTE_TOPIC, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_BROADCAST)


def _addresses(node: Node) -> dict[str, str]:
    directory = node.app.directory
    return {name: directory.require(name).actorAddressString for name in HANDLERS}


def _crash_once(monkeypatch: pytest.MonkeyPatch, cls: type, method: str) -> None:
    """Make ``cls.method`` raise on its next call only: a bug, simulated."""
    original = getattr(cls, method)
    state = {"armed": True}

    def crashing(self: Any, *args: Any) -> Any:
        if state["armed"]:
            state["armed"] = False
            raise RuntimeError("simulated bug")
        return original(self, *args)

    monkeypatch.setattr(cls, method, crashing)


async def test_crashing_connection_actor_closes_only_its_socket_1011(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Patched before the actors exist: they bind their handlers when created.
    _crash_once(monkeypatch, WebSocketActor, "_on_ping")
    victim, bystander = await node.client("victim"), await node.client("bystander")
    await victim.subscribe("t")
    await victim.send({"type": "ping", "id": 1})
    assert await victim.closed() == 1011
    await bystander.request({"type": "ping"}, "pong")
    # The crashed connection no longer counts as the user being online.
    presence = node.app.backends.presence
    await wait_until_returns(lambda: presence.user_connections("victim"), 0)
    # The crashed connection's session stays resumable.
    session = victim.welcome["session_id"]
    ws = await connect(
        node.url + f"?session={session}&last_seq=0",
        additional_headers={"Authorization": f"Bearer {node.token('victim')}"},
    )
    await Client(ws).expect("welcome", resumed=True, session_id=session)


async def test_router_all_for_one_restart_keeps_subscriptions(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news.>")
    await bob.request({"type": "join", "room": "r"}, "joined")
    await alice.request({"type": "join", "room": "r"}, "joined")  # members broadcast
    before = _addresses(node)
    connections = node.app.directory.require("connections").actorAddressString
    _crash_once(monkeypatch, TopicHandler, "receiveMsg_RoutePublish")
    await alice.send({"type": "publish", "id": "p1", "topic": "news.a", "data": 1})
    await alice.expect("error", id="p1", code="internal")
    await wait_until(lambda: all(_addresses(node)[n] != before[n] for n in HANDLERS))
    assert node.app.directory.require("connections").actorAddressString == connections
    strategy = {"supervisor": "router", "strategy": "all_for_one"}
    assert metric(node, "rtcs_actor_restarts_total", **strategy) == 4
    # State was rebuilt from the session registry: nothing to re-subscribe.
    await alice.publish("news.b", 2)
    await bob.expect("message", topic="news.b", data=2)
    await alice.request({"type": "broadcast", "room": "r", "data": 3})
    await bob.expect("message", room="r", data=3)


@pytest.mark.parametrize(
    "strategy, crashed, handler, method, restarted",
    [
        ("one_for_one", "topic", TopicHandler, "receiveMsg_RoutePublish", {ROUTE_TOPIC}),
        (
            "rest_for_one",
            "room",
            RoomHandler,
            "receiveMsg_RouteRoomBroadcast",
            {ROUTE_ROOM, ROUTE_BROADCAST},
        ),
        ("all_for_one", "room", RoomHandler, "receiveMsg_RouteRoomBroadcast", set(HANDLERS)),
    ],
)
async def test_router_strategy_is_configuration(
    node_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
    strategy: str,
    crashed: str,
    handler: type,
    method: str,
    restarted: set[str],
) -> None:
    node = await node_factory(**{"supervision.router.strategy": strategy})
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("t")
    await bob.request({"type": "join", "room": "r"}, "joined")
    await alice.request({"type": "join", "room": "r"}, "joined")  # members broadcast
    before = _addresses(node)
    _crash_once(monkeypatch, handler, method)
    if crashed == "topic":
        await alice.send({"type": "publish", "id": 1, "topic": "t", "data": 0})
    else:
        await alice.send({"type": "broadcast", "id": 1, "room": "r", "data": 0})
    await alice.expect("error", id=1, code="internal")
    await wait_until(lambda: all(_addresses(node)[n] != before[n] for n in restarted))
    after = _addresses(node)
    assert {n for n in HANDLERS if after[n] != before[n]} == restarted
    await alice.publish("t", 1)
    await bob.expect("message", topic="t", data=1)
    await alice.request({"type": "broadcast", "room": "r", "data": 2})
    await bob.expect("message", room="r", data=2)


async def test_slow_consumer_is_closed_4008_and_freed(node_factory: Any) -> None:
    unlimited = {
        "limits.rate": 1e6,
        "limits.burst": 1_000_000,
        "limits.byte_rate": 1e9,
        "limits.byte_burst": 1_000_000_000,
    }
    node = await node_factory(**{"limits.outbox_bytes": 65536, **unlimited})
    publisher, slow = await node.client("pub"), await node.client("slow")
    await slow.subscribe("firehose")
    slow.ws.transport.pause_reading()  # a client that stops reading
    payload = "x" * 16000
    for _ in range(600):
        if not node.app.gateway.handles or metric(
            node, "rtcs_outbox_drops_total", reason="overflow"
        ):
            break
        await publisher.publish("firehose", payload)
    await wait_until(lambda: metric(node, "rtcs_connections_closed_total", code="4008") == 1)
    assert metric(node, "rtcs_outbox_drops_total", reason="overflow") >= 1
    await wait_until(lambda: len(node.app.gateway.handles) == 1)
    await publisher.request({"type": "ping"}, "pong")  # the publisher is unaffected


async def test_ping_flood_from_a_non_reader_is_cut_off(node_factory: Any) -> None:
    node = await node_factory(**{"limits.outbox_bytes": 65536})
    flooder = await node.client("flooder")
    ws = flooder.ws
    ws.transport.pause_reading()
    for _ in range(200):
        if metric(node, "rtcs_outbox_drops_total", reason="write_buffer"):
            break
        for _ in range(500):
            ws.protocol.send_ping(b"p" * 125)
        ws.send_data()
        await asyncio.sleep(0)  # let the loop write
    await wait_until(lambda: metric(node, "rtcs_connections_closed_total", code="4008") == 1)
    await wait_until(lambda: not node.app.gateway.handles)


async def test_the_watchdog_looks_only_at_new_and_congested_connections(
    node_factory: Any,
) -> None:
    node = await node_factory(**{"server.watchdog_interval": 0.02})
    client = await node.client("idle")
    gateway = node.app.gateway
    assert gateway is not None
    (handle,) = gateway.handles
    await wait_until(lambda: handle not in gateway._watched)  # admitted, nothing pending
    ws = handle._ws
    ws.pause_writing()  # what the transport calls past its high-water mark
    assert handle in gateway._watched
    ws.resume_writing()
    await wait_until(lambda: handle not in gateway._watched)
    await client.request({"type": "ping"}, "pong")


async def test_websocket_ping_frames_are_answered(node: Node) -> None:
    client = await node.client("alice")
    pong = await client.ws.ping()
    await asyncio.wait_for(pong, TIMEOUT)


async def test_per_address_limit_429(node_factory: Any) -> None:
    node = await node_factory(**{"limits.max_connections_per_address": 2})
    await node.client("a")
    await node.client("b")
    with pytest.raises(InvalidStatus) as info:
        await node.client("c")
    assert info.value.response.status_code == 429
    assert metric(node, "rtcs_handshakes_rejected_total", status="429") == 1


async def test_per_user_limit_4031(node_factory: Any) -> None:
    node = await node_factory(**{"limits.max_connections_per_user": 1})
    await node.client("alice")
    second = await node.client("alice", welcome=False)
    assert await second.closed() == 4031
    await node.client("bob")


async def test_per_node_limit_4031(node_factory: Any) -> None:
    node = await node_factory(**{"limits.max_connections_per_node": 1})
    await node.client("alice")
    second = await node.client("bob", welcome=False)
    assert await second.closed() == 4031


class _Slot:
    """One worker's view of an instance's connection counts (rtcs.workers.InstanceCounter
    without the shared memory: both "workers" run in this process)."""

    def __init__(self, slots: list[int], index: int) -> None:
        self.slots, self.index = slots, index

    def set(self, count: int) -> None:
        self.slots[self.index] = count

    def total(self) -> int:
        return sum(self.slots)


async def test_per_node_limit_counts_every_worker_of_the_instance() -> None:
    slots = [0, 0]
    settings = config.load(
        None, {}, {"server.port": 0, "log.level": "warning", "limits.max_connections_per_node": 2}
    )
    nodes = [Node(App(settings, instance=_Slot(slots, i))) for i in (0, 1)]
    try:
        for node in nodes:
            await node.app.start()
        first, second = nodes
        await first.client("alice")
        bob = await second.client("bob")
        assert slots == [1, 1]
        refused = await first.client("carol", welcome=False)
        assert await refused.closed() == 4031
        await bob.ws.close()
        await wait_until(lambda: slots == [1, 0])
        await first.client("carol")
    finally:
        for node in nodes:
            await node.app.stop()
            await node.drop_clients()


async def test_shutdown_closes_clients_1001(node_factory: Any) -> None:
    node = await node_factory()
    clients = [await node.client(f"u{i}") for i in range(3)]
    await node.app.stop()
    for client in clients:
        assert await client.closed() == 1001
    with pytest.raises(OSError):
        await connect(node.url, open_timeout=1)


async def test_a_connection_whose_actor_never_starts_gets_1013(
    node_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rtcs.actors.connection_supervisor import ConnectionSupervisor

    node = await node_factory(**{"server.open_timeout": 0.2})
    monkeypatch.setattr(ConnectionSupervisor, "receiveMsg_OpenConnection", lambda *a: None)
    client = await node.client("alice", welcome=False)
    assert await client.closed() == 1013


async def test_inbound_frames_are_bounded_per_connection(
    node_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    node = await node_factory(
        **{"limits.inbound_queue": 8, "limits.rate": 1e6, "limits.burst": 1_000_000}
    )
    seen: list[int] = []
    original = WebSocketActor._on_ping

    def recording(self: Any, cmd: Any) -> None:
        seen.append(self.handle.inflight)
        original(self, cmd)

    monkeypatch.setattr(WebSocketActor, "_on_ping", recording)
    client = await node.client("alice")
    frames = [json.dumps({"type": "ping", "id": i}) for i in range(2000)]
    await asyncio.gather(*(client.ws.send(f) for f in frames))
    await client.expect("pong", id=1999, timeout=TIMEOUT * 2)
    assert len(seen) == 2000
    assert max(seen) <= 8  # never more than the queue bound waiting behind a frame
    assert max(seen) > 0  # and frames did queue up: the bound was exercised


# -- a stop that hangs ----------------------------------------------------------------------


async def test_a_stop_that_hangs_is_given_up_at_its_bound(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await node.client()
    assert node.app.ctx is not None
    released = asyncio.Event()

    async def flush_that_hangs() -> None:  # a backend write that never returns
        await released.wait()

    monkeypatch.setattr(node.app.ctx.background, "close", flush_that_hangs)
    stopping = asyncio.create_task(stop_within(node.app, 0.5))
    assert await client.closed() == 1001  # the drain itself ran
    assert await asyncio.wait_for(stopping, TIMEOUT) == 1  # then the bound ended the stop
    monkeypatch.undo()
    await node.app.stop()  # what the bound cut short, so the fixture finds it stopped


async def test_a_stop_within_its_bound_exits_0(node: Node) -> None:
    client = await node.client()
    assert await asyncio.wait_for(stop_within(node.app, TIMEOUT), TIMEOUT * 2) == 0
    assert await client.closed() == 1001
