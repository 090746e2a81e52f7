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

    StartNode = Callable[[str], Awaitable[Node]]


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
    a, b = await start_node("a"), await start_node("b")
    sent = [
        Envelope("a", "topic", "chat.room-1", b'"data":{"k":[1,2]}}'),
        Envelope("a", "room", "lobby", b"\x00\xff not utf-8 \xc3"),
        Envelope("a", "user", "alice", b""),
        Envelope("a", "connection", "c-123", b"1"),
        Envelope("a", "global", "", b"2"),
        Envelope("a", "filter", "", b"3", roles=("admin", "ops"), users=("bob",)),
    ]
    for envelope in sent:
        await a.broker.publish(envelope)
    assert await b.inbox.wait_for(len(sent)) == sent


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
