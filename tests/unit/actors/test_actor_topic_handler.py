"""TopicHandler on the stock simple base and on the asyncio base."""

from __future__ import annotations

import asyncio

import pytest
from thespian.actors import ActorExitRequest, WakeupMessage

from rtcs.actors.messages import (
    FanoutContinue,
    RemoteEnvelope,
    RoutePublish,
    RouteSubscribe,
    RouteUnsubscribe,
    UnindexSession,
)
from rtcs.actors.routing import TopicHandler
from rtcs.backends.base import Envelope
from rtcs.protocol import codec
from tests.unit.actors.actor_bed import FANOUT_CHUNK, ActorBed, RecordingSink


class CountingTopicHandler(TopicHandler):
    """A TopicHandler that counts the turns a fan-out is continued over."""

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: object) -> None:
        assert self.ctx is not None
        if isinstance(msg.payload, FanoutContinue):
            self.ctx.extra["continued"] = self.ctx.extra.get("continued", 0) + 1
        super().receiveMsg_WakeupMessage(msg, sender)


async def subscribe(bed: ActorBed, handler: object, sink: RecordingSink, *args: object) -> None:
    """Tell ``RouteSubscribe``s and wait for their ``subscribed`` replies."""
    session = bed.ctx.sessions.by_connection(sink.connection_id)
    assert session is not None
    before = len(sink.raw)
    for i, pattern in enumerate(args):
        bed.tell(handler, RouteSubscribe(session, str(pattern), f"s{i}"))
    await sink.wait_for(before + len(args))


async def many_subscribers(bed: ActorBed, topics: object, topic: str) -> list[RecordingSink]:
    """More sessions subscribed to ``topic`` than three fan-out chunks: their sinks."""
    sinks = []
    for i in range(3 * FANOUT_CHUNK + 1):
        _, sink = bed.session(f"user{i}")
        await subscribe(bed, topics, sink, topic)
        sinks.append(sink)
    return sinks


async def test_subscribe_replies_subscribed_and_records_the_pattern(bed: ActorBed) -> None:
    topics = bed.start(TopicHandler)
    session, sink = bed.session("alice")

    bed.tell(topics, RouteSubscribe(session, "news.*", 7))

    assert await sink.wait_for(1) == [{"type": "subscribed", "id": 7, "topic": "news.*"}]
    assert session.subscriptions == {"news.*"}


async def test_publish_delivers_with_per_session_seq_then_acks(bed: ActorBed) -> None:
    topics = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    _, a_sink = bed.session("alice")
    bob, b_sink = bed.session("bob")
    await subscribe(bed, topics, a_sink, "news.a")
    await subscribe(bed, topics, b_sink, "news.>")
    # Bob has had a message already: seq is per session, not per topic.
    bob.deliver(codec.message_tail(topic="other", data=0, ts=1))
    del bed.journal[:]

    bed.tell(topics, RoutePublish(publisher, "news.a", {"x": 1}, "p1"))

    assert await p_sink.wait_for(1) == [{"type": "ack", "id": "p1"}]
    (a_msg,) = a_sink.messages()
    assert a_msg == {
        "type": "message",
        "seq": 1,
        "topic": "news.a",
        "from": "pub",
        "data": {"x": 1},
        "ts": a_msg["ts"],
    }
    assert [m["seq"] for m in b_sink.messages()] == [1, 2]
    assert b_sink.messages()[1]["data"] == {"x": 1}
    # The ack comes after every local delivery (docs/protocol.md: ack once routed).
    assert [who for who, _ in bed.journal][-1] == p_sink.connection_id
    assert len(bed.journal) == 3


async def test_overlapping_patterns_deliver_once(bed: ActorBed) -> None:
    topics = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    _, sink = bed.session("alice")
    await subscribe(bed, topics, sink, "a.b.c", "a.*.c", "a.>", ">")

    bed.tell(topics, RoutePublish(publisher, "a.b.c", 1, 1))

    await p_sink.wait_for(1)
    assert [m["seq"] for m in sink.messages()] == [1]


async def test_large_fanout_runs_over_several_turns_and_keeps_order(bed: ActorBed) -> None:
    topics = bed.start(CountingTopicHandler)
    publisher, p_sink = bed.session("pub")
    sinks = await many_subscribers(bed, topics, "big")
    recipients = len(sinks)

    # Told back to back: on the asyncio base the second publish arrives while
    # the first fan-out is still in progress, and must queue behind it.
    bed.tell(topics, RoutePublish(publisher, "big", "first", 1))
    bed.tell(topics, RoutePublish(publisher, "big", "second", 2))

    assert await p_sink.wait_for(2) == [{"type": "ack", "id": 1}, {"type": "ack", "id": 2}]
    for sink in sinks:
        assert [(m["seq"], m["data"]) for m in sink.messages()] == [(1, "first"), (2, "second")]
    # 2 x 13 deliveries in chunks of 4: 7 turns at least, of which at most
    # the 2 publishes' own turns are not continuations.
    assert bed.ctx.extra["continued"] >= 5
    # Each ack follows every delivery of its own message.
    journal = bed.journal[-2 * (recipients + 1) :]
    first_ack = journal.index((p_sink.connection_id, {"type": "ack", "id": 1}))
    firsts = [i for i, (_, f) in enumerate(journal) if f.get("data") == "first"]
    assert len(firsts) == recipients and max(firsts) < first_ack


