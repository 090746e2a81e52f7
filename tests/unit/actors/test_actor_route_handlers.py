"""DirectHandler, BroadcastHandler and RoomHandler on both bases.

Joining, leaving and presence go through the presence backend with
``run_async``, which exists only on the asyncio base: those tests run there
and their simple-base variants are skipped.
"""

from __future__ import annotations

import pytest

from rtcs.actors.messages import (
    RouteDirect,
    RouteJoin,
    RouteLeave,
    RoutePresence,
    RouteRoomBroadcast,
    RouteWideBroadcast,
    SessionPresence,
)
from rtcs.actors.routing import BroadcastHandler, DirectHandler, RoomHandler
from rtcs.protocol.frames import BroadcastFilter
from tests.unit.actors.actor_bed import ActorBed

NEEDS_RUN_ASYNC = "the presence backend is reached through run_async, which needs the asyncio base"
asyncio_only = pytest.mark.parametrize(
    "bed",
    [pytest.param("simple", marks=pytest.mark.skip(reason=NEEDS_RUN_ASYNC)), "asyncio"],
    indirect=True,
)


# -- direct ---------------------------------------------------------------------


async def test_direct_to_user_reaches_every_live_connection(bed: ActorBed) -> None:
    direct = bed.start(DirectHandler)
    alice, a_sink = bed.session("alice")
    _, phone = bed.session("bob")
    _, laptop = bed.session("bob")
    _, carol = bed.session("carol")

    bed.tell(direct, RouteDirect(alice, "bob", None, {"hi": 1}, 4))

    assert await a_sink.wait_for(1) == [{"type": "ack", "id": 4}]
    for sink in (phone, laptop):
        (msg,) = sink.messages()
        assert (msg["seq"], msg["from"], msg["data"]) == (1, "alice", {"hi": 1})
    assert carol.frames == []


async def test_direct_to_connection_reaches_that_connection_only(bed: ActorBed) -> None:
    direct = bed.start(DirectHandler)
    alice, a_sink = bed.session("alice")
    _, phone = bed.session("bob")
    _, laptop = bed.session("bob")

    bed.tell(direct, RouteDirect(alice, None, laptop.connection_id, "psst", 5))

    assert await a_sink.wait_for(1) == [{"type": "ack", "id": 5}]
    assert [m["data"] for m in laptop.messages()] == ["psst"]
    assert phone.frames == []


async def test_direct_to_absent_user_or_connection_is_offline(bed: ActorBed) -> None:
    direct = bed.start(DirectHandler)
    alice, a_sink = bed.session("alice")
    bob, b_sink = bed.session("bob")
    # Detached sessions do not receive direct messages (docs/protocol.md).
    bed.ctx.sessions.detach(bob, 0.0)

    bed.tell(direct, RouteDirect(alice, "bob", None, 1, "u"))
    bed.tell(direct, RouteDirect(alice, None, "c-nobody", 1, "c"))

    frames = await a_sink.wait_for(2)
    assert [(f["type"], f["id"], f["code"]) for f in frames] == [
        ("error", "u", "offline"),
        ("error", "c", "offline"),
    ]
    assert bob.seq == 0 and b_sink.frames == []


# -- global and filtered broadcasts -------------------------------------------------


async def test_global_broadcast_reaches_every_session(bed: ActorBed) -> None:
    wide = bed.start(BroadcastHandler)
    admin, admin_sink = bed.session("root", ("admin",))
    sinks = [bed.session(f"user{i}")[1] for i in range(5)]
    detached, _ = bed.session("away")
    bed.ctx.sessions.detach(detached, 0.0)

    bed.tell(wide, RouteWideBroadcast(admin, None, "all hands", 1))

    frames = await admin_sink.wait_for(2)
    assert [f["type"] for f in frames] == ["message", "ack"]
    for sink in sinks:
        (msg,) = sink.messages()
        assert (msg["room"], msg["from"], msg["data"]) == ("*", "root", "all hands")
    # Buffered for resume, like any broadcast to a session.
    assert detached.seq == 1


