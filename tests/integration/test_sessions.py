"""Sessions, resume and replay (docs/protocol.md), against a real node."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from websockets.asyncio.client import connect

from tests.integration.conftest import Client, Node, wait_detached
from tests.support import wait_until, wait_until_returns


async def _drop(client: Client) -> None:
    await client.ws.close()


async def test_resume_replays_exactly_the_missed_messages(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("news")
    await bob.request({"type": "join", "room": "r1"}, "joined")
    await alice.request({"type": "join", "room": "r1"}, "joined")  # members broadcast
    await alice.publish("news", 1)
    await bob.expect("message", seq=1)
    session = bob.welcome["session_id"]
    await _drop(bob)
    await wait_detached(node, session)
    for i in (2, 3, 4):
        await alice.publish("news", i)
    await alice.request({"type": "broadcast", "room": "r1", "data": "room"})
    ws = await connect(
        node.url + f"?session={session}&last_seq=1",
        additional_headers={"Authorization": f"Bearer {node.token('bob')}"},
    )
    again = Client(ws)
    welcome = await again.expect("welcome")
    assert welcome["resumed"] is True and welcome["replayed"] == 4
    assert welcome["session_id"] == session
    seen = [await again.expect("message") for _ in range(4)]
    assert [m["seq"] for m in seen] == [2, 3, 4, 5]
    assert [m["data"] for m in seen] == [2, 3, 4, "room"]
    # subscriptions were restored: live messages continue the sequence
    await alice.publish("news", 5)
    await again.expect("message", seq=6, data=5)


async def test_resume_by_auth_frame(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("t")
    await alice.publish("t", "a")
    await bob.expect("message", seq=1)
    session = bob.welcome["session_id"]
    await _drop(bob)
    await wait_detached(node, session)
    await alice.publish("t", "b")
    client = Client(await connect(node.url))
    await client.send(
        {"type": "auth", "token": node.token("bob"), "session": session, "last_seq": 1}
    )
    welcome = await client.expect("welcome", resumed=True, replayed=1)
    assert welcome["session_id"] == session
    await client.expect("message", seq=2, data="b")


async def test_resume_of_other_users_session_starts_fresh(node: Node) -> None:
    bob = await node.client("bob")
    session = bob.welcome["session_id"]
    await _drop(bob)
    await wait_detached(node, session)
    client = Client(await connect(node.url))
    await client.send(
        {"type": "auth", "token": node.token("mallory"), "session": session, "last_seq": 0}
    )
    welcome = await client.expect("welcome", resumed=False)
    assert welcome["session_id"] != session


async def test_resume_unknown_or_overflowed_buffer_is_not_partial(
    node_factory: Callable[..., Awaitable[Node]],
) -> None:
    node = await node_factory(**{"session.replay_buffer": 2})
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("t")
    session = bob.welcome["session_id"]
    await _drop(bob)
    await wait_detached(node, session)
    for i in range(3):
        await alice.publish("t", i)
    client = Client(await connect(node.url))
    await client.send(
        {"type": "auth", "token": node.token("bob"), "session": session, "last_seq": 0}
    )
    welcome = await client.expect("welcome", resumed=False)
    assert welcome["session_id"] != session
    await client.request({"type": "ping"}, "pong")
    await client.silent()
    unknown = Client(await connect(node.url))
    await unknown.send(
        {"type": "auth", "token": node.token("bob"), "session": "s-unknown", "last_seq": 0}
    )
    await unknown.expect("welcome", resumed=False)


async def test_session_expires_after_ttl(node_factory: Callable[..., Awaitable[Node]]) -> None:
    node = await node_factory(**{"session.ttl": 0.3})
    bob = await node.client("bob")
    session = bob.welcome["session_id"]
    await _drop(bob)
    await wait_detached(node, session)
    ctx = node.app.ctx
    assert ctx is not None
    await wait_until(lambda: ctx.sessions.get(session) is None)
    client = Client(await connect(node.url))
    await client.send(
        {"type": "auth", "token": node.token("bob"), "session": session, "last_seq": 0}
    )
    await client.expect("welcome", resumed=False)


async def test_reconnect_takes_over_a_live_session(node: Node) -> None:
    bob = await node.client("bob")
    session = bob.welcome["session_id"]
    ws = await connect(
        node.url + f"?session={session}&last_seq=0",
        additional_headers={"Authorization": f"Bearer {node.token('bob')}"},
    )
    again = Client(ws)
    await again.expect("welcome", resumed=True, session_id=session)
    assert await bob.closed() == 1000
    # The replaced connection leaves presence: bob is online once, not twice.
    presence = node.app.backends.presence
    await wait_until_returns(lambda: presence.user_connections("bob"), 1)
    state = await again.request({"type": "presence", "user": "bob"}, "presence_state")
    assert state["online"] is True and state["connections"] == 1


# A replay of 6.4 MB against a 256 KiB outbound queue: more than the kernel's
# socket buffers hold too, so the server's own queue must take the rest.
BIG_REPLAY = {
    "limits.outbox_bytes": 256 * 1024,
    "limits.rate": 10_000,
    "limits.burst": 10_000,
    "limits.byte_rate": 100_000_000,
    "limits.byte_burst": 100_000_000,
    "session.replay_buffer": 400,
}


async def test_a_replay_larger_than_the_outbox_reaches_a_slow_reader_whole(
    node_factory: Callable[..., Awaitable[Node]],
) -> None:
    node = await node_factory(**BIG_REPLAY)
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("big")
    session = bob.welcome["session_id"]
    await _drop(bob)
    await wait_detached(node, session)
    payload = "x" * 16_000
    for i in range(400):
        await alice.publish("big", {"i": i, "p": payload})
    ws = await connect(
        node.url + f"?session={session}&last_seq=0",
        additional_headers={"Authorization": f"Bearer {node.token('bob')}"},
        max_size=None,
    )
    reader = Client(ws)
    welcome = await reader.expect("welcome")
    assert (welcome["resumed"], welcome["replayed"]) == (True, 400)
    ws.transport.pause_reading()  # a client that reads nothing for now
    gateway = node.app.gateway
    assert gateway is not None
    await wait_until(
        lambda: any(h.write_paused for h in gateway.handles if h.user == "bob"),
        message="the replay filled the outbound queue to its high-water mark",
    )
    await alice.publish("big", {"i": "live", "p": ""})  # arrives mid-replay
    ws.transport.resume_reading()
    got = [await reader.expect("message") for _ in range(401)]
    assert [m["seq"] for m in got] == list(range(1, 402))
    assert got[-1]["data"]["i"] == "live"
    await reader.request({"type": "ping"}, reply="pong")  # still open: no 4008
    await ws.close()
