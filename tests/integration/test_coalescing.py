"""Write coalescing on a real node: frames of one iteration leave in one write, in order."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from rtcs.actors.context import ROUTE_TOPIC
from rtcs.actors.messages import ServerPublish
from rtcs.gateway.handle import ConnectionHandle
from tests.integration.conftest import Client, Node, metric
from tests.support import wait_until


class CountingTransport:
    """Wraps a handle's transport and counts its writes."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def count_writes(node: Node, user: str) -> CountingTransport:
    assert node.app.gateway is not None
    [handle] = [h for h in node.app.gateway.handles if h.user == user]
    assert isinstance(handle, ConnectionHandle)
    counting = CountingTransport(handle._transport)
    handle._transport = counting  # type: ignore[assignment]
    return counting


def server_publish(node: Node, topic: str, data: Any) -> None:
    assert node.app.system is not None
    address = node.app.directory.lookup(ROUTE_TOPIC)
    node.app.system.tell(address, ServerPublish(topic, data, local_only=True))


async def receive(client: Client, n: int) -> list[Any]:
    return [(await client.expect("message"))["data"] for _ in range(n)]


async def test_a_burst_leaves_in_one_write(node: Node) -> None:
    sub = await node.client("sub")
    await sub.subscribe("burst.>")
    counting = count_writes(node, "sub")
    for i in range(50):  # one turn of the topic handler: one iteration
        server_publish(node, "burst.x", i)
    assert await receive(sub, 50) == list(range(50))
    assert counting.writes == 1  # one per connection per iteration (was: 50)


async def test_a_window_gathers_messages_of_several_iterations(
    node_factory: Callable[..., Awaitable[Node]],
) -> None:
    node = await node_factory(**{"limits.batch_window_ms": 200})
    sub = await node.client("sub")
    await sub.subscribe("w.>")
    counting = count_writes(node, "sub")
    for i in range(5):
        server_publish(node, "w.x", i)
        await asyncio.sleep(0)  # a later loop iteration, still inside the window
    assert await receive(sub, 5) == list(range(5))
    assert counting.writes == 1


async def test_replies_are_not_held_and_keep_their_order(
    node_factory: Callable[..., Awaitable[Node]],
) -> None:
    node = await node_factory(**{"limits.batch_window_ms": 1000})
    client = await node.client("me")
    await client.subscribe("self.>")
    rid = client.next_id()
    await client.send({"type": "publish", "id": rid, "topic": "self.x", "data": 1})
    # the message to itself is held by the window, the ack is not: the ack
    # takes the message along, before it, well within the window
    first = await client.recv(timeout=0.5)
    second = await client.recv(timeout=0.5)
    assert (first["type"], first["data"]) == ("message", 1)
    assert (second["type"], second["id"]) == ("ack", rid)


async def test_routing_latency_runs_to_the_last_local_write(
    node_factory: Callable[..., Awaitable[Node]],
) -> None:
    # rtcs_routing_seconds ends when the recipient's bytes are written: here
    # after the window holding the message, not when it was queued.
    node = await node_factory(**{"limits.batch_window_ms": 300})
    sub = await node.client("sub")
    await sub.subscribe("lat.>")
    publisher = await node.client("pub")
    await publisher.request({"type": "publish", "topic": "lat.x", "data": 1}, "ack")
    assert await receive(sub, 1) == [1]
    labels = {"kind": "topic"}
    await wait_until(lambda: metric(node, "rtcs_routing_seconds_count", **labels) == 1)
    assert metric(node, "rtcs_routing_seconds_sum", **labels) >= 0.3
