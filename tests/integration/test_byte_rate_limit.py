"""The per-connection byte rate limit over a real socket (docs/protocol.md,
"Limits and close codes"): big frames run out of bytes while small frames at
the same frame rate pass; refused frames are not delivered; persisting closes
4029.

The byte bucket refills at 1 byte per second: over a test's lifetime that is
a few bytes, far less than any frame here, so no timing is assumed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from websockets.exceptions import ConnectionClosed

from tests.integration.conftest import TIMEOUT, Node, metric

NodeFactory = Callable[..., Awaitable[Node]]

BIG = 1000  # characters of a big frame's text
LIMITS = {
    "limits.max_message_size": 1024,
    "limits.byte_rate": 1.0,
    "limits.byte_burst": 3 * BIG + 200,  # three big frames, then 200 bytes
    "limits.rate_limit_close_after": 3,
}


def big_publish(rid: int) -> tuple[str, str]:
    """A publish frame of exactly ``BIG`` characters, and its data."""
    empty = json.dumps({"type": "publish", "id": rid, "topic": "news", "data": ""})
    data = f"big {rid} ".ljust(BIG - len(empty), "x")
    text = json.dumps({"type": "publish", "id": rid, "topic": "news", "data": data})
    assert len(text) == BIG
    return text, data


async def test_big_frames_run_out_of_bytes_small_ones_pass_then_4029(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(**LIMITS)
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")

    bigs = {rid: big_publish(rid) for rid in (1, 2, 3, 4, 7, 8, 9)}
    for rid in (1, 2, 3):
        await alice.send(bigs[rid][0])
    for rid in (1, 2, 3):
        await alice.expect("ack", id=rid)
    await alice.send(bigs[4][0])  # finds 200 bytes left
    await alice.expect("error", id=4, code="rate_limited")
    # Small frames still fit in what is left (the frame bucket has plenty).
    await alice.send({"type": "publish", "id": 5, "topic": "news", "data": "small"})
    await alice.expect("ack", id=5)
    await alice.send({"type": "ping", "id": 6})
    await alice.expect("pong", id=6)
    for rid in (7, 8, 9):  # rejections 2 and 3, then one past the budget
        await alice.send(bigs[rid][0])
    replies = []
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = await alice.recv()
                replies.append((frame["id"], frame.get("code", frame["type"])))
    assert replies == [(7, "rate_limited"), (8, "rate_limited")]
    assert alice.ws.close_code == 4029
    assert alice.ws.close_reason == "rate limit exceeded"

    # Only the accepted publishes were delivered, in order.
    for expected in (bigs[1][1], bigs[2][1], bigs[3][1], "small"):
        assert (await bob.expect("message", topic="news"))["data"] == expected
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()

    assert metric(node, "rtcs_rate_limited_total", limit="bytes") == 4
    assert metric(node, "rtcs_rate_limited_total", limit="frames") == 0
    assert metric(node, "rtcs_errors_total", code="rate_limited") == 3


async def test_same_frame_rate_small_frames_pass_big_frames_do_not(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(**LIMITS)
    big, small, bob = (
        await node.client("big"),
        await node.client("small"),
        await node.client("bob"),
    )
    await bob.subscribe("news")
    count = 5  # the error budget allows 3 rejections: 3 + 2 stays open
    for rid in range(1, count + 1):
        await big.send(big_publish(rid)[0])
        await small.send({"type": "publish", "id": rid, "topic": "news", "data": rid})
    for rid in range(1, count + 1):
        await small.expect("ack", id=rid)
    for rid in range(1, count + 1):
        if rid <= 3:
            await big.expect("ack", id=rid)
        else:
            await big.expect("error", id=rid, code="rate_limited")
    await big.request({"type": "ping"}, "pong")  # small: still within the bytes left

    received: list[object] = []
    while len(received) < 3 + count:
        received.append((await bob.expect("message", topic="news"))["data"])
    assert sorted(d for d in received if isinstance(d, int)) == list(range(1, count + 1))
    assert [d for d in received if isinstance(d, str)] == [big_publish(r)[1] for r in (1, 2, 3)]
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()
