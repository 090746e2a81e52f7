"""Delivery receipts on the wire (docs/protocol.md "Delivery receipts"): the
``received`` frame, ``subscribe``'s ``receipts`` and redelivered ``message``
frames."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcs.errors import BadRequest
from rtcs.protocol.codec import MAX_SEQ, decode, message_tail, with_seq, with_seq_redelivered
from rtcs.protocol.frames import CLIENT_FRAME_TYPES, Received, Subscribe


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def test_received_is_a_client_frame() -> None:
    assert "received" in CLIENT_FRAME_TYPES
    assert decode(frame(type="received", seq=7)) == Received(None, 7)
    assert decode(frame(type="received", id="r", seq=0)) == Received("r", 0)
    assert decode(frame(type="received", seq=MAX_SEQ, extra=1)) == Received(None, MAX_SEQ)


@pytest.mark.parametrize(
    "seq", [None, "7", -1, 1.0, 1.5, True, False, [], {}, MAX_SEQ + 1, 10**400]
)
def test_received_needs_a_seq_that_is_an_integer_in_range(seq: Any) -> None:
    text = frame(type="received", id=3, seq=seq)
    with pytest.raises(BadRequest) as info:
        decode(text)
    assert info.value.request_id == 3


def test_received_without_seq_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="missing field 'seq'"):
        decode(frame(type="received", id=1))


def test_subscribe_takes_an_optional_receipts_boolean() -> None:
    assert decode(frame(type="subscribe", topic="a.*")) == Subscribe(None, "a.*", False)
    assert decode(frame(type="subscribe", topic="a.*", receipts=True)) == Subscribe(
        None, "a.*", True
    )
    assert decode(frame(type="subscribe", topic="a.*", receipts=False)) == Subscribe(None, "a.*")
    assert decode(frame(type="subscribe", topic="a.*", receipts=None)) == Subscribe(None, "a.*")


@pytest.mark.parametrize("receipts", ["true", 1, 0, [], {}])
def test_subscribe_receipts_must_be_a_boolean(receipts: Any) -> None:
    with pytest.raises(BadRequest, match="'receipts' must be a boolean") as info:
        decode(frame(type="subscribe", id=2, topic="a.*", receipts=receipts))
    assert info.value.request_id == 2


def test_a_redelivered_message_is_the_same_frame_marked() -> None:
    tail = message_tail(topic="news.eu", from_user="bob", data={"x": [1]}, ts=5)
    plain = json.loads(with_seq(4, tail))
    again = json.loads(with_seq_redelivered(4, tail))
    assert again.pop("redelivered") is True
    assert again == plain


@given(st.integers(min_value=0, max_value=MAX_SEQ))
def test_any_seq_in_range_is_a_receipt(seq: int) -> None:
    assert decode(frame(type="received", seq=seq)) == Received(None, seq)
