"""The Redis wire formats: every value round-trips, any input decodes or raises WireError."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from rtcs.backends.base import Envelope
from rtcs.backends.redis.wire import (
    KINDS,
    ConnectionEntry,
    Keys,
    MemberEntry,
    WireError,
    decode_entry,
    decode_envelope,
    encode_entry,
    encode_envelope,
    pack_strings,
    shard_of,
    unpack_strings,
)

text = st.text(max_size=40)
names = st.lists(text, max_size=5).map(tuple)

envelopes = st.builds(
    Envelope,
    origin=text,
    kind=st.sampled_from(KINDS),
    target=text,
    tail=st.binary(max_size=200),
    roles=names,
    users=names,
    exclude=text,
    trace=st.text(max_size=60),
)


@given(envelopes)
def test_every_envelope_round_trips(envelope: Envelope) -> None:
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_an_envelope_without_exclude_is_version_1_byte_for_byte() -> None:
    # What releases before envelope version 2 wrote and read.
    plain = Envelope("n1", "topic", "chat.x", b"tail", roles=("a",), users=("u",))
    data = encode_envelope(plain)
    assert data[0] == 1
    assert data == (
        b"\x01\x00\x00\x02n1\x00\x00\x00\x06chat.x\x00\x01\x00\x01a\x00\x00\x00\x01\x00\x01utail"
    )
    excluding = encode_envelope(Envelope("n1", "topic", "chat.x", b"tail", exclude="pub"))
    assert excluding[0] == 2
    assert decode_envelope(excluding).exclude == "pub"


@given(st.binary(max_size=300))
@example(b"")
@example(b"\x02\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
@example(b"\x01\x00\x00\x00")
@example(b"\x01\x07\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
@example(b"\x01\x00\x00\x01\xff\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")
@example(b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff")
def test_any_bytes_decode_to_an_envelope_or_raise_wire_error(data: bytes) -> None:
    try:
        envelope = decode_envelope(data)
    except WireError:
        return
    assert envelope.kind in KINDS
    assert encode_envelope(envelope) == data  # the encoding is canonical


@given(envelopes)
def test_a_truncated_envelope_never_decodes_to_something_else_silently(
    envelope: Envelope,
) -> None:
    data = encode_envelope(envelope)
    head = data[: len(data) - len(envelope.tail)]  # everything before the tail
    for cut in range(len(head)):
        try:
            decoded = decode_envelope(head[:cut])
        except WireError:
            continue
        raise AssertionError(f"a {cut}-byte prefix decoded to {decoded!r}")


@given(st.lists(text, max_size=8).map(tuple))
def test_string_lists_round_trip(items: tuple[str, ...]) -> None:
    assert unpack_strings(pack_strings(items)) == items


@given(st.binary(max_size=100))
def test_any_bytes_unpack_to_strings_or_raise_wire_error(data: bytes) -> None:
    try:
        items = unpack_strings(data)
    except WireError:
        return
    assert pack_strings(items) == data


@given(
    st.one_of(
        st.builds(ConnectionEntry, text, text),
        st.builds(MemberEntry, text, text, text),
    )
)
def test_presence_entries_round_trip(entry: ConnectionEntry | MemberEntry) -> None:
    assert decode_entry(encode_entry(entry)) == entry


@given(st.binary(max_size=60))
@example(b"c")
@example(b"m3:ab")
@example(b"c99999999999999999999:")
@example(b"c01:ab")
def test_any_bytes_decode_to_an_entry_or_raise_wire_error(data: bytes) -> None:
    try:
        entry = decode_entry(data)
    except WireError:
        return
    assert encode_entry(entry) == data


@given(text, st.integers(1, 64))
def test_a_target_always_lands_on_one_valid_shard(target: str, shards: int) -> None:
    shard = shard_of(target, shards)
    assert 0 <= shard < shards
    keys = Keys("rtcs", shards)
    assert keys.channel(Envelope("n", "room", target, b"")) == keys.shard_channels[shard]
    # A room's presence frames travel with its messages: same channel, same order.
    assert keys.channel(Envelope("n", "presence", target, b"")) == keys.shard_channels[shard]
    assert keys.channel(Envelope("n", "global", "", b"")) == keys.global_channel
    # A topic is carried by the shard of its first segment, which every
    # pattern naming that segment listens to.
    first = target.split(".", 1)[0]
    if first not in ("*", ">"):
        channel = keys.shard_channels[shard_of(first, shards)]
        assert keys.channel(Envelope("n", "topic", target, b"")) == channel
        assert keys.interest("topic", f"{first}.>") == (channel,)