async def test_filtered_broadcast_selects_by_role_or_user(bed: ActorBed) -> None:
    wide = bed.start(BroadcastHandler)
    admin, admin_sink = bed.session("root", ("admin",))
    _, moderator = bed.session("mo", ("mod",))
    _, carol = bed.session("carol")
    _, dave = bed.session("dave", ("viewer",))

    selection = BroadcastFilter(roles=("mod",), users=("carol",))
    bed.tell(wide, RouteWideBroadcast(admin, selection, "heads up", 2))

    assert await admin_sink.wait_for(1) == [{"type": "ack", "id": 2}]
    assert [m["data"] for m in moderator.messages()] == ["heads up"]
    assert [m["data"] for m in carol.messages()] == ["heads up"]
    assert dave.frames == []


# -- rooms ----------------------------------------------------------------------------


async def test_room_broadcast_reaches_members_rebuilt_from_the_registry(bed: ActorBed) -> None:
    alice, a_sink = bed.session("alice")
    bob, b_sink = bed.session("bob")
    _, c_sink = bed.session("carol")
    # Membership belongs to the session: a (re)started handler finds it there.
    alice.rooms.add("r")
    bob.rooms.add("r")
    rooms = bed.start(RoomHandler)

    bed.tell(rooms, RouteRoomBroadcast(alice, "r", {"n": 1}, 3))

    frames = await a_sink.wait_for(2)
    assert [f["type"] for f in frames] == ["message", "ack"]
    (msg,) = b_sink.messages()
    assert (msg["seq"], msg["room"], msg["from"], msg["data"]) == (1, "r", "alice", {"n": 1})
    assert c_sink.frames == []


async def test_only_members_broadcast_into_a_room(bed: ActorBed) -> None:
    alice, a_sink = bed.session("alice")
    _, b_sink = bed.session("bob")
    alice.rooms.add("r")
    admin, root_sink = bed.session("root", ("admin",))  # no role makes a non-member a member
    rooms = bed.start(RoomHandler)

    bed.tell(rooms, RouteRoomBroadcast(admin, "r", "x", 1))

    (error,) = await root_sink.wait_for(1)
    assert (error["type"], error["id"], error["code"]) == ("error", 1, "forbidden")
    assert a_sink.frames == [] and b_sink.frames == []
    assert alice.seq == 0


@asyncio_only
async def test_room_presence_needs_membership_or_presence_rooms(bed: ActorBed) -> None:
    rooms = bed.start(RoomHandler)
    alice, a_sink = bed.session("alice")
    bob, b_sink = bed.session("bob")
    admin, root_sink = bed.session("root", ("admin",))  # default: presence_rooms = ["*"]
    bed.tell(rooms, RouteJoin(alice, "r", 1))
    await a_sink.wait_for(1)

    bed.tell(rooms, RoutePresence(bob, "r", None, 2))
    bed.tell(rooms, RoutePresence(alice, "r", None, 3))
    bed.tell(rooms, RoutePresence(admin, "r", None, 4))

    (error,) = await b_sink.wait_for(1)
    assert (error["type"], error["id"], error["code"]) == ("error", 2, "forbidden")
    assert (await a_sink.wait_for(2))[1] == {
        "type": "presence_state",
        "id": 3,
        "room": "r",
        "members": ["alice"],
    }
    assert (await root_sink.wait_for(1))[0]["members"] == ["alice"]
    # Joining first, in the same order, makes Bob a member.
    bed.tell(rooms, RouteJoin(bob, "r", 5))
    bed.tell(rooms, RoutePresence(bob, "r", None, 6))
    assert (await b_sink.wait_type("presence_state"))["id"] == 6


