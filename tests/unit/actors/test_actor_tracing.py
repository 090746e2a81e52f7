"""Route handlers with tracing on and off, on the stock simple base and the asyncio base.

Traced requests (what the connection actor sends while tracing is on) get an
``rtcs.route`` span under their ``rtcs.receive``, a fan-out an ``rtcs.deliver``
span with its size, matching rules an ``rtcs.rules`` span; an envelope's
``traceparent`` continues the trace. With tracing off the handlers hold no
tracer, and untraced requests make no span even while tracing is on.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from thespian.actors import ActorAddress

from rtcs.actors.messages import (
    RemoteEnvelope,
    RouteDirect,
    RoutePublish,
    RouteRoomBroadcast,
    RouteSubscribe,
    RouteWideBroadcast,
)
from rtcs.actors.routing import DirectHandler, TopicHandler
from rtcs.actors.routing.handler import (
    TracedRoutePublish,
    frame_attributes,
    traced_request,
)
from rtcs.backends.base import Envelope
from rtcs.config.settings import TracingSettings
from rtcs.protocol import codec
from rtcs.protocol.frames import BroadcastFilter
from rtcs.rules import load_rules
from rtcs.sessions import Session
from rtcs.tracing import TRACING_KEY, Tracing, build_tracing, tracing_of, use_tracing
from tests.unit.actors.actor_bed import ActorBed, RecordingSink

RULES = """
[[rule]]
name = "tag"
topic = "news.>"
transform = { set = { "data.tagged" = true } }
"""


class ProbedTopicHandler(TopicHandler):
    """A TopicHandler that shows the tracing it was configured with (in ``ctx.extra``)."""

    def configured(self) -> None:
        super().configured()
        self.ctx.extra["probe.tracing"] = (self.tracing, self.trace)


def traced(bed: ActorBed) -> io.StringIO:
    """Turn tracing on in ``bed``'s context (console exporter); where its spans go."""
    out = io.StringIO()
    use_tracing(bed.ctx, build_tracing(TracingSettings(exporter="console"), "node-t", out=out))
    return out


