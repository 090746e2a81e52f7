"""The example plugin (examples/plugins/echo_plugin.py) on both bases.

Its timer is driven by hand: the test sends the ``WakeupMessage`` the timer
would deliver, so the stock simple base (whose timers only fire inside
``tell``/``ask``/``listen``) runs the same test.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

import pytest
from structlog.testing import capture_logs
from thespian.actors import ActorAddress, WakeupMessage

from rtcs.actors.context import ROUTE_TOPIC
from rtcs.actors.messages import Configure, RouteSubscribe
from rtcs.actors.routing import TopicHandler
from tests.unit.actors.actor_bed import NODE_ID, ActorBed

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "plugins"


@pytest.fixture
def plugin(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("echo_plugin")


def tick() -> WakeupMessage:
    return WakeupMessage(0, importlib.import_module("echo_plugin").Beat())


def start_with(bed: ActorBed, plugin: ModuleType, options: Mapping[str, Any]) -> ActorAddress:
    """Create the plugin and configure it with ``options``, as the plugins supervisor does."""
    address = bed.system.createActor(plugin.HeartbeatPlugin)
    bed.tell(address, Configure(bed.ctx, MappingProxyType(dict(options))))
    return address


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


async def test_the_topic_option_replaces_the_default_topic(
    bed: ActorBed, plugin: ModuleType
) -> None:
    topics = bed.start(TopicHandler)
    bed.ctx.directory.register(ROUTE_TOPIC, topics)
    alice, a_sink = bed.session("alice")
    bob, b_sink = bed.session("bob")
    bed.tell(topics, RouteSubscribe(alice, "node.>", 1))
    bed.tell(topics, RouteSubscribe(bob, "system.>", 1))
    await a_sink.wait_for(1)
    await b_sink.wait_for(1)
    heartbeat = start_with(bed, plugin, {"topic": "node.pulse", "interval": 60})

    bed.tell(heartbeat, tick())

    beat = (await a_sink.wait_for(2))[1]
    assert (beat["topic"], beat["data"]["beat"]) == ("node.pulse", 1)
    # Nothing went to the default topic: one round trip through the plugin,
    # one through the handler, and bob still has only his subscription reply.
    await bed.barrier()
    await bed.barrier()
    assert [f["type"] for f in b_sink.frames] == ["subscribed"]


async def test_bad_options_are_logged_by_name_and_the_defaults_used(
    bed: ActorBed, plugin: ModuleType
) -> None:
    topics = bed.start(TopicHandler)
    bed.ctx.directory.register(ROUTE_TOPIC, topics)
    alice, a_sink = bed.session("alice")
    bed.tell(topics, RouteSubscribe(alice, "system.heartbeat", 1))
    await a_sink.wait_for(1)

    with capture_logs() as logs:
        heartbeat = start_with(bed, plugin, {"interval": "fast", "topic": "system.>", "colour": 1})
        bed.tell(heartbeat, tick())
        beat = (await a_sink.wait_for(2))[1]

    # The plugin is alive and beats on its default topic.
    assert (beat["topic"], beat["data"]["beat"]) == ("system.heartbeat", 1)
    errors = {e["option"]: e["reason"] for e in logs if e["log_level"] == "error"}
    assert set(errors) == {"interval", "topic", "colour"}
    assert "'fast'" in errors["interval"]
    assert "'system.>'" in errors["topic"]
    assert "unknown option" in errors["colour"]


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


@pytest.mark.parametrize(
    "options, valid",
    [
        ({}, {}),
        ({"interval": 2}, {"interval": 2.0}),
        ({"interval": 0.05, "topic": "node.pulse"}, {"interval": 0.05, "topic": "node.pulse"}),
    ],
)
def test_parse_options_accepts_well_formed_options(
    plugin: ModuleType, options: dict[str, Any], valid: dict[str, Any]
) -> None:
    assert plugin.parse_options(options) == (valid, {})


@pytest.mark.parametrize(
    "option, value",
    [
        ("interval", 0),
        ("interval", -1.5),
        ("interval", math.inf),
        ("interval", math.nan),
        ("interval", True),
        ("interval", "5"),
        ("topic", "system.*"),
        ("topic", ""),
        ("topic", 7),
        ("intervall", 5),
    ],
)
def test_parse_options_refuses_malformed_and_unknown_options(
    plugin: ModuleType, option: str, value: Any
) -> None:
    valid, refused = plugin.parse_options({option: value})
    assert option in refused and option not in valid