@asyncio_only
async def test_join_and_leave_announce_presence(bed: ActorBed) -> None:
    rooms = bed.start(RoomHandler)
    alice, a_sink = bed.session("alice")
    bob, b_sink = bed.session("bob")

    bed.tell(rooms, RouteJoin(alice, "r", 1))
    assert await a_sink.wait_for(1) == [
        {"type": "joined", "id": 1, "room": "r", "members": ["alice"]}
    ]
    bed.tell(rooms, RouteJoin(bob, "r", 2))
    assert await b_sink.wait_for(1) == [
        {"type": "joined", "id": 2, "room": "r", "members": ["alice", "bob"]}
    ]
    assert (await a_sink.wait_for(2))[1] == {
        "type": "presence",
        "room": "r",
        "event": "join",
        "user": "bob",
    }
    assert bob.rooms == {"r"}

    bed.tell(rooms, RouteLeave(bob, "r", 3))
    assert (await b_sink.wait_for(2))[1] == {"type": "left", "id": 3, "room": "r"}
    assert (await a_sink.wait_for(3))[2]["event"] == "leave"
    assert bob.rooms == set()

    # Bob is no longer a member: only Alice gets her own broadcast.
    bed.tell(rooms, RouteRoomBroadcast(alice, "r", "x", 4))
    assert [f["type"] for f in await a_sink.wait_for(5)][3:] == ["message", "ack"]
    assert b_sink.messages() == []


@asyncio_only
async def test_joining_twice_answers_members_without_a_second_announce(bed: ActorBed) -> None:
    rooms = bed.start(RoomHandler)
    alice, a_sink = bed.session("alice")
    bob, b_sink = bed.session("bob")
    bed.tell(rooms, RouteJoin(alice, "r", 1))
    bed.tell(rooms, RouteJoin(bob, "r", 2))
    await a_sink.wait_for(2)

    bed.tell(rooms, RouteJoin(bob, "r", 3))

    assert (await b_sink.wait_for(2))[1]["members"] == ["alice", "bob"]
    # A round trip through the same handler: anything announced is there by now.
    bed.tell(rooms, RoutePresence(alice, "r", None, 4))
    assert await a_sink.wait_type("presence_state") == {
        "type": "presence_state",
        "id": 4,
        "room": "r",
        "members": ["alice", "bob"],
    }
    assert [f["type"] for f in a_sink.frames] == ["joined", "presence", "presence_state"]


@asyncio_only
async def test_presence_of_a_user_counts_connections(bed: ActorBed) -> None:
    rooms = bed.start(RoomHandler)
    alice, a_sink = bed.session("alice")
    presence = bed.ctx.backends.presence
    await presence.add_connection("bob", "c-1", bed.ctx.node_id)
    await presence.add_connection("bob", "c-2", bed.ctx.node_id)

    bed.tell(rooms, RoutePresence(alice, None, "bob", 1))
    bed.tell(rooms, RoutePresence(alice, None, "nobody", 2))

    assert await a_sink.wait_for(2) == [
        {"type": "presence_state", "id": 1, "user": "bob", "online": True, "connections": 2},
        {"type": "presence_state", "id": 2, "user": "nobody", "online": False, "connections": 0},
    ]


@asyncio_only
async def test_session_going_offline_and_back_announces_leave_and_join(bed: ActorBed) -> None:
    rooms = bed.start(RoomHandler)
    alice, a_sink = bed.session("alice")
    bob, _ = bed.session("bob")
    bed.tell(rooms, RouteJoin(alice, "r", 1))
    bed.tell(rooms, RouteJoin(bob, "r", 2))
    await a_sink.wait_for(2)

    bed.tell(rooms, SessionPresence(bob, online=False))
    assert (await a_sink.wait_for(3))[2] == {
        "type": "presence",
        "room": "r",
        "event": "leave",
        "user": "bob",
    }
    # Membership is kept for resume; presence counts attached sessions only.
    assert bob.rooms == {"r"}
    bed.tell(rooms, SessionPresence(bob, online=True))
    assert (await a_sink.wait_for(4))[3]["event"] == "join"
