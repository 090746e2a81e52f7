"""A session's delivery receipts in the Redis session record (wire.pack_receipts)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcs.backends.base import ReceiptState
from rtcs.backends.redis.wire import WireError, pack_receipts, unpack_receipts

PATTERN = st.text(alphabet="abc.*>", min_size=1, max_size=20)
STATES = st.builds(
    ReceiptState,
    patterns=st.lists(PATTERN, max_size=5).map(tuple),
    unacked=st.lists(st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 1000)), max_size=20).map(
        tuple
    ),
    upto=st.integers(0, 2**63 - 1),
)


def test_the_exact_bytes() -> None:
    state = ReceiptState(patterns=("a.*",), unacked=((3, 1),), upto=7)
    assert pack_receipts(state) == (
        b"\x01"
        + b"\x00\x00\x00\x00\x00\x00\x00\x07"
        + b"\x00\x00\x00\x01\x00\x00\x00\x03a.*"
        + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x01"
    )


@given(STATES)
def test_round_trip(state: ReceiptState) -> None:
    assert unpack_receipts(pack_receipts(state)) == state


@given(st.binary(max_size=80))
def test_any_bytes_are_receipts_or_a_wire_error(data: bytes) -> None:
    try:
        state = unpack_receipts(data)
    except WireError:
        return
    assert pack_receipts(state) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x02" + bytes(16),  # unknown version
        pack_receipts(ReceiptState(("a",), ((1, 0),), 1))[:-1],  # truncated
        pack_receipts(ReceiptState()) + b"\x00",  # trailing
        b"\x01" + bytes(8) + b"\x00\x00\x00\x01\x00\x00\x00\x01\xff" + bytes(4),  # bad UTF-8
    ],
)
def test_garbage_is_a_wire_error(data: bytes) -> None:
    with pytest.raises(WireError):
        unpack_receipts(data)


def test_out_of_range_values_cannot_be_packed() -> None:
    with pytest.raises(ValueError):
        pack_receipts(ReceiptState(unacked=((2**64, 0),)))
    with pytest.raises(ValueError):
        pack_receipts(ReceiptState(unacked=((1, -1),)))
