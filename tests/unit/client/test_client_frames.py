"""Typed server frames, client frame encoding, resume URLs and the error classes."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest

import rtcs.client
from rtcs.client import (
    BadTopic,
    Forbidden,
    LimitExceeded,
    Message,
    RtcsError,
    TooLarge,
    Welcome,
)
from rtcs.client._errors import WIRE_ERRORS, error_from_frame
from rtcs.client._frames import encode, resume_url
from rtcs.errors import ErrorCode


def test_a_topic_message() -> None:
    frame: dict[str, Any] = {
        "type": "message",
        "seq": 42,
        "topic": "chat.general",
        "from": "bob",
        "data": {"text": "hi"},
        "ts": 1700000000123,
    }
    message = Message.from_frame(frame)
    assert message == Message(
        42, {"text": "hi"}, topic="chat.general", sender="bob", ts=1700000000123
    )
    assert message.frame is frame
    assert not message.is_direct
    assert not message.redelivered


def test_room_global_and_direct_messages() -> None:
    room = Message.from_frame({"type": "message", "seq": 1, "room": "*", "data": None})
    assert (room.room, room.topic, room.data, room.is_direct) == ("*", None, None, False)
    direct = Message.from_frame({"type": "message", "seq": 2, "from": "carol", "data": 5})
    assert direct.is_direct and direct.sender == "carol"
    again = Message.from_frame({"type": "message", "seq": 3, "data": 1, "redelivered": True})
    assert again.redelivered


def test_ill_typed_fields_read_as_absent() -> None:
    message = Message.from_frame({"type": "message", "seq": True, "topic": 3, "ts": "x"})
    assert (message.seq, message.topic, message.ts) == (0, None, None)


def test_a_welcome() -> None:
    welcome = Welcome.from_frame(
        {
            "type": "welcome",
            "connection_id": "c-1",
            "session_id": "s-1",
            "user": "alice",
            "roles": ["user", 3],
            "heartbeat": 25,
            "resumed": True,
            "replayed": 3,
            "server": "node-1",
            "degraded": True,
        }
    )
    assert welcome == Welcome("c-1", "s-1", "alice", ("user",), 25, True, 3, "node-1", True)


def test_encode_is_compact_json_with_unicode() -> None:
    assert encode({"type": "publish", "data": "é"}, 100) == '{"type":"publish","data":"é"}'


def test_encode_refuses_frames_over_the_size_limit_in_utf8_bytes() -> None:
    encode({"type": "publish", "data": "x" * 20}, 50)
    with pytest.raises(TooLarge, match="exceeds 50 bytes") as info:
        encode({"type": "publish", "data": "é" * 20}, 50)
    assert info.value.code == "too_large"


@pytest.mark.parametrize(
    "data, error", [(float("nan"), ValueError), (float("inf"), ValueError), ({1, 2}, TypeError)]
)
def test_encode_refuses_what_json_cannot_carry(data: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="publish frame"):
        encode({"type": "publish", "data": data}, 1000)


def test_resume_url_adds_or_replaces_the_resume_parameters() -> None:
    url = resume_url("ws://h:1/ws", "s-a b", 41)
    parts = urllib.parse.urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("ws", "h:1", "/ws")
    assert urllib.parse.parse_qs(parts.query) == {"session": ["s-a b"], "last_seq": ["41"]}
    again = resume_url(url + "&x=1", "s-2", 7)
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(again).query)
    assert query == {"x": ["1"], "session": ["s-2"], "last_seq": ["7"]}


def test_every_wire_error_code_has_its_class() -> None:
    assert set(WIRE_ERRORS) == {code.value for code in ErrorCode}
    for code, cls in WIRE_ERRORS.items():
        error = error_from_frame({"type": "error", "code": code, "message": "m"})
        assert type(error) is cls and error.code == code and error.message == "m"
        assert isinstance(error, RtcsError)
        assert getattr(rtcs.client, cls.__name__) is cls  # exported


def test_named_classes() -> None:
    assert isinstance(error_from_frame({"code": "forbidden"}), Forbidden)
    assert isinstance(error_from_frame({"code": "bad_topic"}), BadTopic)
    assert isinstance(error_from_frame({"code": "limit"}), LimitExceeded)


def test_an_unknown_code_is_a_plain_rtcs_error_with_that_code() -> None:
    error = error_from_frame({"type": "error", "code": "teapot", "message": "short and stout"})
    assert type(error) is RtcsError
    assert (error.code, error.message) == ("teapot", "short and stout")
    assert str(error) == "short and stout"
    assert error_from_frame({"type": "error"}).code == "internal"


def test_every_public_name_is_exported() -> None:
    for name in rtcs.client.__all__:
        assert getattr(rtcs.client, name) is not None, name
