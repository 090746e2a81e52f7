"""The node's live figures on the stats topic (rtcs.actors.stats): the pure
rates, and the aggregator publishing them, on both actor system bases."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import pytest
from thespian.actors import Actor, ActorAddress

from rtcs.actors.context import ROUTE_TOPIC
from rtcs.actors.messages import ServerPublish, StatsSample
from rtcs.actors.stats import LIVE_SAMPLES, StatsAggregator, Totals, node_stats, per_second
from rtcs.runtime import start_system, stop_system
from tests.unit.actors.actor_bed import NODE_ID, TIMEOUT, ActorBed, make_context

# -- pure ------------------------------------------------------------------------------------


def test_rates_between_two_moments() -> None:
    first, last = Totals(10.0, 100, 50, 200), Totals(12.0, 110, 56, 230)
    assert per_second(first, last) == {
        "messages_in_per_s": 5.0,
        "messages_out_per_s": 3.0,
        "deliveries_per_s": 15.0,
    }
    assert set(per_second(last, last).values()) == {0.0}


def test_node_stats_fields() -> None:
    window = deque([Totals(0.0, 0, 0, 0), Totals(1.0, 3, 1, 2)])
    data = node_stats("n1", 4, window, restarts=2, breaker="half_open", degraded=True, interval=1.0)
    assert data == {
        "node": "n1",
        "connections": 4,
        "messages_in_per_s": 3.0,
        "messages_out_per_s": 1.0,
        "deliveries_per_s": 2.0,
        "restarts": 2,
        "breaker": "half_open",
        "degraded": True,
        "interval": 1.0,
    }


# -- the aggregator --------------------------------------------------------------------------


class _Router(Actor):
    """Stands for the topic route handler: keeps every ServerPublish."""

    received: list[ServerPublish] = []
    arrived: asyncio.Event | None = None

    def receiveMessage(self, msg: Any, sender: ActorAddress) -> None:
        if isinstance(msg, ServerPublish):
            _Router.received.append(msg)
            if _Router.arrived is not None:
                _Router.arrived.set()


@pytest.fixture(params=["simple", "asyncio"])
async def stats_bed(request: pytest.FixtureRequest) -> AsyncIterator[ActorBed]:
    system = start_system(base=request.param)
    _Router.received = []
    _Router.arrived = asyncio.Event()
    try:
        yield ActorBed(request.param, system, make_context(**{"metrics.stats_topic": "ops.live"}))
    finally:
        stop_system(system)


def sample(at: float, messages_in: float, deliveries: float, connections: int = 2) -> StatsSample:
    return StatsSample(at, connections, connections, 0, messages_in, deliveries)


async def published(count: int) -> list[ServerPublish]:
    async with asyncio.timeout(TIMEOUT):
        assert _Router.arrived is not None
        while True:
            # Cleared before the check, so an arrival in between is not lost.
            _Router.arrived.clear()
            if len(_Router.received) >= count:
                break
            await _Router.arrived.wait()
    return _Router.received


async def test_each_sample_is_published_to_the_stats_topic(stats_bed: ActorBed) -> None:
    bed = stats_bed
    bed.ctx.directory.register(ROUTE_TOPIC, bed.system.createActor(_Router))
    aggregator = bed.start(StatsAggregator)
    bed.tell(aggregator, sample(100.0, 0, 0))
    bed.tell(aggregator, sample(102.0, 10, 40, connections=3))
    first, second = await published(2)
    assert (first.topic, first.local_only) == ("ops.live", True)
    assert first.data["messages_in_per_s"] == 0.0  # one sample: no rate yet
    assert second.data["node"] == NODE_ID
    assert (second.data["connections"], second.data["messages_in_per_s"]) == (3, 5.0)
    assert second.data["deliveries_per_s"] == 20.0
    assert (second.data["breaker"], second.data["degraded"]) == ("closed", False)


async def test_rates_cover_the_last_samples_only(stats_bed: ActorBed) -> None:
    bed = stats_bed
    bed.ctx.directory.register(ROUTE_TOPIC, bed.system.createActor(_Router))
    aggregator = bed.start(StatsAggregator)
    # A burst long ago, then quiet: the live rate forgets the burst.
    bed.tell(aggregator, sample(0.0, 0, 0))
    for i in range(1, LIVE_SAMPLES + 1):
        bed.tell(aggregator, sample(float(i), 1000, 0))
    last = (await published(LIVE_SAMPLES + 1))[-1]
    assert last.data["messages_in_per_s"] == 0.0


async def test_nothing_is_published_without_a_stats_topic() -> None:
    system = start_system(base="asyncio")
    _Router.received = []
    try:
        bed = ActorBed("asyncio", system, make_context())
        bed.ctx.directory.register(ROUTE_TOPIC, bed.system.createActor(_Router))
        aggregator = bed.start(StatsAggregator)
        bed.tell(aggregator, sample(1.0, 0, 0))
        bed.tell(aggregator, sample(2.0, 1, 1))
        await bed.barrier()
        await bed.barrier()
        assert _Router.received == []
        assert bed.ctx.settings.stats_topic == ""
    finally:
        stop_system(system)
