"""The pure parts of the service API (rtcs.api): bodies, permissions, answers."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcs.api import (
    BROADCAST_PATH,
    PATHS,
    PUBLISH_PATH,
    SEND_PATH,
    STATUS,
    ApiCommand,
    answer,
    check,
    decode,
    refusal,
    target,
)
from rtcs.auth.permissions import Policy
from rtcs.auth.tokens import Identity
from rtcs.errors import BadRequest, BadTopic, ErrorCode, Forbidden, ProtocolError
from rtcs.protocol.frames import Broadcast, BroadcastFilter, Publish, Send


def body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def identity(*roles: str, user: str = "billing") -> Identity:
    return Identity(user, roles, None, 0.0, {})


# -- decode ------------------------------------------------------------------------------


def test_each_path_decodes_the_frame_of_its_type() -> None:
    assert decode(PUBLISH_PATH, body({"topic": "a.b", "data": [1], "id": "x"})) == Publish(
        "x", "a.b", [1]
    )
    assert decode(SEND_PATH, body({"to": {"connection": "c-1"}, "data": None})) == Send(
        None, None, "c-1", None
    )
    got = decode(BROADCAST_PATH, body({"filter": {"users": ["bob"]}, "data": 1, "id": 3}))
    assert got == Broadcast(3, None, None, BroadcastFilter((), ("bob",)), 1)


@pytest.mark.parametrize(
    ("raw", "error", "rid"),
    [
        (b"{", BadRequest, None),
        (b"null", BadRequest, None),
        (b'{"topic": "a", "data": 1, "to": {}}', BadRequest, None),  # send's field
        (b'{"topic": "a", "data": 1, "id": 4, "zz": 0}', BadRequest, 4),  # id echoed
        (b'{"topic": "a", "data": Infinity}', BadRequest, None),
        (b'{"topic": "a", "data": "\\ud800"}', BadRequest, None),  # a lone surrogate
        (b'{"topic": ">", "data": 1, "id": "p"}', BadTopic, "p"),
    ],
)
def test_refused_bodies(raw: bytes, error: type[ProtocolError], rid: Any) -> None:
    with pytest.raises(error) as info:
        decode(PUBLISH_PATH, raw)
    assert type(info.value) is error and info.value.request_id == rid


def test_nesting_is_bounded_like_a_frames() -> None:
    nested = {"topic": "a", "data": [[[1]]]}
    assert decode(PUBLISH_PATH, body(nested), max_depth=4).data == [[[1]]]
    with pytest.raises(BadRequest):
        decode(PUBLISH_PATH, body(nested), max_depth=3)


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
fields = st.sampled_from(["topic", "data", "id", "to", "room", "scope", "filter", "type", "x"])
plausible = st.sampled_from(
    ["a.b", "a.*", "lobby", "global", {"user": "u"}, {"roles": ["r"]}, "", 7]
)


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(sorted(PATHS)),
    payload=st.dictionaries(fields, plausible | values, max_size=5) | values,
)
def test_any_json_body_is_a_command_or_a_documented_error(path: str, payload: Any) -> None:
    try:
        command = decode(path, json.dumps(payload).encode())
    except (BadRequest, BadTopic):
        return
    assert isinstance(command, (Publish, Send, Broadcast))


@settings(max_examples=300, deadline=None)
@given(path=st.sampled_from(sorted(PATHS)), raw=st.binary(max_size=64))
def test_any_bytes_are_a_command_or_a_documented_error(path: str, raw: bytes) -> None:
    try:
        command = decode(path, raw)
    except (BadRequest, BadTopic):
        return
    assert isinstance(command, (Publish, Send, Broadcast))


# -- check --------------------------------------------------------------------------------


POLICY = Policy.from_mapping(
    {
        "roles": {
            "*": {"publish": [">"], "publish_deny": ["system.>"], "broadcast": ["room"]},
            "service": {"publish": ["system.billing.{user}"], "direct": True, "rooms": True},
            "admin": {"broadcast": ["global", "filter"], "join": ["ops-*"], "rooms": True},
        }
    }
)


@pytest.mark.parametrize(
    ("roles", "command", "allowed"),
    [
        (("service",), Publish(None, "chat.x", 1), True),
        (("service",), Publish(None, "system.alert", 1), False),
        (("service",), Publish(None, "system.billing.billing", 1), True),  # {user}: the sub
        (("service",), Publish(None, "system.billing.other", 1), False),
        (("service",), Send(None, "bob", None, 1), True),
        (("admin",), Send(None, "bob", None, 1), False),
        (("service",), Broadcast(None, "lobby", None, None, 1), True),
        (("admin",), Broadcast(None, "lobby", None, None, 1), False),  # may not join lobby
        (("admin",), Broadcast(None, "ops-1", None, None, 1), True),
        (("service",), Broadcast(None, None, "global", None, 1), False),
        (("admin",), Broadcast(None, None, "global", None, 1), True),
        (("admin",), Broadcast(None, None, None, BroadcastFilter(("ops",)), 1), True),
    ],
)
def test_check_applies_the_roles_as_on_a_websocket(
    roles: tuple[str, ...], command: ApiCommand, allowed: bool
) -> None:
    if allowed:
        check(POLICY, identity(*roles), command)
        return
    with pytest.raises(Forbidden):
        check(POLICY, identity(*roles), command)


# -- answers -------------------------------------------------------------------------------


def test_every_wire_error_code_has_a_status() -> None:
    assert set(STATUS) == set(ErrorCode)
    assert refusal(ErrorCode.OFFLINE, "gone", "i") == (
        HTTPStatus.NOT_FOUND,
        {"code": "offline", "message": "gone", "id": "i"},
    )


def test_an_ack_is_202_with_the_target_and_the_plugins_answers() -> None:
    command = Publish(5, "a.b", 1)
    tail = b'{"type":"message","seq":1,"topic":"a.b","data":{"ok":true},"ts":1}'
    assert answer(command, b'{"type":"ack","id":5}', [tail]) == (
        HTTPStatus.ACCEPTED,
        {"status": "routed", "topic": "a.b", "id": 5, "answers": [{"ok": True}]},
    )
    error = b'{"type":"error","code":"unavailable","message":"broker unavailable"}'
    assert answer(command, error, []) == (
        HTTPStatus.SERVICE_UNAVAILABLE,
        {"code": "unavailable", "message": "broker unavailable", "id": 5},
    )


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (Send(None, None, "c-1", 1), {"to": {"connection": "c-1"}}),
        (Broadcast(None, None, "global", None, 1), {"scope": "global"}),
        (
            Broadcast(None, None, None, BroadcastFilter((), ("u",)), 1),
            {"filter": {"roles": [], "users": ["u"]}},
        ),
    ],
)
def test_target_repeats_the_address(command: ApiCommand, expected: dict[str, Any]) -> None:
    assert target(command) == expected
