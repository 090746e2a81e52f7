"""decode accepts or rejects any input with a documented error, never anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcs.errors import ProtocolError
from rtcs.protocol.codec import decode, encode_data, message_tail, with_seq
from rtcs.protocol.frames import (
    Auth,
    Broadcast,
    Join,
    Leave,
    Ping,
    PresenceQuery,
    Publish,
    Send,
    Subscribe,
    Unsubscribe,
)

COMMANDS = (
    Auth,
    Subscribe,
    Unsubscribe,
    Publish,
    Send,
    Join,
    Leave,
    Broadcast,
    PresenceQuery,
    Ping,
)
TYPES = ["auth", "subscribe", "unsubscribe", "publish", "send", "join", "leave", "broadcast"]
TYPES += ["presence", "ping", "welcome", "", "x"]
FIELDS = ["id", "token", "session", "last_seq", "topic", "data", "to", "room", "scope", "filter"]
FIELDS += ["user", "connection", "roles", "users"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

# Frames that look like client frames: a type plus any mix of known fields with any values.
frame_like = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={
        name: json_values
        | st.sampled_from(["a.b", "a.*", ">", "r", "global", "u"])
        | st.fixed_dictionaries(
            {},
            optional={
                "user": json_values | st.just("u"),
                "connection": json_values | st.just("c-1"),
                "roles": st.lists(st.text(max_size=5), max_size=3) | json_values,
                "users": st.lists(st.text(max_size=5), max_size=3) | json_values,
            },
        )
        for name in FIELDS
    },
)


def check(raw: str | bytes) -> None:
    try:
        result = decode(raw)
    except ProtocolError:
        return
    assert isinstance(result, COMMANDS)
    data = getattr(result, "data", None)
    # Anything accepted can be sent on to other clients as valid UTF-8 JSON.
    encoded = with_seq(1, message_tail(topic="t", data=data, ts=0.0))
    assert json.loads(encoded.decode("utf-8"))["data"] == data


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text(raw: str) -> None:
    check(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes(raw: bytes) -> None:
    check(raw)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value(value: Any) -> None:
    check(json.dumps(value))


@settings(max_examples=200, deadline=None)
@given(frame_like, st.booleans())
def test_frame_like_objects(obj: dict[str, Any], as_bytes: bool) -> None:
    raw = json.dumps(obj)
    check(raw.encode() if as_bytes else raw)


@settings(max_examples=200, deadline=None)
@given(json_values.filter(lambda v: v == v))
def test_publish_data_round_trips(data: Any) -> None:
    try:
        raw = json.dumps({"type": "publish", "topic": "a.b", "data": data}, allow_nan=False)
    except ValueError:
        return
    try:
        cmd = decode(raw)
    except ProtocolError:
        return  # lone surrogates in text, or nesting too deep
    assert isinstance(cmd, Publish)
    assert json.loads(encode_data(cmd.data)) == json.loads(json.dumps(data))
