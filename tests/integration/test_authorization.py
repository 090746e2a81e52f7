"""Authorization over real sockets: room patterns, and dropping what a role
downgrade (a token refresh or a resume with fewer roles) no longer allows.

docs/protocol.md "Permissions"; the pure decisions are tested in
tests/unit/auth/test_permissions.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from tests.integration.conftest import (
    SHARED_BACKENDS,
    Client,
    Node,
    detach,
    start_pair,
)

NodeFactory = Callable[..., Awaitable[Node]]

# Everyone: public topics, the lobby and their own dm rooms; "vip": more.
RBAC: dict[str, Any] = {
    "roles": {
        "*": {
            "subscribe": ["public.>"],
            "publish": [">"],
            "broadcast": ["room"],
            "rooms": True,
            "presence": True,
            "join": ["lobby", "dm:{user}:*", "team:*"],
            "join_deny": ["team:{user}"],
        },
        "vip": {"subscribe": ["vip.>"], "rooms": True, "join": ["vip-*"]},
    }
}


async def error_code(client: Client, frame: dict[str, Any]) -> str:
    error = await client.request(frame, "error")
    return cast(str, error["code"])


async def test_joins_follow_room_patterns(node_factory: NodeFactory) -> None:
    node = await node_factory(rbac=RBAC)
    alice = await node.client("alice")
    for room in ("lobby", "dm:alice:1", "team:red"):
        joined = await alice.request({"type": "join", "room": room}, "joined")
        assert joined["room"] == room
    for room in ("dm:bob:1", "vip-lounge", "other", "team:alice"):
        assert await error_code(alice, {"type": "join", "room": room}) == "forbidden"
    vip = await node.client("carol", ("vip",))
    await vip.request({"type": "join", "room": "vip-lounge"}, "joined")
    # A user id that is not a topic segment makes {user} match nothing.
    odd = await node.client("a.b")
    assert await error_code(odd, {"type": "join", "room": "dm:a.b:1"}) == "forbidden"
    await odd.request({"type": "join", "room": "lobby"}, "joined")


async def test_default_policy_joins_any_room(node: Node) -> None:
    alice = await node.client("alice")
    for room in ("lobby", "game:42", "team@acme.eu"):
        await alice.request({"type": "join", "room": room}, "joined")


async def vip_alice(node: Node) -> Client:
    """Alice with the vip role, subscribed to vip.news and public.news, in vip-room and lobby."""
    alice = await node.client("alice", ("vip",))
    await alice.subscribe("vip.news")
    await alice.subscribe("public.news")
    await alice.request({"type": "join", "room": "vip-room"}, "joined")
    await alice.request({"type": "join", "room": "lobby"}, "joined")
    return alice


async def expect_dropped(client: Client) -> None:
    """The two drops of ``vip_alice``'s subscriptions, without an id."""
    unsubscribed = await client.expect("unsubscribed", topic="vip.news")
    assert unsubscribed == {"type": "unsubscribed", "topic": "vip.news", "reason": "forbidden"}
    left = await client.expect("left", room="vip-room")
    assert left == {"type": "left", "room": "vip-room", "reason": "forbidden"}


async def assert_forgotten(alice: Client, bob: Client) -> None:
    """Bob's (a vip on any node) traffic to vip.news and vip-room no longer
    reaches alice; public.news and the lobby still do; the room is gone from
    her membership (the room handler forgot it)."""
    await bob.publish("vip.news", "secret")
    await bob.request({"type": "broadcast", "room": "vip-room", "data": "secret"})
    await bob.publish("public.news", "open")
    await bob.request({"type": "broadcast", "room": "lobby", "data": "lobby"})
    first = await alice.expect("message")
    second = await alice.expect("message")
    assert (first["data"], second["data"]) == ("open", "lobby")
    code = await error_code(alice, {"type": "broadcast", "room": "vip-room", "data": 1})
    assert code == "forbidden"  # no longer a member
    assert await error_code(alice, {"type": "join", "room": "vip-room"}) == "forbidden"
    assert await error_code(alice, {"type": "subscribe", "topic": "vip.news"}) == "forbidden"
    state = await bob.request({"type": "presence", "room": "vip-room"}, "presence_state")
    assert "alice" not in state["members"]
    await alice.request({"type": "ping"}, "pong")
    await alice.silent()


