"""How a shutdown spreads its closes (``drain_plan`` of the connection supervisor)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcs.actors.connection_supervisor import DRAIN_MIN_RATE, DRAIN_TICK, drain_plan


@pytest.mark.parametrize(
    ("count", "within", "expected"),
    [
        (0, 8.0, (0, 0.0)),
        (1, 8.0, (1, 0.0)),
        (4, 8.0, (4, 0.0)),  # under one tick at the minimum rate: at once
        (150, 0.0, (150, 0.0)),  # no time given: at once
        (150, -1.0, (150, 0.0)),
    ],
)
def test_few_connections_or_no_time_close_at_once(
    count: int, within: float, expected: tuple[int, float]
) -> None:
    assert drain_plan(count, within) == expected


def test_many_connections_fill_the_window() -> None:
    batch, interval = drain_plan(10_000, 8.0)
    assert interval == pytest.approx(DRAIN_TICK)
    last = (math.ceil(10_000 / batch) - 1) * interval
    assert 7.5 <= last <= 8.0


def test_a_few_hundred_go_at_the_minimum_rate() -> None:
    batch, interval = drain_plan(150, 8.0)
    last = (math.ceil(150 / batch) - 1) * interval
    assert last <= 150 / DRAIN_MIN_RATE  # not stretched to 8 s


@given(count=st.integers(0, 200_000), within=st.floats(-1.0, 120.0))
def test_every_connection_is_closed_by_the_end_of_the_window(count: int, within: float) -> None:
    batch, interval = drain_plan(count, within)
    if count == 0:
        assert batch == 0
        return
    assert batch >= 1
    assert interval == 0.0 or interval >= DRAIN_TICK * 0.999
    last = (math.ceil(count / batch) - 1) * interval
    assert last <= max(within, 0.0) + 1e-9
    assert last <= count / DRAIN_MIN_RATE + 1e-9
