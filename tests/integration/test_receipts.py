"""Delivery receipts (docs/protocol.md "Delivery receipts"): a real node, raw
websockets clients.

The redelivery timeout is short (``RECEIPT_TIMEOUT``). A "nothing is
redelivered" check never sleeps: it waits for something that can only come
after the timeout has passed, the first redelivery of a later message (a
session's redeliveries go in ``seq`` order, so anything older due by then
would have come first), or for a metric the round updates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.integration.conftest import (
    SHARED_BACKENDS,
    TIMEOUT,
    Client,
    Node,
    detach,
    metric,
    start_pair,
    wait_until,
)

RECEIPT_TIMEOUT = 0.5
ATTEMPTS = 2
SETTINGS = {
    "session.receipt_timeout": RECEIPT_TIMEOUT,
    "session.receipt_attempts": ATTEMPTS,
}

NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def node(node_factory: NodeFactory) -> Node:
    return await node_factory(**SETTINGS)


async def subscribe(client: Client, topic: str, **extra: Any) -> None:
    await client.request({"type": "subscribe", "topic": topic, **extra}, "subscribed")


async def messages(client: Client, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """The next ``count`` message frames, in arrival order (other frames are skipped)."""
    found: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(found) < count:
            frame = await client.recv()
            if frame["type"] == "message":
                found.append(frame)
    return found


async def first_redelivered(client: Client) -> dict[str, Any]:
    """The next message frame marked redelivered; any plain message before it is a failure."""
    async with asyncio.timeout(TIMEOUT):
        while True:
            frame = await client.recv()
            if frame["type"] != "message":
                continue
            assert frame.get("redelivered") is True, frame
            return frame


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [frame["seq"] for frame in frames]


async def received(client: Client, seq: int) -> None:
    """Send a receipt, then a round trip, so the server has taken it."""
    await client.send({"type": "received", "seq": seq})
    await client.request({"type": "ping"}, "pong")


async def test_unacknowledged_messages_come_again_in_order_with_their_seq(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    for i in range(3):
        await bob.publish("news.eu", i)
    first = await messages(alice, 3)
    assert seqs(first) == [1, 2, 3]
    assert all("redelivered" not in frame for frame in first)
    again = await messages(alice, 3)
    assert seqs(again) == [1, 2, 3]
    for before, after in zip(first, again, strict=True):
        assert after["redelivered"] is True
        assert {k: v for k, v in after.items() if k != "redelivered"} == before
    assert metric(node, "rtcs_redeliveries_total") == 3
    assert metric(node, "rtcs_receipts_pending") == 3


async def test_a_cumulative_receipt_ends_redelivery(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    for i in range(3):
        await bob.publish("news.eu", i)
    assert seqs(await messages(alice, 3)) == [1, 2, 3]
    await received(alice, 2)  # 1 and 2
    assert metric(node, "rtcs_receipts_pending") == 1
    assert seqs(await messages(alice, 1)) == [3]  # only 3 comes again
    await received(alice, 3)
    assert metric(node, "rtcs_receipts_pending") == 0
    # A later message left unacknowledged comes again after the timeout: by
    # then, anything older still due would have come first.
    await bob.publish("news.eu", "later")
    assert (await messages(alice, 1))[0]["seq"] == 4
    assert (await first_redelivered(alice))["seq"] == 4
    await received(alice, 4)
    assert metric(node, "rtcs_receipts_pending") == 0


async def test_redelivery_is_bounded_then_the_message_is_given_up(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    await bob.publish("news.eu", "x")
    assert seqs(await messages(alice, 1)) == [1]
    for _ in range(ATTEMPTS):
        assert (await first_redelivered(alice))["seq"] == 1
    await wait_until(
        lambda: metric(node, "rtcs_receipts_given_up_total", reason="attempts") == 1,
        message="the message given up after its last redelivery",
    )
    assert metric(node, "rtcs_receipts_pending") == 0
    assert metric(node, "rtcs_redeliveries_total") == ATTEMPTS
    # Never again: the next redelivery is of a later message.
    await bob.publish("news.eu", "y")
    assert seqs(await messages(alice, 1)) == [2]
    assert (await first_redelivered(alice))["seq"] == 2


async def test_a_resume_redelivers_what_awaits_a_receipt_up_to_last_seq(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    for i in range(3):
        await bob.publish("news.eu", i)
    assert seqs(await messages(alice, 3)) == [1, 2, 3]
    await received(alice, 1)
    session = await detach(node, alice)
    await bob.publish("news.eu", 3)  # buffered while detached
    again = await node.resume("alice", session, 3, resumed=True, replayed=1)
    frames = await messages(again, 3)
    assert seqs(frames) == [2, 3, 4]
    assert [frame.get("redelivered") for frame in frames] == [True, True, None]
    assert [frame["data"] for frame in frames] == [1, 2, 3]
    await received(again, 4)
    assert metric(node, "rtcs_receipts_pending") == 0


async def test_a_replayed_message_still_needs_its_receipt(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    session = await detach(node, alice)
    await bob.publish("news.eu", "while away")
    again = await node.resume("alice", session, 0, resumed=True, replayed=1)
    (replayed,) = await messages(again, 1)
    assert replayed["seq"] == 1 and "redelivered" not in replayed
    assert (await first_redelivered(again))["seq"] == 1


async def test_messages_of_a_subscription_without_receipts_never_come_again(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "plain.>")
    await subscribe(alice, "both.x")
    await subscribe(alice, "both.*", receipts=True)  # one receipts subscription is enough
    await subscribe(alice, "acked.>", receipts=True)
    await bob.publish("plain.a", "p")
    await bob.publish("both.x", "b")
    assert seqs(await messages(alice, 2)) == [1, 2]
    assert metric(node, "rtcs_receipts_pending") == 1
    assert (await first_redelivered(alice))["seq"] == 2  # 1 would have come first
    await received(alice, 2)
    assert metric(node, "rtcs_redeliveries_total") == 1


async def test_subscribing_again_without_receipts_turns_them_off(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    await subscribe(alice, "other.>", receipts=True)
    await bob.publish("news.eu", 1)
    assert seqs(await messages(alice, 1)) == [1]
    await subscribe(alice, "news.>")  # the latest subscribe decides
    assert metric(node, "rtcs_receipts_pending") == 0
    await bob.publish("news.eu", 2)
    await bob.publish("other.x", 3)
    assert seqs(await messages(alice, 2)) == [2, 3]
    assert (await first_redelivered(alice))["seq"] == 3


async def test_unsubscribing_drops_what_awaited_a_receipt(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    await subscribe(alice, "other.>", receipts=True)
    await bob.publish("news.eu", 1)
    assert seqs(await messages(alice, 1)) == [1]
    assert metric(node, "rtcs_receipts_pending") == 1
    await alice.request({"type": "unsubscribe", "topic": "news.>"}, "unsubscribed")
    assert metric(node, "rtcs_receipts_pending") == 0
    await bob.publish("other.x", 2)
    assert seqs(await messages(alice, 1)) == [2]
    assert (await first_redelivered(alice))["seq"] == 2
    assert metric(node, "rtcs_receipts_given_up_total", reason="attempts") == 0


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "received"},
        {"type": "received", "seq": "3"},
        {"type": "received", "seq": -1},
        {"type": "received", "seq": 1.5},
        {"type": "received", "seq": True},
        {"type": "received", "seq": 2**63},
        {"type": "subscribe", "topic": "news.>", "receipts": "yes"},
        {"type": "subscribe", "topic": "news.>", "receipts": 1},
    ],
)
async def test_malformed_receipts_are_bad_requests(node: Node, frame: dict[str, Any]) -> None:
    alice = await node.client("alice")
    await alice.send({**frame, "id": 9})
    error = await alice.expect("error", id=9)
    assert error["code"] == "bad_request"


async def test_a_receipt_ahead_of_the_session_is_a_bad_request(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    await bob.publish("news.eu", 1)
    await messages(alice, 1)
    await alice.send({"type": "received", "id": "r", "seq": 2})
    error = await alice.expect("error", id="r")
    assert error["code"] == "bad_request" and "ahead" in error["message"]
    assert metric(node, "rtcs_receipts_pending") == 1  # nothing acknowledged


async def test_valid_receipts_are_not_answered_and_spend_no_error_budget(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(**SETTINGS, **{"limits.rate_limit_close_after": 3})
    alice = await node.client("alice")  # no receipt subscription: harmless
    for _ in range(10):
        await alice.send({"type": "received", "id": 1, "seq": 0})
    # The pong is the next frame: no reply, no error, not closed.
    await alice.send({"type": "ping", "id": 2})
    assert await alice.recv() == {"type": "pong", "id": 2}
    assert metric(node, "rtcs_messages_in_total", type="received") == 10


# -- across nodes ---------------------------------------------------------------------


@pytest.fixture(params=SHARED_BACKENDS[:2])
async def pair(request: pytest.FixtureRequest, node_factory: NodeFactory) -> tuple[Node, Node]:
    return await start_pair(request.param, node_factory, **SETTINGS)


async def test_a_resume_on_another_node_keeps_what_awaits_a_receipt(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    alice, bob = await a.client("alice"), await a.client("bob")
    await subscribe(alice, "news.>", receipts=True)
    await subscribe(alice, "plain.>")
    for topic in ("news.eu", "news.us", "plain.x"):
        await bob.publish(topic, topic)
    assert seqs(await messages(alice, 3)) == [1, 2, 3]
    await received(alice, 1)
    session = await detach(a, alice)
    await bob.publish("news.eu", "away")  # appended to the stored session: seq 4
    again = await b.resume("alice", session, 3, resumed=True, replayed=1)
    frames = await messages(again, 2)
    assert [(f["seq"], f.get("redelivered")) for f in frames] == [(2, True), (4, None)]
    assert metric(b, "rtcs_receipts_pending") == 2  # 2 and 4; 3 needs none
    # Both come again on b's timer, 2 first.
    assert seqs([await first_redelivered(again), await first_redelivered(again)]) == [2, 4]
    await received(again, 4)
    assert metric(b, "rtcs_receipts_pending") == 0