def spans(out: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def hex_id(value: int, digits: int) -> str:
    return f"0x{value:0{digits}x}"


async def subscribed(bed: ActorBed, topics: ActorAddress, sink: RecordingSink, topic: str) -> None:
    session = bed.ctx.sessions.by_connection(sink.connection_id)
    assert session is not None
    bed.tell(topics, RouteSubscribe(session, topic, "s"))
    await sink.wait_type("subscribed")


async def test_tracing_off_leaves_the_handlers_without_a_tracer(bed: ActorBed) -> None:
    topics = bed.start(ProbedTopicHandler)
    publisher, p_sink = bed.session("pub")
    _, sink = bed.session("alice")
    await subscribed(bed, topics, sink, "news")
    bed.tell(topics, RoutePublish(publisher, "news", 1, 1))
    await p_sink.wait_type("ack")
    assert bed.ctx.extra["probe.tracing"] == (None, None)
    assert tracing_of(bed.ctx) is None and TRACING_KEY not in bed.ctx.extra
    assert [m["data"] for m in sink.messages()] == [1]


async def test_a_traced_publish_is_route_rules_and_deliver_under_its_receive(
    bed: ActorBed,
) -> None:
    out = traced(bed)
    bed.ctx.rules = load_rules(RULES, "rules.toml")
    tracing = tracing_of(bed.ctx)
    assert tracing is not None
    topics = bed.start(ProbedTopicHandler)
    publisher, p_sink = bed.session("pub")
    _, a_sink = bed.session("alice")
    _, b_sink = bed.session("bob")
    await subscribed(bed, topics, a_sink, "news.>")
    await subscribed(bed, topics, b_sink, "news.a")
    assert bed.ctx.extra["probe.tracing"] == (tracing, None)

    receive = tracing.receive({"rtcs.frame_type": "publish"})
    bed.tell(topics, traced_request(RoutePublish(publisher, "news.a", {"x": 1}, 7), receive))
    receive.end()

    assert (await p_sink.wait_type("ack"))["id"] == 7
    assert a_sink.messages()[0]["data"] == {"x": 1, "tagged": True}
    by_name = {span["name"]: span for span in spans(out)}
    assert set(by_name) == {"rtcs.receive", "rtcs.route", "rtcs.rules", "rtcs.deliver"}
    trace_id = hex_id(receive.get_span_context().trace_id, 32)
    assert {span["context"]["trace_id"] for span in by_name.values()} == {trace_id}
    route = by_name["rtcs.route"]
    assert route["parent_id"] == hex_id(receive.get_span_context().span_id, 16)
    assert route["attributes"] == {
        "rtcs.frame_type": "publish",
        "rtcs.kind": "topic",
        "rtcs.topic": "news.a",
    }
    for child in ("rtcs.rules", "rtcs.deliver"):
        assert by_name[child]["parent_id"] == route["context"]["span_id"]
    assert by_name["rtcs.rules"]["attributes"]["rtcs.rules.matched"] == ["tag"]
    assert by_name["rtcs.deliver"]["attributes"] == {"rtcs.kind": "topic", "rtcs.fanout_size": 2}


async def test_an_untraced_publish_makes_no_span_while_tracing_is_on(bed: ActorBed) -> None:
    out = traced(bed)
    topics = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    _, sink = bed.session("alice")
    await subscribed(bed, topics, sink, "news")
    bed.tell(topics, RoutePublish(publisher, "news", 1, 1))
    await p_sink.wait_type("ack")
    assert sink.messages() and spans(out) == []


async def test_an_envelope_with_a_trace_is_delivered_in_that_trace(bed: ActorBed) -> None:
    out = traced(bed)
    topics = bed.start(TopicHandler)
    _, sink = bed.session("alice")
    await subscribed(bed, topics, sink, "news")
    other = build_tracing(TracingSettings(exporter="console"), "node-o", out=io.StringIO())
    assert other is not None
    route = other.route(None, {})
    tail = codec.message_tail(topic="news", data=5, ts=1)
    envelope = Envelope("node-o", "topic", "news", tail, trace=other.traceparent(route))
    bed.tell(topics, RemoteEnvelope(envelope))
    bed.tell(topics, RemoteEnvelope(Envelope("node-o", "topic", "news", tail)))
    await sink.wait_for(3)
    (deliver,) = spans(out)
    assert deliver["name"] == "rtcs.deliver" and deliver["kind"] == "SpanKind.CONSUMER"
    assert deliver["context"]["trace_id"] == hex_id(route.get_span_context().trace_id, 32)
    assert deliver["parent_id"] == hex_id(route.get_span_context().span_id, 16)
    assert deliver["attributes"] == {
        "rtcs.kind": "topic",
        "rtcs.fanout_size": 1,
        "rtcs.from_node": "node-o",
    }


async def test_a_traced_direct_message_is_a_route_and_a_deliver_span(bed: ActorBed) -> None:
    out = traced(bed)
    tracing = tracing_of(bed.ctx)
    assert isinstance(tracing, Tracing)
    direct = bed.start(DirectHandler)
    sender, s_sink = bed.session("alice")
    _, b_sink = bed.session("bob")
    receive = tracing.receive({})
    bed.tell(direct, traced_request(RouteDirect(sender, "bob", None, "hi", 3), receive))
    receive.end()
    await s_sink.wait_type("ack")
    assert b_sink.messages()[0]["data"] == "hi"
    names = {span["name"]: span for span in spans(out)}
    assert names["rtcs.route"]["attributes"]["rtcs.to_user"] == "bob"
    assert names["rtcs.deliver"]["attributes"] == {"rtcs.kind": "direct", "rtcs.fanout_size": 1}


def test_frame_attributes_and_traced_requests() -> None:
    session = Session("s-1", "alice", (), 10)
    publish = RoutePublish(session, "news", {"x": 1}, 1)
    assert frame_attributes(publish) == {
        "rtcs.frame_type": "publish",
        "rtcs.kind": "topic",
        "rtcs.topic": "news",
    }
    assert frame_attributes(RouteDirect(session, None, "c-1", 1, 1)) == {
        "rtcs.frame_type": "send",
        "rtcs.kind": "direct",
        "rtcs.to_connection": "c-1",
    }
    assert frame_attributes(RouteRoomBroadcast(session, "lobby", 1, 1)) == {
        "rtcs.frame_type": "broadcast",
        "rtcs.kind": "room",
        "rtcs.room": "lobby",
    }
    wide = RouteWideBroadcast(session, BroadcastFilter(("admin",), ()), 1, 1)
    assert frame_attributes(wide) == {"rtcs.frame_type": "broadcast", "rtcs.kind": "filter"}
    assert frame_attributes(RouteSubscribe(session, "news", 1)) is None
    marker: Any = object()
    copy = traced_request(publish, marker)
    assert isinstance(copy, TracedRoutePublish) and isinstance(copy, RoutePublish)
    assert (copy.session, copy.topic, copy.data, copy.request_id) == (session, "news", {"x": 1}, 1)
    assert copy.trace is marker
    with pytest.raises(KeyError):
        traced_request(RouteSubscribe(session, "news", 1), marker)