async def vip_bob(node: Node) -> Client:
    bob = await node.client("bob", ("vip",))
    await bob.request({"type": "join", "room": "vip-room"}, "joined")
    await bob.request({"type": "join", "room": "lobby"}, "joined")
    return bob


async def test_refresh_with_fewer_roles_drops_subscriptions_and_rooms(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(rbac=RBAC)
    alice, bob = await vip_alice(node), await vip_bob(node)
    welcome = await alice.request({"type": "auth", "token": node.token("alice")}, "welcome")
    assert welcome["roles"] == [] and welcome["resumed"] is True
    await expect_dropped(alice)
    await assert_forgotten(alice, bob)


async def test_refresh_with_the_same_roles_drops_nothing(node_factory: NodeFactory) -> None:
    node = await node_factory(rbac=RBAC)
    alice, bob = await vip_alice(node), await vip_bob(node)
    token = node.token("alice", ("vip",))
    await alice.request({"type": "auth", "token": token}, "welcome")
    await bob.publish("vip.news", "still")
    await alice.expect("message", topic="vip.news", data="still")
    await alice.request({"type": "ping"}, "pong")
    await alice.silent()


async def publish_while_away(bob: Client) -> None:
    """seq 1..4 for alice: vip.news, public.news, vip-room, lobby."""
    await bob.publish("vip.news", "v1")
    await bob.publish("public.news", "p2")
    await bob.request({"type": "broadcast", "room": "vip-room", "data": "r3"})
    await bob.request({"type": "broadcast", "room": "lobby", "data": "l4"})


async def expect_replay_without_dropped(again: Client) -> None:
    assert again.welcome["replayed"] == 2
    assert again.welcome["roles"] == []
    replayed = [await again.expect("message"), await again.expect("message")]
    assert [(m["seq"], m["data"]) for m in replayed] == [(2, "p2"), (4, "l4")]
    await expect_dropped(again)


async def test_resume_with_fewer_roles_drops_and_skips_their_replay(
    node_factory: NodeFactory,
) -> None:
    node = await node_factory(rbac=RBAC)
    alice, bob = await vip_alice(node), await vip_bob(node)
    session = await detach(node, alice)
    await publish_while_away(bob)
    again = await node.resume("alice", session, 0, resumed=True, session_id=session)
    await expect_replay_without_dropped(again)
    await assert_forgotten(again, bob)
    # The withheld messages stay withheld on a later resume from the same point.
    assert await detach(node, again) == session
    third = await node.resume("alice", session, 0, resumed=True, session_id=session)
    assert third.welcome["replayed"] == 4  # p2, l4, and the open pair of assert_forgotten
    datas = [(await third.expect("message"))["data"] for _ in range(4)]
    assert datas == ["p2", "l4", "open", "lobby"]
    await third.request({"type": "ping"}, "pong")
    await third.silent()


@pytest.fixture(params=SHARED_BACKENDS)
async def pair(request: pytest.FixtureRequest, node_factory: NodeFactory) -> tuple[Node, Node]:
    return await start_pair(request.param, node_factory, rbac=RBAC)


async def test_resume_on_another_node_with_fewer_roles(pair: tuple[Node, Node]) -> None:
    a, b = pair
    alice, bob = await vip_alice(a), await vip_bob(a)
    session = await detach(a, alice)
    await publish_while_away(bob)
    again = await b.resume("alice", session, 0, resumed=True, session_id=session)
    await expect_replay_without_dropped(again)
    await assert_forgotten(again, bob)
