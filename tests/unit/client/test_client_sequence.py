"""Exactly once, in order: the client's seq bookkeeping across overlapping replays."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcs.client._sequence import SeqTracker


def test_new_messages_are_accepted_in_order() -> None:
    seq = SeqTracker()
    assert [seq.accept(n) for n in (1, 2, 3)] == [True, True, True]
    assert (seq.last, seq.duplicates, seq.gaps) == (3, 0, 0)


def test_a_replay_overlapping_what_was_received_is_dropped() -> None:
    seq = SeqTracker()
    for n in (1, 2, 3):
        seq.accept(n)
    assert [seq.accept(n) for n in (2, 3, 4, 5)] == [False, False, True, True]
    assert (seq.last, seq.duplicates) == (5, 2)


def test_a_skipped_seq_is_accepted_and_counted() -> None:
    # rtcs skips the seq of messages withheld after a role downgrade.
    seq = SeqTracker()
    assert seq.accept(1) and seq.accept(4)
    assert (seq.last, seq.gaps) == (4, 1)
    assert not seq.accept(3)  # older than what was handed on


def test_reset_starts_a_new_session() -> None:
    seq = SeqTracker(7)
    seq.reset()
    assert seq.last == 0
    assert seq.accept(1)


def test_last_is_not_negative() -> None:
    with pytest.raises(ValueError, match="last"):
        SeqTracker(-1)


@given(
    n=st.integers(min_value=1, max_value=60),
    resumes=st.lists(st.integers(min_value=0, max_value=60), max_size=8),
)
def test_any_replays_give_each_message_once_in_order(n: int, resumes: list[int]) -> None:
    """A connection delivers a prefix, then each resume replays from any point
    at or before what was received (a late ``last_seq``): the output is 1..n."""
    seq = SeqTracker()
    handed: list[int] = []
    received = 0
    for cut in [*resumes, n]:
        start = min(cut, received)  # a replay never starts after what we hold
        stop = max(received, min(n, cut + 5))
        for number in range(start + 1, stop + 1):
            if seq.accept(number):
                handed.append(number)
        received = max(received, stop)
    # the final delivery runs to the end
    for number in range(1, n + 1):
        if seq.accept(number):
            handed.append(number)
    assert handed == list(range(1, n + 1))
