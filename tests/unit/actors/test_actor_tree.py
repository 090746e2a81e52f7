"""The supervision tree of ``actors.tree.build_tree`` on the asyncio base.

Only the asyncio base tells a supervisor that a child failed (docs/runtime.md),
so these tests do not run on the stock simple base.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from rtcs.actors.context import ROUTE_BROADCAST, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_TOPIC, ROUTER
from rtcs.actors.messages import RoutePublish, RouteSubscribe
from rtcs.actors.tree import SystemSupervisor, build_tree
from rtcs.runtime import SupervisorEvent, start_system, stop_system
from tests.unit.actors.actor_bed import ActorBed, EventLog, make_context

HANDLERS = (ROUTE_TOPIC, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_BROADCAST)


@pytest.fixture
async def tree() -> AsyncIterator[tuple[ActorBed, EventLog]]:
    """The whole node tree under a ``SystemSupervisor``, and its supervisor events."""
    system = start_system(base="asyncio")
    bed = ActorBed("asyncio", system, make_context())
    events = EventLog()
    root = system.createActor(SystemSupervisor)
    system.tell(root, build_tree(bed.ctx, events))
    try:
        await events.wait_for(lambda seen: _count(seen, "started", ROUTER) == len(HANDLERS))
        yield bed, events
    finally:
        stop_system(system)


def _count(events: list[SupervisorEvent], kind: str, supervisor: str) -> int:
    return sum(1 for e in events if e.kind == kind and e.supervisor == supervisor)


async def test_router_starts_every_handler_and_registers_it(
    tree: tuple[ActorBed, EventLog],
) -> None:
    bed, events = tree
    started = [e.child for e in events.events if e.kind == "started" and e.supervisor == ROUTER]
    assert started == list(HANDLERS)
    addresses = {name: bed.ctx.directory.require(name) for name in HANDLERS}
    assert len({a.actorAddressString for a in addresses.values()}) == len(HANDLERS)
    assert bed.ctx.directory.lookup(ROUTER) is not None


async def test_a_crashing_handler_restarts_the_router_group_and_keeps_subscriptions(
    tree: tuple[ActorBed, EventLog],
) -> None:
    bed, events = tree
    directory = bed.ctx.directory
    before = {name: directory.require(name).actorAddressString for name in HANDLERS}
    alice, a_sink = bed.session("alice")
    bed.tell(directory.require(ROUTE_TOPIC), RouteSubscribe(alice, "t", 1))
    await a_sink.wait_for(1)

    # A message the handler cannot handle: a bug, as far as supervision goes.
    bed.tell(directory.require(ROUTE_TOPIC), RouteSubscribe(None, "t", 2))  # type: ignore[arg-type]

    await events.wait_for(lambda seen: _count(seen, "restarted", ROUTER) == len(HANDLERS))
    restarted = {e.child: e.strategy.value for e in events.events if e.kind == "restarted"}
    assert restarted == dict.fromkeys(HANDLERS, "all_for_one")
    after = {name: directory.require(name).actorAddressString for name in HANDLERS}
    assert all(after[name] != before[name] for name in HANDLERS)
    # The new topic handler rebuilt its index from the session registry.
    bed.tell(directory.require(ROUTE_TOPIC), RoutePublish(alice, "t", "still here", 3))
    frames = await a_sink.wait_for(3)
    assert [(f["type"], f.get("data")) for f in frames[1:]] == [
        ("message", "still here"),
        ("ack", None),
    ]
