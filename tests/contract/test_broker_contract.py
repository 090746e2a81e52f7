"""Broker conformance: every implementation delivers the same way."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from rtcs.backends.base import Envelope
from rtcs.errors import Unavailable

if TYPE_CHECKING:
    from tests.contract.conftest import Harness, Node

    StartNode = Callable[..., Awaitable[Node]]


def env(origin: str, target: str = "news.sport", tail: bytes = b'"x"}') -> Envelope:
    return Envelope(origin=origin, kind="topic", target=target, tail=tail)


async def test_a_shared_bus_broker_is_distributed(impl: Harness) -> None:
    assert impl.broker().distributed is True


async def test_healthy_only_between_start_and_close(impl: Harness) -> None:
    broker = impl.broker()
    assert not broker.healthy()
    await broker.start("n1", lambda envelope: None)
    assert broker.healthy()
    await broker.close()
    assert not broker.healthy()


async def test_publish_reaches_every_other_node(start_node: StartNode) -> None:
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    sent = env("a")
    await a.broker.publish(sent)
    assert await b.inbox.wait_for(1) == [sent]
    assert await c.inbox.wait_for(1) == [sent]


async def test_no_echo_to_the_origin(start_node: StartNode) -> None:
    a, b = await start_node("a"), await start_node("b")
    await a.broker.publish(env("a", tail=b"1"))
    await b.inbox.wait_for(1)
    # b saw a's envelope before publishing the marker, so an echo of it would
    # reach a before the marker does.
    marker = env("b", tail=b"marker")
    await b.broker.publish(marker)
    assert await a.inbox.wait_for(1) == [marker]
    assert b.inbox.items == [env("a", tail=b"1")]


async def test_every_field_survives_the_trip(start_node: StartNode) -> None:
    a = await start_node("a")
    b = await start_node("b", (("topic", "chat.>"), ("room", "lobby")))
    sent = [
        (Envelope("a", "topic", "chat.room-1", b'"data":{"k":[1,2]}}'), None),
        (Envelope("a", "room", "lobby", b"\x00\xff not utf-8 \xc3"), None),
        (Envelope("a", "presence", "lobby", b"{}"), None),
        (Envelope("a", "user", "alice", b""), "b"),
        (Envelope("a", "connection", "c-123", b"1"), "b"),
        (Envelope("a", "global", "", b"2"), None),
        (Envelope("a", "filter", "", b"3", roles=("admin", "ops"), users=("bob",)), None),
    ]
    for envelope, node in sent:
        await a.broker.publish(envelope, node)
    assert await b.inbox.wait_for(len(sent)) == [envelope for envelope, _ in sent]


# -- interest and node channels --------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "topic"),
    [("chat.x", "chat.x"), ("chat.>", "chat.a.b"), ("chat.*.y", "chat.a.y"), ("*.y", "any.y")],
)
async def test_a_node_receives_what_it_listens_to_as_soon_as_listen_returns(
    start_node: StartNode, pattern: str, topic: str
) -> None:
    a = await start_node("a", ())
    b = await start_node("b", ())
    await b.broker.listen("topic", pattern)
    # listen returned: the subscription is live, a publish right now arrives.
    sent = Envelope("a", "topic", topic, b"1")
    await a.broker.publish(sent)
    assert await b.inbox.wait_for(1) == [sent]


async def test_room_messages_and_presence_reach_a_node_listening_to_the_room(
    start_node: StartNode,
) -> None:
    a = await start_node("a", ())
    b = await start_node("b", (("room", "lobby"),))
    sent = [Envelope("a", "room", "lobby", b"1"), Envelope("a", "presence", "lobby", b"2")]
    for envelope in sent:
        await a.broker.publish(envelope)
    assert await b.inbox.wait_for(2) == sent


async def test_an_envelope_for_one_node_reaches_that_node_only(start_node: StartNode) -> None:
    a, b, c = [await start_node(n, ()) for n in "abc"]
    to_b = Envelope("a", "connection", "c-1", b"for b")
    to_c = Envelope("a", "user", "alice", b"for c")
    await a.broker.publish(to_b, "b")
    await a.broker.publish(to_c, "c")
    assert await b.inbox.wait_for(1) == [to_b]
    assert await c.inbox.wait_for(1) == [to_c]
    # A later broadcast arrives after them (same origin, in order): nothing
    # else reached b or c meanwhile.
    marker = Envelope("a", "global", "", b"marker")
    await a.broker.publish(marker)
    assert await b.inbox.wait_for(2) == [to_b, marker]
    assert await c.inbox.wait_for(2) == [to_c, marker]


async def test_global_and_filter_need_no_listen(start_node: StartNode) -> None:
    a, b = await start_node("a", ()), await start_node("b", ())
    sent = [Envelope("a", "global", "", b"1"), Envelope("a", "filter", "", b"2", roles=("x",))]
    for envelope in sent:
        await a.broker.publish(envelope)
    assert await b.inbox.wait_for(2) == sent


async def test_listen_unlisten_and_reset_are_counted_and_harmless(start_node: StartNode) -> None:
    a, b = await start_node("a", ()), await start_node("b", ())
    broker = b.broker
    await broker.listen("topic", "news.x")
    await broker.listen("topic", "news.x")
    broker.unlisten("topic", "news.x")  # one listen left
    broker.unlisten("topic", "never.listened")
    broker.unlisten("room", "nowhere")
    sent = Envelope("a", "topic", "news.x", b"1")
    await a.broker.publish(sent)
    assert await b.inbox.wait_for(1) == [sent]
    broker.reset("topic")
    broker.reset("room")
    await broker.listen("topic", "news.x")  # listening again after a reset works
    again = Envelope("a", "topic", "news.x", b"2")
    await a.broker.publish(again)
    assert await b.inbox.wait_for(2) == [sent, again]


async def test_listen_on_a_closed_broker_is_unavailable(start_node: StartNode) -> None:
    a = await start_node("a", ())
    await a.broker.close()
    with pytest.raises(Unavailable):
        await a.broker.listen("topic", "news.x")


async def test_deliveries_keep_publish_order(start_node: StartNode) -> None:
    a, b = await start_node("a"), await start_node("b")
    sent = [env("a", tail=str(i).encode()) for i in range(200)]
    for envelope in sent:
        await a.broker.publish(envelope)
    assert await b.inbox.wait_for(len(sent)) == sent


async def test_deliver_runs_on_the_event_loop_thread(start_node: StartNode) -> None:
    a, b = await start_node("a"), await start_node("b")
    await a.broker.publish(env("a"))
    await b.inbox.wait_for(1)
    assert b.inbox.threads == {threading.get_ident()}


async def test_publish_after_close_is_unavailable(start_node: StartNode) -> None:
    a = await start_node("a")
    await a.broker.close()
    with pytest.raises(Unavailable):
        await a.broker.publish(env("a"))


async def test_publish_before_start_is_unavailable(impl: Harness) -> None:
    with pytest.raises(Unavailable):
        await impl.broker().publish(env("a"))


async def test_close_is_idempotent(start_node: StartNode) -> None:
    a = await start_node("a")
    await a.broker.close()
    await a.broker.close()
    assert not a.broker.healthy()


async def test_a_closed_node_receives_nothing(start_node: StartNode) -> None:
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    await a.broker.close()
    await b.broker.publish(env("b", tail=b"1"))
    await b.broker.publish(env("b", tail=b"2"))
    await c.inbox.wait_for(2)
    assert a.inbox.items == []


async def test_starting_twice_is_refused(start_node: StartNode) -> None:
    a = await start_node("a")
    with pytest.raises(RuntimeError):
        await a.broker.start("a2", lambda envelope: None)


async def test_other_nodes_keep_working_when_one_closes(start_node: StartNode) -> None:
    a, b, c = await start_node("a"), await start_node("b"), await start_node("c")
    await b.broker.close()
    sent = env("a")
    await a.broker.publish(sent)
    assert await c.inbox.wait_for(1) == [sent]
