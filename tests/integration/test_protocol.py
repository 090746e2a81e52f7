"""docs/protocol.md, row by row, against a real node with real websockets clients."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from tests.integration.conftest import TIMEOUT, Client, Node, http_get

NodeFactory = Callable[..., Awaitable[Node]]


async def test_welcome_shape(node: Node) -> None:
    client = await node.client("alice", ("user",))
    w = client.welcome
    assert w["connection_id"].startswith("c-")
    assert w["session_id"].startswith("s-")
    assert w["user"] == "alice"
    assert w["roles"] == ["user"]
    assert w["heartbeat"] == 25
    assert w["resumed"] is False
    assert w["server"] == node.app.node_id


async def test_publish_reaches_subscribers_with_seq(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("chat.general")
    await alice.publish("chat.general", {"text": "hi"})
    msg = await bob.expect("message", topic="chat.general", data={"text": "hi"}, seq=1)
    assert msg["from"] == "alice"
    assert isinstance(msg["ts"], int)
    await alice.publish("chat.general", [1, 2])
    await bob.expect("message", seq=2, data=[1, 2])


async def test_patterns_deliver_once(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    for pattern in ("system.*", "system.>", "*.alert"):
        await bob.subscribe(pattern)
    await alice.subscribe("x")  # unrelated
    admin = await node.client("root", ("admin",))
    await admin.publish("system.alert", 1)
    await bob.expect("message", topic="system.alert", seq=1)
    await admin.publish("system.a.b", 2)
    second = await bob.expect("message", topic="system.a.b")
    assert second["seq"] == 2  # the first message came exactly once


async def test_unsubscribe_stops_delivery(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await bob.subscribe("a.b")
    await bob.request({"type": "unsubscribe", "topic": "a.b"}, "unsubscribed")
    await alice.publish("a.b", 1)
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()


@pytest.mark.parametrize(
    "frame, code",
    [
        ("not json", "bad_request"),
        ('{"type": "nope", "id": 7}', "bad_request"),
        ('{"type": "subscribe", "id": 7}', "bad_request"),
        ('{"type": "subscribe", "id": 7, "topic": "a..b"}', "bad_topic"),
        ('{"type": "publish", "id": 7, "topic": "a.*", "data": 1}', "bad_topic"),
        ('{"type": "publish", "id": 7, "topic": "system.x", "data": 1}', "forbidden"),
        ("[" * 5000 + "]" * 5000, "bad_request"),
    ],
)
async def test_bad_frames_get_error_and_connection_stays(node: Node, frame: str, code: str) -> None:
    client = await node.client("alice")
    await client.send(frame)
    error = await client.expect("error", code=code)
    if '"id": 7' in frame:
        assert error["id"] == 7
    assert error["message"]
    await client.request({"type": "ping"}, "pong")


async def test_binary_frame_closes_1003(node: Node) -> None:
    client = await node.client("alice")
    await client.ws.send(b"\x00\x01")
    assert await client.closed() == 1003


async def test_a_fragmented_binary_message_closes_1003(node: Node) -> None:
    client = await node.client("alice")
    await client.ws.send([b"\x00", b"\x01"])  # an iterable: sent as fragments
    assert await client.closed() == 1003


async def test_a_fragmented_text_message_is_one_frame_to_rtcs(node: Node) -> None:
    client = await node.client("alice")
    parts = ['{"type": "ping",', ' "id": ', "42}"]
    await client.ws.send(parts)  # three frames: TEXT, CONT, CONT (fin)
    await client.expect("pong", id=42)


async def test_invalid_utf8_in_a_text_frame_closes_1007(node: Node) -> None:
    client = await node.client("alice")
    ws = client.ws
    ws.protocol.send_text(b'{"type": "ping", "id": 1, "x": "\xff\xfe"}')  # not UTF-8
    ws.send_data()
    assert await client.closed() == 1007


async def test_frames_sent_with_the_handshake_are_not_lost(node: Node) -> None:
    # A first-frame auth client writes its auth and more frames at once,
    # before the connection actor runs: they wait and arrive in order.
    client = await node.client(None, welcome=False, additional_headers={})  # type: ignore[arg-type]
    token = node.token("alice")
    await asyncio.gather(
        client.send({"type": "auth", "token": token, "id": 1}),
        *(client.send({"type": "ping", "id": i}) for i in range(2, 12)),
    )
    await client.expect("welcome")
    for i in range(2, 12):
        assert (await client.expect("pong"))["id"] == i


async def test_too_large_frame_closes_1009(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"limits.max_message_size": 1024})
    client = await node.client("alice")
    await client.send({"type": "publish", "topic": "a", "data": "x" * 2000})
    assert await client.closed() == 1009


async def test_direct_message_to_user_and_connection(node: Node) -> None:
    alice = await node.client("alice")
    bob1, bob2 = await node.client("bob"), await node.client("bob")
    await alice.request({"type": "send", "to": {"user": "bob"}, "data": "hey"})
    for bob in (bob1, bob2):
        msg = await bob.expect("message", data="hey")
        assert msg["from"] == "alice" and msg["seq"] == 1
        assert "topic" not in msg and "room" not in msg
    cid = bob2.welcome["connection_id"]
    await alice.request({"type": "send", "to": {"connection": cid}, "data": "only you"})
    await bob2.expect("message", data="only you", seq=2)
    await bob1.request({"type": "ping"}, "pong")
    await bob1.silent()


async def test_direct_message_offline(node: Node) -> None:
    alice = await node.client("alice")
    rid = alice.next_id()
    await alice.send({"type": "send", "id": rid, "to": {"user": "nobody"}, "data": 1})
    await alice.expect("error", id=rid, code="offline")
    await alice.send({"type": "send", "id": 9, "to": {"connection": "c-nope"}, "data": 1})
    await alice.expect("error", id=9, code="offline")


async def test_rooms_presence_and_broadcast(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    joined = await alice.request({"type": "join", "room": "lobby"}, "joined")
    assert joined["members"] == ["alice"]
    joined = await bob.request({"type": "join", "room": "lobby"}, "joined")
    assert joined["members"] == ["alice", "bob"]
    event = await alice.expect("presence")
    assert event == {"type": "presence", "room": "lobby", "event": "join", "user": "bob"}
    await bob.request({"type": "broadcast", "room": "lobby", "data": {"m": 1}})
    for client in (alice, bob):
        msg = await client.expect("message", room="lobby", data={"m": 1})
        assert msg["from"] == "bob"
    state = await alice.request({"type": "presence", "room": "lobby"}, "presence_state")
    assert state["room"] == "lobby" and state["members"] == ["alice", "bob"]
    left = await bob.request({"type": "leave", "room": "lobby"}, "left")
    assert left["room"] == "lobby"
    event = await alice.expect("presence")
    assert event["event"] == "leave" and event["user"] == "bob"


async def test_only_members_broadcast_or_query_a_rooms_presence(node: Node) -> None:
    alice, bob = await node.client("alice"), await node.client("bob")
    await alice.request({"type": "join", "room": "lobby"}, "joined")
    error = await bob.request({"type": "broadcast", "room": "lobby", "data": 1}, "error")
    assert error["code"] == "forbidden"
    error = await bob.request({"type": "presence", "room": "lobby"}, "error")
    assert error["code"] == "forbidden"
    state = await alice.request({"type": "presence", "room": "lobby"}, "presence_state")
    assert state["members"] == ["alice"]
    admin = await node.client("root", ("admin",))  # presence_rooms = ["*"] by default
    state = await admin.request({"type": "presence", "room": "lobby"}, "presence_state")
    assert state["members"] == ["alice"]
    await alice.request({"type": "ping"}, "pong")
    await alice.silent()  # nothing of Bob's broadcast arrived


async def test_user_placeholder_keeps_inboxes_private(node_factory: NodeFactory) -> None:
    rbac = {"roles": {"*": {"subscribe": ["user.{user}.>"], "publish": ["user.*.inbox"]}}}
    node = await node_factory(rbac=rbac)
    alice, bob = await node.client("alice"), await node.client("bob")
    await alice.subscribe("user.alice.>")
    for topic in ("user.bob.>", "user.bob.inbox", "user.*.inbox"):
        error = await alice.request({"type": "subscribe", "topic": topic}, "error")
        assert error["code"] == "forbidden"
    await bob.publish("user.alice.inbox", "hi")
    await alice.expect("message", topic="user.alice.inbox", data="hi")
    odd = await node.client("a.b")  # not a topic segment: {user} matches nothing
    error = await odd.request({"type": "subscribe", "topic": "user.a.b.>"}, "error")
    assert error["code"] == "forbidden"


async def test_user_presence_counts_connections(node: Node) -> None:
    alice = await node.client("alice")
    await node.client("bob")
    await node.client("bob")
    state = await alice.request({"type": "presence", "user": "bob"}, "presence_state")
    assert state["user"] == "bob" and state["online"] is True and state["connections"] == 2
    state = await alice.request({"type": "presence", "user": "carol"}, "presence_state")
    assert state["online"] is False and state["connections"] == 0


async def test_global_and_filtered_broadcast_need_admin(node: Node) -> None:
    alice, bob = await node.client("alice", ("user",)), await node.client("bob", ("ops",))
    admin = await node.client("root", ("admin",))
    await alice.send({"type": "broadcast", "id": 1, "scope": "global", "data": 1})
    await alice.expect("error", id=1, code="forbidden")
    await admin.request({"type": "broadcast", "scope": "global", "data": "all"})
    for client in (alice, bob, admin):
        await client.expect("message", room="*", data="all")
    await admin.request({"type": "broadcast", "filter": {"roles": ["ops"]}, "data": "ops only"})
    await bob.expect("message", data="ops only")
    await admin.request({"type": "broadcast", "filter": {"users": ["alice"]}, "data": "alice only"})
    await alice.expect("message", data="alice only")
    await bob.request({"type": "ping"}, "pong")
    await bob.silent()


async def test_subscription_limit(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"limits.max_subscriptions": 2})
    client = await node.client("alice")
    await client.subscribe("a")
    await client.subscribe("b")
    await client.send({"type": "subscribe", "id": 3, "topic": "c"})
    await client.expect("error", id=3, code="limit")
    await client.subscribe("a")  # already subscribed: not a new one


async def test_rate_limit_then_4029(node_factory: NodeFactory) -> None:
    node = await node_factory(
        **{"limits.rate": 1.0, "limits.burst": 2, "limits.rate_limit_close_after": 3}
    )
    client = await node.client("alice")
    for i in range(10):
        await client.send({"type": "ping", "id": i})
    codes = []
    with pytest.raises(ConnectionClosed):  # closed with 4029 after the errors
        while True:
            frame = await client.recv()
            codes.append(frame.get("code", frame["type"]))
    assert codes[:2] == ["pong", "pong"]
    assert "rate_limited" in codes
    assert client.ws.close_code == 4029


async def test_first_frame_auth(node: Node) -> None:
    ws = await connect(node.url, open_timeout=TIMEOUT)
    client = Client(ws)
    await client.send({"type": "auth", "id": "a1", "token": node.token("alice")})
    welcome = await client.expect("welcome", id="a1", user="alice")
    assert welcome["resumed"] is False
    await client.request({"type": "ping"}, "pong")


async def test_first_frame_auth_bad_token_4001(node: Node) -> None:
    client = Client(await connect(node.url, open_timeout=TIMEOUT))
    await client.send({"type": "auth", "token": "garbage"})
    assert await client.closed() == 4001


async def test_first_frame_must_be_auth(node: Node) -> None:
    client = Client(await connect(node.url, open_timeout=TIMEOUT))
    await client.send({"type": "ping"})
    assert await client.closed() == 4001


async def test_auth_timeout_4001(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"auth.auth_timeout": 0.2})
    client = Client(await connect(node.url, open_timeout=TIMEOUT))
    assert await client.closed() == 4001


async def test_bad_header_token_is_401(node: Node) -> None:
    with pytest.raises(InvalidStatus) as info:
        await connect(node.url, additional_headers={"Authorization": "Bearer nope"})
    assert info.value.response.status_code == 401


async def test_subprotocol_token(node: Node) -> None:
    token = node.token("alice")
    ws = await connect(
        node.url, subprotocols=[Subprotocol("rtcs.v1"), Subprotocol(f"rtcs.bearer.{token}")]
    )
    assert ws.subprotocol == "rtcs.v1"
    client = Client(ws)
    await client.expect("welcome", user="alice")


async def test_query_token(node: Node) -> None:
    ws = await connect(node.url + "?token=" + node.token("alice"))
    await Client(ws).expect("welcome", user="alice")


async def test_cookie_token_needs_allowed_origin(node: Node) -> None:
    cookie = {"Cookie": f"rtcs_token={node.token('alice')}"}
    own = f"http://127.0.0.1:{node.app.port}"
    ws = await connect(node.url, additional_headers={**cookie, "Origin": own})
    await Client(ws).expect("welcome", user="alice")
    # From a foreign origin the cookie is ignored: first-frame auth is expected.
    ws = await connect(node.url, additional_headers={**cookie, "Origin": "http://evil.example"})
    client = Client(ws)
    await client.send({"type": "ping"})
    assert await client.closed() == 4001


async def test_origin_allowlist_403(node_factory: NodeFactory) -> None:
    node = await node_factory(**{"server.allowed_origins": ["https://app.example"]})
    token = node.token("alice")
    with pytest.raises(InvalidStatus) as info:
        await connect(
            node.url,
            additional_headers={
                "Authorization": f"Bearer {token}",
                "Origin": "https://evil.example",
            },
        )
    assert info.value.response.status_code == 403
    ws = await connect(
        node.url,
        additional_headers={"Authorization": f"Bearer {token}", "Origin": "https://app.example"},
    )
    await Client(ws).expect("welcome")


async def test_token_refresh_and_expiry(node: Node) -> None:
    ws = await connect(
        node.url, additional_headers={"Authorization": f"Bearer {node.token('alice', ttl=1.5)}"}
    )
    client = Client(ws)
    first = await client.expect("welcome")
    await client.send({"type": "auth", "id": "r", "token": node.token("alice", ttl=3600)})
    again = await client.expect("welcome", id="r")
    assert again["session_id"] == first["session_id"]
    # a refresh for another subject is refused, the connection stays
    await client.send({"type": "auth", "id": "x", "token": node.token("mallory")})
    await client.expect("error", id="x", code="forbidden")
    # the refreshed token keeps the connection open past the first expiry
    # bob's token expires after alice's first one did, so alice still being
    # open afterwards proves the refresh kept her connection.
    ws2 = await connect(
        node.url, additional_headers={"Authorization": f"Bearer {node.token('bob', ttl=2.5)}"}
    )
    expiring = Client(ws2)
    await expiring.expect("welcome")
    assert await expiring.closed(timeout=5) == 4001
    await client.request({"type": "ping"}, "pong")


async def test_application_ping(node: Node) -> None:
    client = await node.client("alice")
    pong = await client.request({"type": "ping"}, "pong")
    assert pong == {"type": "pong", "id": pong["id"]}


async def test_http_endpoints(node: Node) -> None:
    status, _ = await http_get(node, "/healthz")
    assert status == 200
    status, body = await http_get(node, "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ready"
    await node.client("alice")
    status, body = await http_get(node, "/metrics")
    assert status == 200
    text = body.decode()
    assert "rtcs_connections_active 1.0" in text
    assert 'rtcs_messages_out_total{type="welcome"} 1.0' in text
    status, _ = await http_get(node, "/nope")
    assert status == 404


async def test_quiet_connection_goes_inactive_and_back(node_factory: NodeFactory) -> None:
    from rtcs.protocol.states import State
    from tests.integration.conftest import wait_until

    node = await node_factory(**{"heartbeat.idle_after": 0.2})
    client = await node.client("alice")
    assert node.app.gateway is not None and node.app.system is not None
    (handle,) = node.app.gateway.handles
    registry = node.app.system._systemBase.actorRegistry

    def state() -> State:
        address: Any = handle.actor  # a thespian ActorAddress, typed object by the gateway
        current: State = registry[address.actorAddressString].instance.machine.state
        return current

    assert state() is State.ACTIVE
    await wait_until(lambda: state() is State.INACTIVE)
    await client.request({"type": "ping"}, "pong")  # an inactive connection is still served
    assert state() is State.ACTIVE
    await wait_until(lambda: state() is State.INACTIVE)
