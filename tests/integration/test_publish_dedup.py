"""Publish de-duplication over real sockets (docs/protocol.md "publish").

A publish repeating an ``id`` its session used within ``limits.dedup_window``
is acked again with ``"duplicate": true`` and delivered once, on the node that
saw it first or on another node sharing the backend.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rtcs.backends.base import Backends
from rtcs.backends.memory import (
    MemoryBroker,
    MemoryHub,
    MemoryPresenceStore,
    MemorySessionStore,
)
from rtcs.errors import Unavailable
from tests.integration.conftest import (
    SHARED_BACKENDS,
    Client,
    Node,
    detach,
    start_pair,
)

NodeFactory = Callable[..., Awaitable[Node]]


async def publish(client: Client, rid: str | int, topic: str, data: Any) -> dict[str, Any]:
    await client.send({"type": "publish", "id": rid, "topic": topic, "data": data})
    return await client.expect("ack", id=rid)


async def assert_next_message(client: Client, data: Any) -> None:
    """The next message ``client`` gets carries ``data``, and nothing else is pending."""
    message = await client.expect("message")
    assert message["data"] == data, message
    await client.request({"type": "ping"}, "pong")
    await client.silent()


async def test_a_repeated_id_is_acked_as_duplicate_and_not_delivered(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    first = await publish(alice, "p1", "news", "once")
    assert first == {"type": "ack", "id": "p1"}
    await bob.expect("message", data="once")
    again = await publish(alice, "p1", "news", "twice")
    assert again == {"type": "ack", "id": "p1", "duplicate": True}
    # 7 and "7" are different ids; a new id is delivered.
    await publish(alice, 7, "news", "int")
    await bob.expect("message", data="int")
    assert "duplicate" not in await publish(alice, "7", "news", "str")
    await bob.expect("message", data="str")
    assert (await publish(alice, 7, "news", "int again"))["duplicate"] is True
    await publish(alice, "p2", "news", "next")
    await assert_next_message(bob, "next")


async def test_ids_are_per_session(node: Node) -> None:
    alice, carol, bob = await node.client("alice"), await node.client("carol"), await node.client()
    await bob.subscribe("news")
    await publish(alice, "same", "news", "from alice")
    await bob.expect("message", data="from alice")
    assert "duplicate" not in await publish(carol, "same", "news", "from carol")
    await assert_next_message(bob, "from carol")


async def test_frames_after_a_publish_keep_their_order(node: Node) -> None:
    # Publishes without an id need no store call: they must still not
    # overtake an earlier publish whose id is being checked.
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    for i in range(20):
        frame: dict[str, Any] = {"type": "publish", "topic": "news", "data": i}
        await alice.send({**frame, "id": i} if i % 2 == 0 else frame)
    assert [(await bob.expect("message"))["data"] for _ in range(20)] == list(range(20))
    acks = [await alice.expect("ack") for _ in range(20)]
    assert [a.get("id") for a in acks] == [i if i % 2 == 0 else None for i in range(20)]


async def test_at_most_dedup_max_ids_are_remembered(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"limits.dedup_max_ids": 2})
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    for rid in ("a", "b", "c"):  # "a" is forgotten: only 2 ids are kept
        await publish(alice, rid, "news", rid)
        await bob.expect("message", data=rid)
    assert (await publish(alice, "c", "news", "c again"))["duplicate"] is True
    assert "duplicate" not in await publish(alice, "a", "news", "a again")
    await assert_next_message(bob, "a again")


async def test_a_retry_after_a_resume_on_the_same_node(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    await publish(alice, "lost-ack", "news", "once")
    await bob.expect("message", data="once")
    again = await node.resume("alice", await detach(node, alice), 0, resumed=True)
    assert (await publish(again, "lost-ack", "news", "retry"))["duplicate"] is True
    await publish(again, "fresh", "news", "fresh")
    await assert_next_message(bob, "fresh")


@pytest.fixture(params=SHARED_BACKENDS)
async def pair(request: pytest.FixtureRequest, node_factory: NodeFactory) -> tuple[Node, Node]:
    return await start_pair(request.param, node_factory)


async def test_a_retry_on_another_node_is_delivered_once(pair: tuple[Node, Node]) -> None:
    a, b = pair
    alice, bob = await a.client("alice"), await b.client("bob")
    await bob.subscribe("news")
    await publish(alice, "x1", "news", "once")
    await bob.expect("message", data="once")
    # The ack was lost: the client reconnects through the other node and retries.
    again = await b.resume("alice", await detach(a, alice), 0, resumed=True)
    assert (await publish(again, "x1", "news", "retry"))["duplicate"] is True
    await publish(again, "x2", "news", "next")
    await assert_next_message(bob, "next")


class FlakyPublishes(MemorySessionStore):
    """A session store whose publish-id checks fail while ``down``."""

    down = False

    async def first_publish(
        self, session_id: str, publish_id: str, window: float, cap: int
    ) -> bool:
        if self.down:
            raise Unavailable("session store down")
        return await super().first_publish(session_id, publish_id, window, cap)


async def test_degraded_with_other_instances_a_publish_with_an_id_is_refused(
    node_factory: NodeFactory,
) -> None:
    # Other instances share the backend (a distributed broker): the publish
    # needs the backend anyway, and is refused before any delivery.
    store = FlakyPublishes()
    hub = MemoryHub()
    node = await node_factory(Backends(MemoryBroker(hub), store, MemoryPresenceStore()))
    assert node.app.ctx is not None and node.app.ctx.backends.broker.distributed
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    store.down = True
    error = await alice.request({"type": "publish", "topic": "news", "data": "x"}, "error")
    assert error["code"] == "unavailable"
    store.down = False
    await publish(alice, "after", "news", "after")
    await assert_next_message(bob, "after")  # "x" was never delivered


async def test_alone_the_session_de_duplicates_without_the_store(
    node_factory: NodeFactory,
) -> None:
    # One instance (no distributed broker): the session's own memory of its
    # ids is the whole truth, so a store outage changes nothing.
    store = FlakyPublishes()
    node = await node_factory(Backends(MemoryBroker(), store, MemoryPresenceStore()))
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    store.down = True
    assert await publish(alice, "d1", "news", "one") == {"type": "ack", "id": "d1"}
    await bob.expect("message", data="one")
    assert (await publish(alice, "d1", "news", "again"))["duplicate"] is True
    await publish(alice, "d2", "news", "two")
    await assert_next_message(bob, "two")  # "again" was never delivered
