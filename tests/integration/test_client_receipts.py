"""Delivery receipts in the Python client (``Client.subscribe(..., receipts=True)``,
docs/client-python.md "Delivery receipts") against a real node on port 0.

What the node knows is read from its metrics and its session registry; the
client's side of the wire from the node's frame counters. Waits are on
conditions with a timeout, never sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from rtcs.client import Client, Connected, Message, Reconnect, SessionLost
from rtcs.gateway.handle import ConnectionHandle
from tests.integration.conftest import TIMEOUT, Node, metric, wait_until

NodeFactory = Callable[..., Awaitable[Node]]
FAST = Reconnect(base=0.01, cap=0.05)
SETTINGS = {"session.receipt_timeout": 0.5, "session.receipt_attempts": 3}


@pytest.fixture
async def node(node_factory: NodeFactory) -> Node:
    return await node_factory(**SETTINGS)


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    made: list[Client] = []

    async def make(url: str, token: str, **options: Any) -> Client:
        client = Client(url, token, **options)
        made.append(client)
        await client.connect()
        return client

    yield make
    for client in made:
        await client.close()


def server_side(node: Node, client: Client) -> ConnectionHandle:
    gateway = node.app.gateway
    assert gateway is not None
    (handle,) = [h for h in gateway.handles if h.connection_id == client.connection_id]
    return handle


async def take(inbox: AsyncIterator[Message], count: int) -> list[Message]:
    async with asyncio.timeout(TIMEOUT):
        return [await anext(inbox) for _ in range(count)]


def pending(node: Node) -> float:
    return metric(node, "rtcs_receipts_pending")


def receipts_sent(node: Node) -> float:
    return metric(node, "rtcs_messages_in_total", type="received")


async def test_what_the_application_takes_is_acknowledged_in_one_receipt(
    node: Node, clients: Callable[..., Awaitable[Client]]
) -> None:
    bob = await clients(node.url, node.token("bob"), receipt_delay=0.2)
    ann = await clients(node.url, node.token("ann"))
    assert (await bob.subscribe("news.>", receipts=True)).topic == "news.>"
    assert bob.receipt_subscriptions == frozenset({"news.>"})
    for i in range(5):
        await ann.publish("news.eu", i)
    # Read from the socket, not taken: no receipt, so rtcs sends them again
    # (and the client drops the copies: it holds them already).
    await wait_until(lambda: metric(node, "rtcs_redeliveries_total") >= 5)
    assert pending(node) == 5 and receipts_sent(node) == 0
    got = await take(bob.messages(), 5)
    assert [(m.seq, m.data, m.redelivered) for m in got] == [(i + 1, i, False) for i in range(5)]
    await wait_until(lambda: pending(node) == 0, message="the receipt reached the node")
    assert receipts_sent(node) == 1  # one cumulative receipt for the five
    assert metric(node, "rtcs_errors_total", code="bad_request") == 0


async def test_a_batch_of_taken_messages_is_acknowledged_at_once(
    node: Node, clients: Callable[..., Awaitable[Client]]
) -> None:
    # A delay far longer than the test: only the batch size sends the receipt.
    bob = await clients(node.url, node.token("bob"), receipt_delay=60, receipt_batch=3)
    ann = await clients(node.url, node.token("ann"))
    await bob.subscribe("news.>", receipts=True)
    for i in range(3):
        await ann.publish("news.eu", i)
    await take(bob.messages(), 3)
    await wait_until(lambda: pending(node) == 0, message="the batch's receipt")
    assert receipts_sent(node) == 1


async def test_a_redelivered_copy_is_dropped_and_acknowledged_again(
    node: Node, clients: Callable[..., Awaitable[Client]]
) -> None:
    bob = await clients(node.url, node.token("bob"), receipt_delay=0.2, reconnect=FAST)
    ann = await clients(node.url, node.token("ann"))
    await bob.subscribe("news.>", receipts=True)
    await ann.publish("news.eu", "first")
    inbox = bob.messages()
    (first,) = await take(inbox, 1)
    # Dropped before the receipt went out (in the same turn as the take): the
    # resume redelivers it, marked, to a client that already handed it on.
    server_side(node, bob).abort()
    await wait_until(lambda: metric(node, "rtcs_redeliveries_total") == 1)
    await wait_until(lambda: pending(node) == 0, message="the copy acknowledged")
    await ann.publish("news.eu", "second")
    (second,) = await take(inbox, 1)
    assert (first.seq, second.seq, second.data, second.redelivered) == (1, 2, "second", False)
    assert metric(node, "rtcs_resumes_total", result="resumed") == 1


async def test_messages_of_a_subscription_without_receipts_are_not_acknowledged(
    node: Node, clients: Callable[..., Awaitable[Client]]
) -> None:
    bob = await clients(node.url, node.token("bob"), receipt_delay=0.05)
    ann = await clients(node.url, node.token("ann"))
    await bob.subscribe("news.>")
    await ann.publish("news.eu", 1)
    await take(bob.messages(), 1)
    await bob.subscribe("news.>", receipts=True)  # from now on
    await ann.publish("news.eu", 2)
    (message,) = await take(bob.messages(), 1)
    assert message.seq == 2
    await wait_until(lambda: receipts_sent(node) == 1)
    await bob.ping()
    assert receipts_sent(node) == 1  # only after receipts were asked for
    await bob.subscribe("news.>")  # off again
    assert bob.receipt_subscriptions == frozenset()
    session = node.app.ctx.sessions.get(bob.session_id or "") if node.app.ctx else None
    assert session is not None
    assert session.receipts is None or not session.receipts.patterns


async def test_a_lost_session_subscribes_again_with_receipts_and_never_acks_old_seqs(
    node_factory: NodeFactory, clients: Callable[..., Awaitable[Client]]
) -> None:
    node = await node_factory(**SETTINGS, **{"session.ttl": 0.2, "session.reap_interval": 0.05})
    ctx = node.app.ctx
    assert ctx is not None
    gate = asyncio.Event()
    gate.set()

    async def token() -> str:
        await gate.wait()
        return node.token("bob")

    bob = await clients(node.url, token, reconnect=FAST, receipt_delay=0.05)
    ann = await clients(node.url, node.token("ann"))
    events: list[object] = []

    async def collect() -> None:
        async for event in bob.events():
            events.append(event)

    collector = asyncio.create_task(collect())
    await bob.subscribe("news.>", receipts=True)
    for i in range(3):
        await ann.publish("news.eu", f"old {i}")
    await wait_until(lambda: bob.last_seq == 3)  # read, left in the inbox
    old = bob.session_id
    gate.clear()
    server_side(node, bob).abort()
    await wait_until(lambda: ctx.sessions.get(old or "") is None)
    gate.set()
    await wait_until(lambda: any(isinstance(e, SessionLost) for e in events))
    await bob.ping()  # the subscription is back, with receipts
    new = ctx.sessions.get(bob.session_id or "")
    assert new is not None and new.receipts is not None
    assert new.receipts.patterns == {"news.>"}
    await ann.publish("news.eu", "new")
    got = await take(bob.messages(), 4)
    assert [(m.seq, m.data) for m in got] == [(1, "old 0"), (2, "old 1"), (3, "old 2"), (1, "new")]
    await wait_until(lambda: pending(node) == 0, message="the new session's message acknowledged")
    # The old session's seqs were never sent to the new one (3 would be ahead).
    assert metric(node, "rtcs_errors_total", code="bad_request") == 0
    assert [e.resumed for e in events if isinstance(e, Connected)] == [False, False]
    collector.cancel()
