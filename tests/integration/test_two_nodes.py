"""Two nodes in one process sharing a backend: in-memory (a ``MemoryHub``),
a real redis-server, and a real 3-master Redis Cluster.

Local delivery stays local, the broker carries the rest, sessions detached on
one node resume on the other. The Redis variants go through the app's own
wiring (``backend.kind = "redis"``), breaker included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from websockets.asyncio.client import connect

from rtcs.sessions import Session
from tests.integration.conftest import SHARED_BACKENDS, Client, Node, start_pair, wait_until
from tests.support.waiting import wait_until_returns


@pytest.fixture(params=SHARED_BACKENDS)
async def pair(
    request: pytest.FixtureRequest, node_factory: Callable[..., Awaitable[Node]]
) -> tuple[Node, Node]:
    return await start_pair(request.param, node_factory)


@pytest.fixture(params=SHARED_BACKENDS)
async def crash_safe_pair(
    request: pytest.FixtureRequest, node_factory: Callable[..., Awaitable[Node]]
) -> tuple[Node, Node]:
    return await start_pair(request.param, node_factory, **{"session.crash_safe": True})


async def test_publish_reaches_subscribers_on_the_other_node(pair: tuple[Node, Node]) -> None:
    a, b = pair
    alice, bob = await a.client("alice"), await b.client("bob")
    carol = await a.client("carol")
    await alice.subscribe("chat.>")
    await carol.subscribe("chat.x")
    await bob.publish("chat.x", "from b")
    await alice.expect("message", topic="chat.x", data="from b", seq=1)
    await carol.expect("message", topic="chat.x", data="from b", seq=1)
    # and back: a local subscriber on b gets a's publish exactly once
    await bob.subscribe("chat.x")
    await alice.publish("chat.x", "from a")
    await bob.expect("message", data="from a", seq=1)
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()


async def test_direct_message_and_presence_across_nodes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    alice, bob = await a.client("alice"), await b.client("bob")
    # Presence is written behind the welcome (a connection never waits on
    # the shared store): wait until bob's connection is recorded.
    presence = a.app.backends.presence
    await wait_until_returns(lambda: presence.user_connections("bob"), 1)
    state = await alice.request({"type": "presence", "user": "bob"}, "presence_state")
    assert state["online"] is True and state["connections"] == 1
    await alice.request({"type": "send", "to": {"user": "bob"}, "data": "hi"})
    await bob.expect("message", data="hi")
    await alice.send({"type": "send", "id": 5, "to": {"user": "nobody"}, "data": 1})
    await alice.expect("error", id=5, code="offline")


async def test_direct_message_to_a_connection_on_the_other_node(pair: tuple[Node, Node]) -> None:
    a, b = pair
    alice, bob = await a.client("alice"), await b.client("bob")
    bob_tab = await b.client("bob")  # another connection of bob's: must not get it
    target = bob.welcome["connection_id"]
    presence = a.app.backends.presence
    # Presence is written behind the welcome: wait until a can locate it.
    await wait_until_returns(lambda: presence.connection_node(target), "node-b")
    await alice.request({"type": "send", "to": {"connection": target}, "data": "just you"})
    assert (await bob.expect("message", data="just you"))["from"] == "alice"
    # exactly once, and only there
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()
    await bob_tab.request({"type": "ping"}, "pong")
    await bob_tab.silent()
    await alice.request({"type": "ping"}, "pong")
    await alice.silent()


async def test_direct_message_to_an_unknown_connection_is_offline(pair: tuple[Node, Node]) -> None:
    a, b = pair
    alice, bob = await a.client("alice"), await b.client("bob")
    known = bob.welcome["connection_id"]
    await wait_until_returns(lambda: a.app.backends.presence.connection_node(known), "node-b")
    # well-formed: b's own prefix, a counter b never reached
    unknown = known.rsplit("-", 1)[0] + "-fffff"
    await alice.send({"type": "send", "id": 7, "to": {"connection": unknown}, "data": 1})
    await alice.expect("error", id=7, code="offline")
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()


async def test_room_broadcast_and_members_across_nodes(pair: tuple[Node, Node]) -> None:
    a, b = pair
    alice, bob = await a.client("alice"), await b.client("bob")
    await alice.request({"type": "join", "room": "lobby"}, "joined")
    joined = await bob.request({"type": "join", "room": "lobby"}, "joined")
    assert joined["members"] == ["alice", "bob"]
    # presence events cross nodes too
    await alice.expect("presence", room="lobby", event="join", user="bob")
    await bob.request({"type": "broadcast", "room": "lobby", "data": "yo"})
    await alice.expect("message", room="lobby", data="yo")
    await bob.expect("message", room="lobby", data="yo")
    await bob.ws.close()
    await alice.expect("presence", room="lobby", event="leave", user="bob")


async def test_session_resumes_on_the_other_node(pair: tuple[Node, Node]) -> None:
    a, b = pair
    alice, bob = await a.client("alice"), await a.client("bob")
    await bob.subscribe("news")
    await alice.publish("news", 1)
    await bob.expect("message", seq=1)
    session = bob.welcome["session_id"]
    await bob.ws.close()
    ctx = a.app.ctx
    assert ctx is not None  # set once the node started
    await wait_until(lambda: cast(Session, ctx.sessions.get(session)).sink is None)
    await alice.publish("news", 2)
    await alice.publish("news", 3)
    # reconnect through the other node (as a load balancer may send it)
    ws = await connect(
        b.url + f"?session={session}&last_seq=1",
        additional_headers={"Authorization": f"Bearer {b.token('bob')}"},
    )
    again = Client(ws)
    welcome = await again.expect("welcome", resumed=True, session_id=session, server="node-b")
    assert welcome["replayed"] == 2
    assert [(await again.expect("message"))["data"] for _ in range(2)] == [2, 3]
    # subscriptions moved with the session: a's publishes reach it on b, once
    await alice.publish("news", 4)
    await again.expect("message", seq=4, data=4)
    await wait_until(lambda: ctx.sessions.get(session) is None)
    await again.request({"type": "ping"}, "pong")
    await again.silent()


async def test_crash_safe_take_over_across_nodes(crash_safe_pair: tuple[Node, Node]) -> None:
    """The client reconnects to b while a still holds its old connection."""
    a, b = crash_safe_pair
    ctx_a, ctx_b = a.app.ctx, b.app.ctx
    assert ctx_a is not None and ctx_b is not None and ctx_a.write_behind is not None
    alice, bob = await a.client("alice"), await a.client("bob")
    await bob.subscribe("news")
    for n in (1, 2, 3):
        await alice.publish("news", n)
    assert [(await bob.expect("message"))["seq"] for _ in range(3)] == [1, 2, 3]
    session = bob.welcome["session_id"]
    # a mirrors the attached session: the shared store has all three
    await ctx_a.write_behind.flush()
    # bob's old socket is still open on a; he resumes on b having seen only 1
    again = await b.resume("bob", session, 1, resumed=True, session_id=session, server="node-b")
    welcome = again.welcome
    assert welcome["replayed"] == 2
    assert [(await again.expect("message"))["data"] for _ in range(2)] == [2, 3]
    assert ctx_b.write_behind is not None
    await ctx_b.write_behind.flush()  # b's record (taken over) is stored
    # a notices at its next write for the session: closes the stale socket with 1000
    await alice.publish("news", 4)
    assert await bob.closed() == 1000
    await wait_until(lambda: ctx_a.sessions.get(session) is None)
    await again.expect("message", seq=4, data=4)
    await alice.publish("news", 5)
    await again.expect("message", seq=5, data=5)
    await again.request({"type": "ping"}, "pong")
    await again.silent()  # nothing twice
    # a's detach of the stale connection did not overwrite b's record: a
    # detach on b, then a resume back on a, replays exactly what b stored
    await again.ws.close()
    await wait_until(lambda: cast(Session, ctx_b.sessions.get(session)).sink is None)
    await alice.publish("news", 6)
    await ctx_b.write_behind.flush()
    back = await a.resume("bob", session, 5, resumed=True, session_id=session, server="node-a")
    welcome = back.welcome
    assert welcome["replayed"] == 1
    await back.expect("message", seq=6, data=6)
    await back.request({"type": "ping"}, "pong")
    await back.silent()


async def test_crash_safe_subscription_changes_reach_the_store(
    crash_safe_pair: tuple[Node, Node],
) -> None:
    a, b = crash_safe_pair
    ctx_a = a.app.ctx
    assert ctx_a is not None and ctx_a.write_behind is not None
    alice, bob = await a.client("alice"), await a.client("bob")
    await bob.subscribe("news")
    await bob.subscribe("sport")
    await bob.request({"type": "unsubscribe", "topic": "news"}, "unsubscribed")
    await bob.request({"type": "join", "room": "lobby"}, "joined")
    await ctx_a.write_behind.flush()
    session = bob.welcome["session_id"]
    again = await b.resume("bob", session, 0, resumed=True, replayed=0, server="node-b")
    await alice.publish("news", "not any more")
    await alice.publish("sport", "yes")
    await again.expect("message", topic="sport", data="yes", seq=1)
    await alice.request({"type": "join", "room": "lobby"}, "joined")
    await alice.request({"type": "broadcast", "room": "lobby", "data": "room"})
    await again.expect("message", room="lobby", data="room", seq=2)
    await again.request({"type": "ping"}, "pong")
    await again.silent()
