"""What only the memory backends promise, beyond the shared contract."""

from __future__ import annotations

import asyncio

import pytest

from rtcs.backends.base import Envelope, SessionSnapshot
from rtcs.backends.memory import (
    MemoryBroker,
    MemoryHub,
    MemorySessionStore,
    memory_backends,
)
from rtcs.errors import Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def snap(session_id: str) -> SessionSnapshot:
    return SessionSnapshot(session_id, "alice", (), (), 0, (), "n1")


async def test_without_a_hub_the_broker_is_local_only() -> None:
    broker = MemoryBroker()
    assert broker.distributed is False
    received: list[Envelope] = []
    await broker.start("solo", received.append)
    assert broker.healthy()
    await broker.publish(Envelope("solo", "global", "", b"x"))
    await asyncio.sleep(0)  # a delivery would be scheduled with call_soon: let it run
    await asyncio.sleep(0)
    assert received == []
    await broker.close()
    with pytest.raises(Unavailable):
        await broker.publish(Envelope("solo", "global", "", b"x"))


async def test_node_ids_are_unique_on_a_hub() -> None:
    hub = MemoryHub()
    first, second = MemoryBroker(hub), MemoryBroker(hub)
    await first.start("n1", lambda envelope: None)
    with pytest.raises(ValueError):
        await second.start("n1", lambda envelope: None)
    assert hub.nodes() == ["n1"]
    await first.close()
    assert hub.nodes() == []
    await MemoryBroker(hub).start("n1", lambda envelope: None)
    assert hub.nodes() == ["n1"]


async def test_purge_removes_only_expired_sessions() -> None:
    clock = Clock()
    store = MemorySessionStore(clock)
    await store.save(snap("s-short"), 5)
    await store.save(snap("s-long"), 50)
    await store.save(snap("s-replaced"), 5)
    await store.save(snap("s-replaced"), 50)
    clock.now = 10
    assert store.purge() == 1
    assert store.purge() == 0
    assert await store.count() == 2
    clock.now = 60
    assert store.purge() == 2
    assert store._expiries == []


async def test_expiry_is_exact_at_the_deadline() -> None:
    clock = Clock()
    store = MemorySessionStore(clock)
    await store.save(snap("s-1"), 5)
    clock.now = 4.999
    assert await store.count() == 1
    clock.now = 5
    assert await store.claim("s-1", "alice") is None


async def test_negative_cap_is_refused() -> None:
    store = MemorySessionStore()
    await store.save(snap("s-1"), 5)
    with pytest.raises(ValueError):
        await store.append("s-1", 1, b"x", -1)


async def test_nodes_built_from_one_hub_share_stores_and_reach_each_other() -> None:
    hub = MemoryHub()
    one, two = memory_backends(hub), memory_backends(hub)
    assert one.sessions is two.sessions
    assert one.presence is two.presence
    assert one.broker.distributed and two.broker.distributed
    arrived: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
    await one.broker.start("n1", lambda env: None)
    await two.broker.start("n2", arrived.set_result)
    sent = Envelope("n1", "topic", "t", b"x")
    await one.broker.publish(sent)
    assert await asyncio.wait_for(arrived, 1) == sent


def test_single_node_backends_are_private() -> None:
    one, two = memory_backends(), memory_backends()
    assert one.broker.distributed is False
    assert one.sessions is not two.sessions
    assert one.presence is not two.presence


async def test_first_publish_window_is_exact() -> None:
    clock = Clock()
    store = MemorySessionStore(clock)
    assert await store.first_publish("s-1", "p", 5, 10) is True
    clock.now = 4.999
    assert await store.first_publish("s-1", "p", 5, 10) is False
    clock.now = 5
    assert await store.first_publish("s-1", "p", 5, 10) is True


async def test_first_publish_records_expire_by_themselves() -> None:
    clock = Clock()
    store = MemorySessionStore(clock)
    for i in range(100):
        await store.first_publish(f"s-{i}", "p", 5, 10)
    clock.now = 3
    await store.first_publish("s-0", "q", 5, 10)  # s-0 lives on until 8
    clock.now = 5
    store.purge()
    assert list(store._publishes) == ["s-0"]
    clock.now = 8
    store.purge()
    assert store._publishes == {} and store._publish_expiries == []


async def test_first_publish_keeps_huge_ids_as_digests() -> None:
    store = MemorySessionStore(Clock())
    assert await store.first_publish("s-1", "x" * 100_000, 5, 10)
    (key,) = store._publishes["s-1"].seen
    assert len(key) == 65 and key.startswith("#")
