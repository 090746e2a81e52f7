"""Envelope wire version 3: the trace (W3C ``traceparent``) of a traced message.

Version 3 is written only for an envelope with a ``trace``; without one the
bytes are exactly versions 1 and 2 as before (tests/property/test_redis_wire_properties.py
checks those bytes and the canonical encoding of any input).
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from rtcs.backends.base import Envelope
from rtcs.backends.redis.wire import (
    VERSION,
    VERSION_EXCLUDE,
    VERSION_TRACE,
    WireError,
    decode_envelope,
    encode_envelope,
)
from tests.property.test_redis_wire_properties import envelopes

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

# The version 1 bytes of tests/property/test_redis_wire_properties.py.
V1 = b"\x01\x00\x00\x02n1\x00\x00\x00\x06chat.x\x00\x01\x00\x01a\x00\x00\x00\x01\x00\x01utail"


def test_an_envelope_without_trace_is_written_as_before() -> None:
    plain = Envelope("n1", "topic", "chat.x", b"tail", roles=("a",), users=("u",))
    assert plain.trace == ""
    assert encode_envelope(plain) == V1
    excluding = encode_envelope(Envelope("n1", "topic", "chat.x", b"tail", exclude="pub"))
    assert excluding[0] == VERSION_EXCLUDE
    assert decode_envelope(excluding).trace == ""


def test_a_traced_envelope_is_version_3_byte_for_byte() -> None:
    traced = Envelope("n1", "topic", "chat.x", b"tail", roles=("a",), users=("u",), trace="tp")
    data = encode_envelope(traced)
    # Version 1's fields, an empty exclude, then the trace, then the tail.
    assert data == (
        b"\x03\x00\x00\x02n1\x00\x00\x00\x06chat.x\x00\x01\x00\x01a\x00\x00\x00\x01\x00\x01u"
        b"\x00\x00"
        b"\x00\x02tp"
        b"tail"
    )
    assert decode_envelope(data) == traced


def test_a_traced_envelope_keeps_its_exclude() -> None:
    traced = Envelope("n1", "room", "lobby", b"{}", exclude="pub", trace=TRACEPARENT)
    data = encode_envelope(traced)
    assert data[0] == VERSION_TRACE
    assert b"\x00\x03pub\x00\x37" + TRACEPARENT.encode() + b"{}" in data
    assert decode_envelope(data) == traced


def test_version_3_without_a_trace_is_refused() -> None:
    # What encode_envelope never writes: it writes version 1 or 2 then.
    data = bytearray(encode_envelope(Envelope("n", "topic", "t", b"x", trace="tp")))
    head = bytes(data[: data.index(b"\x00\x02tp")])
    with pytest.raises(WireError, match="without a trace"):
        decode_envelope(head + b"\x00\x00x")


def test_a_trace_longer_than_its_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="trace"):
        encode_envelope(Envelope("n", "topic", "t", b"", trace="x" * 0x10000))


# Any envelope of the wire properties, with a trace.
traced_envelopes = st.builds(dataclasses.replace, envelopes, trace=st.text(min_size=1, max_size=80))


@given(traced_envelopes)
def test_every_traced_envelope_round_trips(envelope: Envelope) -> None:
    data = encode_envelope(envelope)
    assert data[0] == VERSION_TRACE
    assert decode_envelope(data) == envelope


@given(traced_envelopes)
def test_dropping_the_trace_gives_the_older_versions(envelope: Envelope) -> None:
    untraced = Envelope(
        envelope.origin,
        envelope.kind,
        envelope.target,
        envelope.tail,
        envelope.roles,
        envelope.users,
        envelope.exclude,
    )
    data = encode_envelope(untraced)
    assert data[0] == (VERSION_EXCLUDE if envelope.exclude else VERSION)
    assert decode_envelope(data) == untraced


@given(st.binary(max_size=300).map(lambda rest: b"\x03" + rest))
@example(b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
@example(b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01x")
@example(b"\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\xff\xfe")
def test_any_version_3_bytes_decode_canonically_or_raise_wire_error(data: bytes) -> None:
    try:
        envelope = decode_envelope(data)
    except WireError:
        return
    assert envelope.trace
    assert encode_envelope(envelope) == data  # the encoding is canonical


@given(traced_envelopes)
def test_a_truncated_traced_envelope_never_decodes(envelope: Envelope) -> None:
    data = encode_envelope(envelope)
    head = data[: len(data) - len(envelope.tail)]
    for cut in range(len(head)):
        with pytest.raises(WireError):
            decode_envelope(head[:cut])
