"""The connection actor on the actor bed, with a recording handle instead of a socket.

What the gateway would do is done by hand: ``StartConnection`` with an
``OpenConnection`` (pre-authenticated or not), then ``ClientText`` frames
and ``SocketClosed``. The handle records every frame and the close code.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from thespian.actors import ActorAddress

from rtcs.actors.connection import WebSocketActor
from rtcs.actors.context import ROUTE_TOPIC
from rtcs.actors.messages import ClientText, OpenConnection, SocketClosed, StartConnection
from rtcs.actors.routing import TopicHandler
from rtcs.auth.extract import HandshakeAuth
from rtcs.auth.tokens import Identity, mint
from rtcs.errors import CloseCode
from rtcs.protocol.codec import message_tail
from tests.unit.actors.actor_bed import ActorBed, RecordingHandle, RecordingSink, make_context

NEEDS_LOOP = "timers and backend calls need the asyncio base"
asyncio_only = pytest.mark.parametrize(
    "bed",
    [pytest.param("simple", marks=pytest.mark.skip(reason=NEEDS_LOOP)), "asyncio"],
    indirect=True,
)


def identity(bed: ActorBed, user: str = "alice", roles: tuple[str, ...] = ("user",)) -> Identity:
    token = mint(bed.ctx.settings.auth, user, roles=roles)
    return bed.ctx.verifier.verify(token, now=bed.ctx.wall())


def connect(
    bed: ActorBed,
    who: Identity | None,
    *,
    session: str | None = None,
    last_seq: int | None = None,
) -> tuple[ActorAddress, RecordingHandle]:
    """Start a connection actor as the connection supervisor would."""
    handle = RecordingHandle(bed.journal)
    auth = HandshakeAuth(None, None, None, session, last_seq)
    address = bed.system.createActor(WebSocketActor)
    bed.tell(address, StartConnection(bed.ctx, OpenConnection(handle, auth, who)))
    return address, handle


def send(bed: ActorBed, address: ActorAddress, frame: dict[str, Any]) -> None:
    bed.tell(address, ClientText(json.dumps(frame)))


async def test_a_preauthenticated_connection_is_welcomed(bed: ActorBed) -> None:
    _, handle = connect(bed, identity(bed))
    (welcome,) = await handle.wait_for(1)
    assert welcome["type"] == "welcome"
    assert (welcome["user"], welcome["resumed"], welcome["roles"]) == ("alice", False, ["user"])
    assert handle.user == "alice"
    session = bed.ctx.sessions.by_connection(handle.connection_id)
    assert session is not None and session.id == welcome["session_id"]


async def test_ping_is_answered_and_acknowledged_to_the_gateway(bed: ActorBed) -> None:
    address, handle = connect(bed, identity(bed))
    send(bed, address, {"type": "ping", "id": "p1"})
    assert (await handle.wait_for(2))[1] == {"type": "pong", "id": "p1"}
    assert handle.handled_count == 1


async def test_bad_frames_get_errors_and_the_connection_stays_open(bed: ActorBed) -> None:
    address, handle = connect(bed, identity(bed))
    bed.tell(address, ClientText("{not json"))
    send(bed, address, {"type": "teleport", "id": 7})
    send(bed, address, {"type": "ping", "id": 8})
    frames = await handle.wait_for(4)
    assert [f["type"] for f in frames[1:]] == ["error", "error", "pong"]
    assert frames[1]["code"] == "bad_request"
    assert (frames[2]["code"], frames[2]["id"]) == ("bad_request", 7)
    assert handle.closed_with is None


async def test_a_request_while_routing_restarts_is_unavailable(bed: ActorBed) -> None:
    address, handle = connect(bed, identity(bed))
    send(bed, address, {"type": "subscribe", "id": 1, "topic": "chat.x"})
    error = (await handle.wait_for(2))[1]
    assert (error["type"], error["code"], error["id"]) == ("error", "unavailable", 1)


async def test_subscribe_goes_through_the_topic_handler(bed: ActorBed) -> None:
    bed.ctx.directory.register(ROUTE_TOPIC, bed.start(TopicHandler))
    address, handle = connect(bed, identity(bed))
    send(bed, address, {"type": "subscribe", "id": 1, "topic": "chat.>"})
    assert (await handle.wait_for(2))[1] == {"type": "subscribed", "id": 1, "topic": "chat.>"}


async def test_permissions_and_limits_answer_with_their_codes(bed: ActorBed) -> None:
    bed.ctx = make_context(**{"limits.max_subscriptions": 1})
    bed.ctx.directory.register(ROUTE_TOPIC, bed.start(TopicHandler))
    address, handle = connect(bed, identity(bed))
    send(bed, address, {"type": "publish", "id": 1, "topic": "system.alert", "data": 1})
    send(bed, address, {"type": "subscribe", "id": 2, "topic": "chat.a"})
    await handle.wait_for(3)
    send(bed, address, {"type": "subscribe", "id": 3, "topic": "chat.b"})
    frames = await handle.wait_for(4)
    assert (frames[1]["code"], frames[1]["id"]) == ("forbidden", 1)
    assert frames[2] == {"type": "subscribed", "id": 2, "topic": "chat.a"}
    assert (frames[3]["code"], frames[3]["id"]) == ("limit", 3)


async def test_first_frame_auth(bed: ActorBed) -> None:
    address, handle = connect(bed, None)
    token = mint(bed.ctx.settings.auth, "bob", roles=["user"])
    send(bed, address, {"type": "auth", "id": "a", "token": token})
    (welcome,) = await handle.wait_for(1)
    assert (welcome["type"], welcome["id"], welcome["user"]) == ("welcome", "a", "bob")


async def test_anything_but_auth_first_closes_with_4001(bed: ActorBed) -> None:
    address, handle = connect(bed, None)
    send(bed, address, {"type": "ping", "id": 1})
    assert await handle.wait_closed() == CloseCode.AUTH_FAILED
    assert handle.frames == []


@asyncio_only
async def test_no_auth_within_the_deadline_closes_with_4001(bed: ActorBed) -> None:
    bed.ctx = make_context(**{"auth.auth_timeout": 0.05})
    _, handle = connect(bed, None)
    assert await handle.wait_closed() == CloseCode.AUTH_FAILED


async def test_a_client_over_its_rate_gets_rate_limited(bed: ActorBed) -> None:
    bed.ctx = make_context(**{"limits.rate": 0.001, "limits.burst": 1})
    address, handle = connect(bed, identity(bed))
    send(bed, address, {"type": "ping", "id": 1})
    send(bed, address, {"type": "ping", "id": 2})
    frames = await handle.wait_for(3)
    assert frames[1] == {"type": "pong", "id": 1}
    assert (frames[2]["code"], frames[2]["id"]) == ("rate_limited", 2)


def detached_session(bed: ActorBed, user: str, messages: int) -> str:
    """A detached session of ``user`` holding ``messages`` buffered messages."""
    session = bed.ctx.sessions.create(user, ("user",))
    sink = RecordingSink(bed.journal)
    bed.ctx.sessions.attach(session, sink)
    for n in range(messages):
        session.deliver(message_tail(topic="chat.x", data=n, ts=0))
    bed.ctx.sessions.detach(session, bed.ctx.clock())
    return session.id


async def test_resume_replays_exactly_what_was_missed(bed: ActorBed) -> None:
    session_id = detached_session(bed, "alice", 5)
    _, handle = connect(bed, identity(bed), session=session_id, last_seq=3)
    frames = await handle.wait_for(3)
    assert (frames[0]["resumed"], frames[0]["replayed"]) == (True, 2)
    assert frames[0]["session_id"] == session_id
    assert [(f["seq"], f["data"]) for f in frames[1:]] == [(4, 3), (5, 4)]


@pytest.mark.parametrize(
    "user, last_seq, why",
    [("mallory", 3, "another user's session"), ("alice", 9, "last_seq ahead of the session")],
)
async def test_a_resume_that_cannot_be_exact_starts_a_new_session(
    bed: ActorBed, user: str, last_seq: int, why: str
) -> None:
    session_id = detached_session(bed, "alice", 5)
    _, handle = connect(bed, identity(bed, user), session=session_id, last_seq=last_seq)
    (welcome,) = await handle.wait_for(1)
    assert welcome["resumed"] is False, why
    assert welcome["session_id"] != session_id and "replayed" not in welcome


async def test_a_reconnect_takes_over_a_session_still_attached(bed: ActorBed) -> None:
    _, first = connect(bed, identity(bed))
    (welcome,) = await first.wait_for(1)
    _, second = connect(bed, identity(bed), session=welcome["session_id"], last_seq=0)
    (again,) = await second.wait_for(1)
    assert (again["resumed"], again["session_id"]) == (True, welcome["session_id"])
    assert first.closed_with == CloseCode.NORMAL


async def test_a_closed_socket_leaves_the_session_resumable(bed: ActorBed) -> None:
    address, handle = connect(bed, identity(bed))
    await handle.wait_for(1)
    bed.tell(address, SocketClosed(1000))
    await bed.barrier()
    assert bed.ctx.sessions.by_connection(handle.connection_id) is None
    assert bed.ctx.sessions.detached_count() == 1


@asyncio_only
async def test_a_replay_waits_for_the_outbox_and_live_messages_follow_it(bed: ActorBed) -> None:
    session_id = detached_session(bed, "alice", 5)
    handle = RecordingHandle(bed.journal)
    handle.write_paused = True  # the outbox is full from the start
    address = bed.system.createActor(WebSocketActor)
    auth = HandshakeAuth(None, None, None, session_id, 0)
    bed.tell(address, StartConnection(bed.ctx, OpenConnection(handle, auth, identity(bed))))
    (welcome,) = await handle.wait_for(1)
    assert (welcome["resumed"], welcome["replayed"]) == (True, 5)
    session = bed.ctx.sessions.get(session_id)
    assert session is not None and session.holding
    session.deliver(message_tail(topic="chat.x", data="live", ts=0))  # arrives mid-replay
    send(bed, address, {"type": "ping", "id": "p"})  # replies are not held back
    frames = await handle.wait_for(2)
    assert frames[1] == {"type": "pong", "id": "p"}
    handle.drain()
    frames = await handle.wait_for(8)
    messages = [(f["seq"], f["data"]) for f in frames if f["type"] == "message"]
    assert messages == [(1, 0), (2, 1), (3, 2), (4, 3), (5, 4), (6, "live")]
    assert not session.holding
    session.deliver(message_tail(topic="chat.x", data="after", ts=0))
    assert (await handle.wait_for(9))[8]["data"] == "after"  # live again


@asyncio_only
async def test_a_replay_overtaken_by_live_messages_closes_4008(bed: ActorBed) -> None:
    session_id = detached_session(bed, "alice", 3)
    handle = RecordingHandle(bed.journal)
    handle.write_paused = True
    address = bed.system.createActor(WebSocketActor)
    auth = HandshakeAuth(None, None, None, session_id, 0)
    bed.tell(address, StartConnection(bed.ctx, OpenConnection(handle, auth, identity(bed))))
    await handle.wait_for(1)
    session = bed.ctx.sessions.get(session_id)
    assert session is not None and session.buffer.maxlen is not None
    for n in range(session.buffer.maxlen + 1):  # the buffer wraps past what was replayed
        session.deliver(message_tail(topic="chat.x", data=n, ts=0))
    handle.drain()
    assert await handle.wait_closed() == CloseCode.TOO_SLOW
