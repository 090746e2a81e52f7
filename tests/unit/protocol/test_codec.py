"""decode: every client frame of docs/protocol.md, valid and invalid.

Encoders: exact wire shapes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from rtcs.errors import BadRequest, BadTopic, ErrorCode, ProtocolError
from rtcs.protocol.codec import (
    decode,
    encode_data,
    encode_error,
    encode_frame,
    encode_presence_event,
    encode_welcome,
    message_tail,
    with_seq,
)
from rtcs.protocol.frames import (
    Auth,
    Broadcast,
    BroadcastFilter,
    Join,
    Leave,
    Ping,
    PresenceQuery,
    Publish,
    Send,
    Subscribe,
    Unsubscribe,
)


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def rejects(raw: str | bytes, error: type[ProtocolError] = BadRequest) -> ProtocolError:
    with pytest.raises(error) as info:
        decode(raw)
    assert type(info.value) is error
    return info.value


# ---------------------------------------------------------------- valid frames


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"type": "auth", "token": "t"}, Auth(None, "t", None, None)),
        (
            {"type": "auth", "id": "a", "token": "t", "session": "s-1", "last_seq": 0},
            Auth("a", "t", "s-1", 0),
        ),
        ({"type": "auth", "token": "t", "session": None, "last_seq": None}, Auth(None, "t")),
        ({"type": "subscribe", "id": 1, "topic": "a.b"}, Subscribe(1, "a.b")),
        ({"type": "subscribe", "topic": "a.*.>"}, Subscribe(None, "a.*.>")),
        ({"type": "unsubscribe", "id": "x", "topic": ">"}, Unsubscribe("x", ">")),
        ({"type": "publish", "topic": "a.b", "data": {"k": [1]}}, Publish(None, "a.b", {"k": [1]})),
        ({"type": "publish", "topic": "a", "data": None}, Publish(None, "a", None)),
        ({"type": "send", "to": {"user": "bob"}, "data": 1}, Send(None, "bob", None, 1)),
        ({"type": "send", "to": {"connection": "c-1"}, "data": "x"}, Send(None, None, "c-1", "x")),
        ({"type": "join", "id": 7, "room": "lobby:1@eu.x-y_z"}, Join(7, "lobby:1@eu.x-y_z")),
        ({"type": "leave", "room": "lobby"}, Leave(None, "lobby")),
        (
            {"type": "broadcast", "room": "r", "data": [1]},
            Broadcast(None, "r", None, None, [1]),
        ),
        (
            {"type": "broadcast", "scope": "global", "data": 2},
            Broadcast(None, None, "global", None, 2),
        ),
        (
            {"type": "broadcast", "filter": {"roles": ["admin"]}, "data": 3},
            Broadcast(None, None, None, BroadcastFilter(("admin",), ()), 3),
        ),
        (
            {"type": "broadcast", "filter": {"users": ["a", "b"], "roles": []}, "data": 3},
            Broadcast(None, None, None, BroadcastFilter((), ("a", "b")), 3),
        ),
        ({"type": "presence", "room": "r"}, PresenceQuery(None, "r", None)),
        ({"type": "presence", "user": "alice"}, PresenceQuery(None, None, "alice")),
        ({"type": "ping", "id": "p"}, Ping("p")),
        ({"type": "ping"}, Ping(None)),
    ],
)
def test_valid_frames_decode_to_commands(fields: dict[str, Any], expected: object) -> None:
    assert decode(frame(**fields)) == expected
    assert decode(frame(**fields).encode()) == expected


def test_unknown_extra_fields_are_ignored() -> None:
    assert decode(frame(type="ping", id=1, future={"x": 1}, v=2)) == Ping(1)


def test_broadcast_kind() -> None:
    assert decode(frame(type="broadcast", room="r", data=1)).kind == "room"  # type: ignore[union-attr]
    assert decode(frame(type="broadcast", scope="global", data=1)).kind == "global"  # type: ignore[union-attr]
    assert decode(frame(type="broadcast", filter={"users": ["u"]}, data=1)).kind == "filter"  # type: ignore[union-attr]


def test_non_ascii_text_and_bytes() -> None:
    raw = frame(type="publish", topic="a", data="héllo ✓")
    assert decode(raw) == Publish(None, "a", "héllo ✓")
    assert decode(raw.encode()) == Publish(None, "a", "héllo ✓")
    assert decode('{"type":"publish","topic":"a","data":"\\ud83d\\ude00"}') == Publish(
        None, "a", "😀"
    )


# ---------------------------------------------------------------- invalid envelopes


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "{",
        "not json",
        '{"type":"ping"} trailing',
        "[]",
        '"ping"',
        "1",
        "null",
        b"\xff\xfe",
        b'{"type":"ping","x":"\xc3"}',
        '{"type":"publish","topic":"a","data":NaN}',
        '{"type":"publish","topic":"a","data":Infinity}',
        '{"type":"publish","topic":"a","data":-Infinity}',
        '{"type":"publish","topic":"a","data":1e400}',
        '{"type":"publish","topic":"a","data":' + "9" * 5000 + "}",
        '{"type":"publish","topic":"a","data":"\\ud800"}',
        '{"type":"publish","topic":"a","data":{"\\udc00":1}}',
        '{"type":"publish","topic":"a","data":"\ud800"}',
    ],
)
def test_malformed_frames_are_bad_request(raw: str | bytes) -> None:
    assert rejects(raw).request_id is None


def test_nesting_limit() -> None:
    ok = '{"type":"publish","topic":"a","data":' + "[" * 31 + "]" * 31 + "}"
    assert isinstance(decode(ok), Publish)
    too_deep = '{"type":"publish","id":5,"topic":"a","data":' + "[" * 32 + "]" * 32 + "}"
    rejects(too_deep)
    assert isinstance(decode(too_deep, max_depth=33), Publish)
    # Brackets inside strings do not count as nesting.
    assert isinstance(decode(frame(type="publish", topic="a", data="[" * 100)), Publish)


def test_recursion_error_is_bad_request() -> None:
    rejects('{"type":"publish","topic":"a","data":' + "[" * 100_000 + "]" * 100_000 + "}")
    rejects("[" * 100_000)


@pytest.mark.parametrize("rid", [True, 1.5, None, [], {}, "x" * 65, 10**64])
def test_invalid_id_is_bad_request_without_id(rid: object) -> None:
    assert rejects(frame(type="ping", id=rid)).request_id is None


def test_id_limits() -> None:
    assert decode(frame(type="ping", id="x" * 64)) == Ping("x" * 64)
    assert decode(frame(type="ping", id=10**63)) == Ping(10**63)
    assert decode(frame(type="ping", id="")) == Ping("")
    assert decode(frame(type="ping", id=-3)) == Ping(-3)


@pytest.mark.parametrize(
    "fields",
    [{}, {"type": None}, {"type": 1}, {"type": "welcome"}, {"type": "PING"}, {"type": ""}],
)
def test_missing_or_unknown_type_echoes_id(fields: dict[str, Any]) -> None:
    assert rejects(frame(id="q", **fields)).request_id == "q"


# ---------------------------------------------------------------- invalid fields, per frame

BAD_FIELDS: list[dict[str, Any]] = [
    # auth
    {"type": "auth"},
    {"type": "auth", "token": None},
    {"type": "auth", "token": ""},
    {"type": "auth", "token": 5},
    {"type": "auth", "token": "t", "session": 1},
    {"type": "auth", "token": "t", "session": ""},
    {"type": "auth", "token": "t", "session": "s" * 257},
    {"type": "auth", "token": "t", "last_seq": -1},
    {"type": "auth", "token": "t", "last_seq": True},
    {"type": "auth", "token": "t", "last_seq": 1.0},
    {"type": "auth", "token": "t", "last_seq": "1"},
    {"type": "auth", "token": "t", "last_seq": 2**63},
    # subscribe / unsubscribe / publish: type errors are bad_request
    {"type": "subscribe"},
    {"type": "subscribe", "topic": 1},
    {"type": "subscribe", "topic": None},
    {"type": "unsubscribe"},
    {"type": "unsubscribe", "topic": ["a"]},
    {"type": "publish", "data": 1},
    {"type": "publish", "topic": "a"},
    {"type": "publish", "topic": {}, "data": 1},
    # send
    {"type": "send", "data": 1},
    {"type": "send", "to": "bob", "data": 1},
    {"type": "send", "to": {}, "data": 1},
    {"type": "send", "to": {"user": "a", "connection": "c-1"}, "data": 1},
    {"type": "send", "to": {"user": ""}, "data": 1},
    {"type": "send", "to": {"user": 3}, "data": 1},
    {"type": "send", "to": {"user": "u" * 257}, "data": 1},
    {"type": "send", "to": {"connection": ["c"]}, "data": 1},
    {"type": "send", "to": {"user": "bob"}},
    # join / leave
    {"type": "join"},
    {"type": "join", "room": ""},
    {"type": "join", "room": "r" * 129},
    {"type": "join", "room": "a b"},
    {"type": "join", "room": "*"},
    {"type": "join", "room": "é"},
    {"type": "join", "room": 1},
    {"type": "leave"},
    {"type": "leave", "room": "x/y"},
    # broadcast
    {"type": "broadcast", "data": 1},
    {"type": "broadcast", "room": "r"},
    {"type": "broadcast", "room": "r", "scope": "global", "data": 1},
    {"type": "broadcast", "room": "r", "filter": {"users": ["u"]}, "data": 1},
    {"type": "broadcast", "scope": "local", "data": 1},
    {"type": "broadcast", "scope": 1, "data": 1},
    {"type": "broadcast", "room": "bad room", "data": 1},
    {"type": "broadcast", "filter": {}, "data": 1},
    {"type": "broadcast", "filter": {"roles": [], "users": []}, "data": 1},
    {"type": "broadcast", "filter": {"roles": "admin"}, "data": 1},
    {"type": "broadcast", "filter": {"users": [1]}, "data": 1},
    {"type": "broadcast", "filter": {"users": [""]}, "data": 1},
    {"type": "broadcast", "filter": ["admin"], "data": 1},
    # presence
    {"type": "presence"},
    {"type": "presence", "room": "r", "user": "u"},
    {"type": "presence", "room": "bad room"},
    {"type": "presence", "user": ""},
    {"type": "presence", "user": 1},
]


@pytest.mark.parametrize("fields", BAD_FIELDS)
def test_bad_fields_are_bad_request_with_id(fields: dict[str, Any]) -> None:
    assert rejects(frame(id=42, **fields)).request_id == 42
    assert rejects(frame(**fields)).request_id is None


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "subscribe", "topic": ""},
        {"type": "subscribe", "topic": "a..b"},
        {"type": "subscribe", "topic": "a.>.b"},
        {"type": "subscribe", "topic": "a.b*"},
        {"type": "subscribe", "topic": ".".join("a" * 9)},
        {"type": "unsubscribe", "topic": "a b"},
        {"type": "publish", "topic": "a.*", "data": 1},
        {"type": "publish", "topic": "a.>", "data": 1},
        {"type": "publish", "topic": "x" * 65, "data": 1},
        {"type": "publish", "topic": "é", "data": 1},
    ],
)
def test_bad_topics_are_bad_topic_with_id(fields: dict[str, Any]) -> None:
    assert rejects(frame(id="t", **fields), BadTopic).request_id == "t"


# ---------------------------------------------------------------- encoders


def loads(b: bytes) -> Any:
    assert isinstance(b, bytes)
    return json.loads(b.decode("utf-8"))


def test_encode_frame_shapes() -> None:
    assert encode_frame("pong", 1) == b'{"type":"pong","id":1}'
    assert encode_frame("ack") == b'{"type":"ack"}'
    assert loads(encode_frame("subscribed", "s", topic="a.*")) == {
        "type": "subscribed",
        "id": "s",
        "topic": "a.*",
    }
    assert loads(encode_frame("unsubscribed", 2, topic="a")) == {
        "type": "unsubscribed",
        "id": 2,
        "topic": "a",
    }
    assert loads(encode_frame("joined", 3, room="r", members=["a", "b"])) == {
        "type": "joined",
        "id": 3,
        "room": "r",
        "members": ["a", "b"],
    }
    assert loads(encode_frame("left", 4, room="r")) == {"type": "left", "id": 4, "room": "r"}
    assert loads(encode_frame("presence_state", 5, room="r", members=[])) == {
        "type": "presence_state",
        "id": 5,
        "room": "r",
        "members": [],
    }
    assert loads(encode_frame("presence_state", 6, user="u", online=True, connections=2)) == {
        "type": "presence_state",
        "id": 6,
        "user": "u",
        "online": True,
        "connections": 2,
    }


def test_encode_error() -> None:
    assert loads(encode_error("x", ErrorCode.BAD_TOPIC, "invalid topic")) == {
        "type": "error",
        "id": "x",
        "code": "bad_topic",
        "message": "invalid topic",
    }
    assert loads(encode_error(None, ErrorCode.RATE_LIMITED, "slow down")) == {
        "type": "error",
        "code": "rate_limited",
        "message": "slow down",
    }


def test_encode_welcome() -> None:
    fields: dict[str, Any] = {
        "connection_id": "c-1",
        "session_id": "s-1",
        "user": "alice",
        "roles": ("user",),
        "heartbeat": 25,
        "resumed": False,
        "server": "node-1",
    }
    assert loads(encode_welcome(**fields)) == {"type": "welcome", **fields, "roles": ["user"]}
    resumed = loads(encode_welcome(**{**fields, "resumed": True}, replayed=3, id="a"))
    assert resumed == {
        "type": "welcome",
        "id": "a",
        **fields,
        "roles": ["user"],
        "resumed": True,
        "replayed": 3,
    }


def test_message_tail_and_with_seq() -> None:
    tail = message_tail(topic="a.b", from_user="bob", data={"x": "é"}, ts=1700000000123.9)
    assert tail.startswith(b'"topic":') and tail.endswith(b"}")
    assert loads(with_seq(7, tail)) == {
        "type": "message",
        "seq": 7,
        "topic": "a.b",
        "from": "bob",
        "data": {"x": "é"},
        "ts": 1700000000123,
    }
    assert "é" in with_seq(1, tail).decode("utf-8")  # not \u-escaped
    assert with_seq(12, tail) == b'{"type":"message","seq":12,' + tail

    room = message_tail(room="*", data=None, ts=1000)
    assert loads(with_seq(1, room)) == {
        "type": "message",
        "seq": 1,
        "room": "*",
        "data": None,
        "ts": 1000,
    }
    direct = message_tail(from_user="alice", data=[1], ts=2000)
    assert direct.startswith(b'"from":')
    assert loads(with_seq(2, direct)) == {
        "type": "message",
        "seq": 2,
        "from": "alice",
        "data": [1],
        "ts": 2000,
    }


def test_message_tail_rejects_ambiguous_targets() -> None:
    with pytest.raises(ValueError):
        message_tail(topic="a", room="r", data=1, ts=0.0)
    with pytest.raises(ValueError):
        message_tail(data=1, ts=0.0)


def test_encode_presence_event_and_data() -> None:
    assert loads(encode_presence_event("r", "join", "u")) == {
        "type": "presence",
        "room": "r",
        "event": "join",
        "user": "u",
    }
    assert encode_data({"a": [1, "é"]}) == '{"a":[1,"é"]}'.encode()
    with pytest.raises(ValueError):
        encode_data(float("nan"))


def test_decoded_data_round_trips_through_encoders() -> None:
    cmd = decode(frame(type="publish", topic="a", data={"n": [1, 2.5, None, True, "x"]}))
    assert isinstance(cmd, Publish)
    tail = message_tail(topic=cmd.topic, data=cmd.data, ts=0.0)
    assert loads(with_seq(1, tail))["data"] == {"n": [1, 2.5, None, True, "x"]}
