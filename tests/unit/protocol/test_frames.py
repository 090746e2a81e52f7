"""Command invariants and the room/name rules (extensions to docs/protocol.md)."""

from __future__ import annotations

import dataclasses

import pytest

from rtcs.errors import BadRequest
from rtcs.protocol.frames import (
    Broadcast,
    BroadcastFilter,
    Ping,
    PresenceQuery,
    Send,
    validate_name,
    validate_room,
)


@pytest.mark.parametrize("room", ["a", "A-z_0.9:@", "r" * 128, "user@example.com", "a:b.c"])
def test_valid_rooms(room: str) -> None:
    assert validate_room(room) == room


@pytest.mark.parametrize("room", ["", "r" * 129, "a b", "a/b", "*", "é", "a\n", None, 1])
def test_invalid_rooms(room: object) -> None:
    with pytest.raises(BadRequest) as info:
        validate_room(room, request_id=9)
    assert info.value.request_id == 9


def test_names() -> None:
    assert validate_name("u" * 256, "user") == "u" * 256
    for bad in ("", "u" * 257, None, 3, ["u"]):
        with pytest.raises(BadRequest):
            validate_name(bad, "user")


def test_send_needs_exactly_one_target() -> None:
    Send(1, "u", None, 0)
    Send(1, None, "c-1", 0)
    for user, conn in ((None, None), ("u", "c-1")):
        with pytest.raises(BadRequest) as info:
            Send(1, user, conn, 0)
        assert info.value.request_id == 1


def test_broadcast_needs_exactly_one_target() -> None:
    f = BroadcastFilter(roles=("admin",))
    assert Broadcast(None, "r", None, None, 0).kind == "room"
    assert Broadcast(None, None, "global", None, 0).kind == "global"
    assert Broadcast(None, None, None, f, 0).kind == "filter"
    for room, scope, flt in ((None, None, None), ("r", "global", None), ("r", None, f)):
        with pytest.raises(BadRequest):
            Broadcast("b", room, scope, flt, 0)  # type: ignore[arg-type]


def test_broadcast_filter_needs_a_criterion() -> None:
    with pytest.raises(BadRequest):
        BroadcastFilter()
    assert BroadcastFilter(users=("u",)).roles == ()


def test_presence_needs_exactly_one_target() -> None:
    PresenceQuery(None, "r", None)
    PresenceQuery(None, None, "u")
    for room, user in ((None, None), ("r", "u")):
        with pytest.raises(BadRequest):
            PresenceQuery(None, room, user)


def test_commands_are_frozen_and_slotted() -> None:
    ping = Ping(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ping.id = 2  # type: ignore[misc]
    assert not hasattr(ping, "__dict__")
    assert hash(Ping(1)) == hash(ping)
