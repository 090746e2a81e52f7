"""decode accepts or rejects any input with a documented error, never anything else."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcs.errors import ProtocolError
from rtcs.protocol.codec import decode, encode_data, message_tail, with_seq
from rtcs.protocol.frames import COMMANDS, Publish

# Text that may hold lone surrogates: json.dumps writes them as "\\udXXX" escapes.
any_text = st.text(
    alphabet=st.characters(exclude_categories=())
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    max_size=12,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
plausible = st.sampled_from(["a.b", "a.*", ">", "a..b", "r", "global", "u", "c-1", "", "x" * 300])
value = plausible | json_values
names = st.lists(plausible | json_values, max_size=3)

# The fields each frame type reads; every field is present or absent, with a plausible
# or an arbitrary value, so that every branch of every frame decoder is reached.
FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "auth": {"token": value, "session": value, "last_seq": value | st.integers(-2, 2)},
    "subscribe": {"topic": value},
    "unsubscribe": {"topic": value},
    "publish": {"topic": value, "data": json_values},
    "send": {
        "to": st.fixed_dictionaries({}, optional={"user": value, "connection": value}) | value,
        "data": json_values,
    },
    "join": {"room": value},
    "leave": {"room": value},
    "broadcast": {
        "room": value,
        "scope": value,
        "filter": st.fixed_dictionaries({}, optional={"roles": names, "users": names}) | value,
        "data": json_values,
    },
    "presence": {"room": value, "user": value},
    "ping": {},
    "welcome": {"token": value},
}
ids = st.one_of(st.integers(), any_text, json_values, st.text(min_size=60, max_size=70))

frame_like = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda type_: st.fixed_dictionaries(
        {"type": st.just(type_)}, optional={"id": ids, **FIELDS[type_]}
    )
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
