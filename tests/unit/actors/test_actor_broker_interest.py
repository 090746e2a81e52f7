"""Route handlers tell a distributed broker what this node listens to.

On the asyncio base only: broker calls go through ``run_async``. The broker
here is a recording fake whose ``listen`` completes when the test says so, so
the tests can see that ``subscribed``/``joined`` wait for it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import AsyncIterator, Awaitable

import pytest

from rtcs.actors.context import ROUTE_ROOM, ROUTE_TOPIC, ROUTER
from rtcs.actors.messages import (
    IndexSession,
    RouteJoin,
    RouteLeave,
    RouteSubscribe,
    RouteUnsubscribe,
    UnindexSession,
)
from rtcs.actors.tree import SystemSupervisor, build_tree
from rtcs.backends.base import DeliverFn, Envelope, EnvelopeKind
from rtcs.backends.memory import memory_backends
from rtcs.errors import Unavailable
from rtcs.runtime import start_system, stop_system
from rtcs.runtime.supervision import SupervisorEvent
from tests.support.waiting import wait_until
from tests.unit.actors.actor_bed import ActorBed, EventLog, make_context

Interest = tuple[EnvelopeKind, str]


class RecordingBroker:
    """A distributed ``Broker`` that counts interest and gates ``listen``."""

    distributed = True

    def __init__(self) -> None:
        self.interest: Counter[Interest] = Counter()
        self.gate: asyncio.Event = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def start(self, node_id: str, deliver: DeliverFn) -> None:
        return None

    async def publish(self, envelope: Envelope, node: str | None = None) -> None:
        return None

    def listen(self, kind: EnvelopeKind, target: str) -> Awaitable[None]:
        self.interest[(kind, target)] += 1
        return self._live()

    async def _live(self) -> None:
        await self.gate.wait()
        if self.fail:
            raise Unavailable("redis is down")

    def unlisten(self, kind: EnvelopeKind, target: str) -> None:
        self.interest[(kind, target)] -= 1
        if self.interest[(kind, target)] <= 0:
            del self.interest[(kind, target)]

    def reset(self, kind: EnvelopeKind) -> None:
        for key in [key for key in self.interest if key[0] == kind]:
            del self.interest[key]

    async def close(self) -> None:
        return None

    def healthy(self) -> bool:
        return True


@pytest.fixture
async def bed() -> AsyncIterator[tuple[ActorBed, RecordingBroker, EventLog]]:
    broker = RecordingBroker()
    backends = dataclasses.replace(memory_backends(), broker=broker)
    ctx = dataclasses.replace(make_context(), backends=backends)
    system = start_system(base="asyncio")
    bed = ActorBed("asyncio", system, ctx)
    events = EventLog()
    system.tell(system.createActor(SystemSupervisor), build_tree(ctx, events))
    try:
        await events.wait_for(lambda seen: _count(seen, "started", ROUTER) == 4)
        yield bed, broker, events
    finally:
        stop_system(system)


def _count(events: list[SupervisorEvent], kind: str, supervisor: str) -> int:
    return sum(1 for e in events if e.kind == kind and e.supervisor == supervisor)


async def test_a_pattern_is_listened_to_once_and_subscribed_waits_for_it(
    bed: tuple[ActorBed, RecordingBroker, EventLog],
) -> None:
    b, broker, _ = bed
    topics = b.ctx.directory.require(ROUTE_TOPIC)
    alice, a_sink = b.session("alice")
    bob, b_sink = b.session("bob")
    broker.gate.clear()
    b.tell(topics, RouteSubscribe(alice, "chat.>", 1))
    b.tell(topics, RouteSubscribe(bob, "chat.>", 2))
    await b.barrier()
    assert broker.interest == {("topic", "chat.>"): 1}
    assert a_sink.frames == [] and b_sink.frames == []  # not live yet
    broker.gate.set()
    assert await a_sink.wait_for(1) == [{"type": "subscribed", "id": 1, "topic": "chat.>"}]
    assert await b_sink.wait_for(1) == [{"type": "subscribed", "id": 2, "topic": "chat.>"}]

    b.tell(topics, RouteUnsubscribe(alice, "chat.>", 3))
    await a_sink.wait_for(2)
    assert broker.interest == {("topic", "chat.>"): 1}  # bob still there
    b.tell(topics, UnindexSession(bob))
    await b.barrier()
    assert broker.interest == {}


async def test_subscribed_is_answered_when_the_broker_cannot_confirm(
    bed: tuple[ActorBed, RecordingBroker, EventLog],
) -> None:
    b, broker, _ = bed
    broker.fail = True
    alice, a_sink = b.session("alice")
    b.tell(b.ctx.directory.require(ROUTE_TOPIC), RouteSubscribe(alice, "news", 1))
    assert await a_sink.wait_for(1) == [{"type": "subscribed", "id": 1, "topic": "news"}]
    assert broker.interest == {("topic", "news"): 1}  # kept: subscribed when back


async def test_rooms_are_listened_to_while_a_session_is_in_them(
    bed: tuple[ActorBed, RecordingBroker, EventLog],
) -> None:
    b, broker, _ = bed
    rooms = b.ctx.directory.require(ROUTE_ROOM)
    alice, a_sink = b.session("alice")
    bob, _ = b.session("bob")
    b.tell(rooms, RouteJoin(alice, "lobby", 1))
    assert (await a_sink.wait_type("joined"))["room"] == "lobby"
    assert broker.interest == {("room", "lobby"): 1}
    # A resumed session with a room: counted once more, still one listen.
    bob.rooms.add("lobby")
    b.tell(rooms, IndexSession(bob))
    b.tell(rooms, RouteLeave(alice, "lobby", 2))
    await a_sink.wait_type("left")
    assert broker.interest == {("room", "lobby"): 1}
    b.tell(rooms, UnindexSession(bob))
    await b.barrier()
    assert broker.interest == {}


async def test_a_router_restart_listens_again_without_counting_twice(
    bed: tuple[ActorBed, RecordingBroker, EventLog],
) -> None:
    b, broker, events = bed
    directory = b.ctx.directory
    alice, a_sink = b.session("alice")
    b.tell(directory.require(ROUTE_TOPIC), RouteSubscribe(alice, "chat.>", 1))
    b.tell(directory.require(ROUTE_TOPIC), RouteSubscribe(alice, "*.x", 2))
    b.tell(directory.require(ROUTE_ROOM), RouteJoin(alice, "lobby", 3))
    await a_sink.wait_type("joined")
    expected = {("topic", "chat.>"): 1, ("topic", "*.x"): 1, ("room", "lobby"): 1}
    assert broker.interest == expected

    # A bug in the topic handler: the whole router group restarts.
    b.tell(directory.require(ROUTE_TOPIC), RouteSubscribe(None, "t", 9))  # type: ignore[arg-type]
    await events.wait_for(lambda seen: _count(seen, "restarted", ROUTER) == 4)
    await wait_until(lambda: directory.lookup(ROUTE_ROOM) is not None)
    await b.barrier()
    assert broker.interest == expected
    # And the new handlers keep counting from there.
    b.tell(directory.require(ROUTE_TOPIC), RouteUnsubscribe(alice, "chat.>", 4))
    await a_sink.wait_type("unsubscribed")
    assert broker.interest == {("topic", "*.x"): 1, ("room", "lobby"): 1}
