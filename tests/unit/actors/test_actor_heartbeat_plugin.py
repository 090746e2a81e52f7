"""The example plugin (examples/plugins/echo_plugin.py) on both bases.

Its timer is driven by hand: the test sends the ``WakeupMessage`` the timer
would deliver, so the stock simple base (whose timers only fire inside
``tell``/``ask``/``listen``) runs the same test.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
from thespian.actors import WakeupMessage

from actors.context import ROUTE_TOPIC
from actors.messages import RouteSubscribe, Tick
from actors.router import TopicHandler
from tests.unit.actors.actor_bed import NODE_ID, ActorBed

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "plugins"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("echo_plugin")


def tick() -> WakeupMessage:
    return WakeupMessage(0, Tick("heartbeat"))


async def test_beats_reach_local_subscribers_through_the_topic_handler(
    bed: ActorBed, plugin: ModuleType
) -> None:
    bed.ctx.directory.register(ROUTE_TOPIC, bed.start(TopicHandler))
    alice, a_sink = bed.session("alice")
    _, b_sink = bed.session("bob")
    bed.tell(bed.ctx.directory.require(ROUTE_TOPIC), RouteSubscribe(alice, "system.>", 1))
    await a_sink.wait_for(1)
    heartbeat = bed.start(plugin.HeartbeatPlugin)

    bed.tell(heartbeat, tick())
    bed.tell(heartbeat, tick())

    first, second = (await a_sink.wait_for(3))[1:]
    assert first == {
        "type": "message",
        "seq": 1,
        "topic": "system.heartbeat",
        "data": {"node": NODE_ID, "beat": 1, "connections": 2},
        "ts": first["ts"],
    }
    assert (second["seq"], second["data"]["beat"]) == (2, 2)
    assert b_sink.frames == []


async def test_no_beat_while_the_router_restarts_or_the_node_stops(
    bed: ActorBed, plugin: ModuleType
) -> None:
    heartbeat = bed.start(plugin.HeartbeatPlugin)
    alice, a_sink = bed.session("alice")
    # The topic handler is not in the directory: the beat is skipped, not queued.
    bed.tell(heartbeat, tick())
    await bed.barrier()
    topics = bed.start(TopicHandler)
    bed.ctx.directory.register(ROUTE_TOPIC, topics)
    bed.tell(topics, RouteSubscribe(alice, "system.heartbeat", 1))
    await a_sink.wait_for(1)
    bed.ctx.shutting_down = True
    bed.tell(heartbeat, tick())
    await bed.barrier()
    bed.ctx.shutting_down = False

    bed.tell(heartbeat, tick())
    # Two hops: the plugin's turn, then the topic handler's.
    await bed.barrier()
    await bed.barrier()

    # Had a skipped beat been sent, it would have been delivered and counted.
    assert [(m["seq"], m["data"]["beat"]) for m in a_sink.messages()] == [(1, 1)]