async def test_a_burst_to_many_is_one_job_and_each_recipient_gets_it_in_one_turn(
    bed: ActorBed,
) -> None:
    if bed.base != "asyncio":
        pytest.skip("the stock base runs a tell to completion: there is no later turn")
    topics = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    sinks = await many_subscribers(bed, topics, "big")
    for n in range(5):
        bed.tell(topics, RoutePublish(publisher, "big", n, n))
    assert [f["id"] for f in await p_sink.wait_for(5)] == [0, 1, 2, 3, 4]
    for sink in sinks:
        assert [m["data"] for m in sink.messages()] == [0, 1, 2, 3, 4]
    # Every recipient's 5 messages are consecutive in the journal: one turn each.
    journal = [cid for cid, frame in bed.journal if frame.get("type") == "message"]
    runs = [cid for i, cid in enumerate(journal) if i == 0 or journal[i - 1] != cid]
    assert len(runs) == len(sinks)


async def test_a_subscription_between_two_publishes_splits_the_job(bed: ActorBed) -> None:
    topics = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    sinks = await many_subscribers(bed, topics, "big")
    late, late_sink = bed.session("late")
    bed.tell(topics, RoutePublish(publisher, "big", "before", 1))
    bed.tell(topics, RouteSubscribe(late, "big", 7))
    bed.tell(topics, RoutePublish(publisher, "big", "after", 2))
    await p_sink.wait_for(2)
    assert [m["data"] for m in late_sink.messages()] == ["after"]
    assert all([m["data"] for m in s.messages()] == ["before", "after"] for s in sinks)


async def test_the_loop_runs_between_fanout_chunks(bed: ActorBed) -> None:
    """A large fan-out leaves the event loop free between chunks (to answer
    pings and read sockets), even when messages are queued behind it."""
    if bed.base != "asyncio":
        pytest.skip("the stock base runs a tell to completion: there is no loop to yield to")
    topics = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    sinks = await many_subscribers(bed, topics, "big")
    seen: list[int] = []
    loop = asyncio.get_running_loop()

    def loop_turn() -> None:
        delivered = sum(len(sink.messages()) for sink in sinks)
        seen.append(delivered)
        if delivered < len(sinks) and len(seen) < 10_000:
            loop.call_soon(loop_turn)

    bed.tell(topics, RoutePublish(publisher, "big", "x", 1))
    # Queued right behind the fan-out: must not keep the loop from running.
    for n in range(50):
        bed.tell(topics, RouteSubscribe(publisher, f"other{n}", n))
    loop.call_soon(loop_turn)
    await p_sink.wait_for(51)
    assert any(0 < n < len(sinks) for n in seen)  # the loop ran mid-fan-out
    assert all(len(sink.messages()) == 1 for sink in sinks)


async def test_unsubscribe_stops_delivery(bed: ActorBed) -> None:
    topics = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    alice, sink = bed.session("alice")
    await subscribe(bed, topics, sink, "t")

    bed.tell(topics, RouteUnsubscribe(alice, "t", 9))
    assert (await sink.wait_for(2))[1] == {"type": "unsubscribed", "id": 9, "topic": "t"}
    bed.tell(topics, RoutePublish(publisher, "t", 1, 1))

    await p_sink.wait_for(1)
    assert sink.messages() == []
    assert alice.subscriptions == set()


async def test_unindexed_session_gets_nothing(bed: ActorBed) -> None:
    topics = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    gone, gone_sink = bed.session("gone")
    _, stays_sink = bed.session("stays")
    await subscribe(bed, topics, gone_sink, "t")
    await subscribe(bed, topics, stays_sink, "t")

    # What the connection supervisor does when a session's TTL runs out.
    bed.ctx.sessions.remove(gone)
    bed.tell(topics, UnindexSession(gone))
    bed.tell(topics, RoutePublish(publisher, "t", 1, 1))

    await p_sink.wait_for(1)
    assert gone.seq == 0 and gone_sink.messages() == []
    assert len(stays_sink.messages()) == 1


async def test_restarted_handler_rebuilds_its_index_from_the_registry(bed: ActorBed) -> None:
    first = bed.start(TopicHandler)
    publisher, p_sink = bed.session("pub")
    _, a_sink = bed.session("alice")
    bob, b_sink = bed.session("bob")
    carol, c_sink = bed.session("carol")
    await subscribe(bed, first, a_sink, "news.>")
    await subscribe(bed, first, b_sink, "news.x")
    await subscribe(bed, first, c_sink, "news.x")
    bed.tell(first, RouteUnsubscribe(bob, "news.x", "u"))
    await b_sink.wait_for(2)
    # A detached session keeps its subscriptions and buffers its messages.
    bed.ctx.sessions.detach(carol, 0.0)
    bed.tell(first, ActorExitRequest())

    # A fresh actor with the same context, as a supervisor restart creates it.
    second = bed.start(TopicHandler)
    bed.tell(second, RoutePublish(publisher, "news.x", "after", 1))

    assert await p_sink.wait_for(1) == [{"type": "ack", "id": 1}]
    assert [m["data"] for m in a_sink.messages()] == ["after"]
    assert b_sink.messages() == []
    assert carol.seq == 1 and len(carol.buffer) == 1 and c_sink.messages() == []


async def test_remote_envelope_reaches_local_subscribers_without_ack(bed: ActorBed) -> None:
    topics = bed.start(TopicHandler)
    _, sink = bed.session("alice")
    await subscribe(bed, topics, sink, "news.*")
    tail = codec.message_tail(topic="news.a", data="from afar", ts=5)

    bed.tell(topics, RemoteEnvelope(Envelope("other-node", "topic", "news.a", tail)))

    frames = await sink.wait_for(2)
    assert frames[1] == {
        "type": "message",
        "seq": 1,
        "topic": "news.a",
        "data": "from afar",
        "ts": 5,
    }
