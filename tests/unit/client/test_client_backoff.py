"""The reconnect policy: full-jitter exponential backoff, its cap, and giving up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcs.client import Reconnect


def test_the_window_doubles_from_base_up_to_the_cap() -> None:
    policy = Reconnect(base=0.5, cap=4.0)
    assert [policy.window(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_the_factor_sets_the_growth() -> None:
    assert [Reconnect(base=1, cap=100, factor=3).window(n) for n in (1, 2, 3)] == [1, 3, 9]
    assert Reconnect(base=1, cap=100, factor=1).window(50) == 1


def test_a_very_long_outage_stays_at_the_cap() -> None:
    assert Reconnect(base=1, cap=30).window(100_000) == 30


def test_full_jitter_spans_the_whole_window() -> None:
    policy = Reconnect(base=1, cap=8)
    assert policy.delay(3, 0.0) == 0.0
    assert policy.delay(3, 0.5) == 2.0
    assert policy.delay(3, 0.999) == pytest.approx(3.996)


def test_later_adds_its_seconds_to_the_jittered_wait() -> None:
    policy = Reconnect(base=1, cap=8, later=5)
    assert policy.delay(1, 0.0, later=True) == 5.0
    assert policy.delay(2, 0.5, later=True) == 6.0


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    random=st.floats(min_value=0, max_value=1, exclude_max=True),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=100),
    later=st.booleans(),
)
def test_every_delay_lies_within_the_cap(
    attempt: int, random: float, base: float, cap: float, later: bool
) -> None:
    policy = Reconnect(base=base, cap=cap, later=2.0)
    delay = policy.delay(attempt, random, later=later)
    low = 2.0 if later else 0.0
    assert low <= delay <= low + cap


@pytest.mark.parametrize("random", [-0.1, 1.0, 2.0])
def test_random_must_lie_in_the_unit_interval(random: float) -> None:
    with pytest.raises(ValueError, match="random"):
        Reconnect().delay(1, random)


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="attempt"):
        Reconnect().window(0)


def test_never_gives_up_by_default() -> None:
    assert not Reconnect().gives_up(10**9, 10.0**9)


def test_gives_up_after_max_attempts_failures() -> None:
    policy = Reconnect(max_attempts=3)
    assert [policy.gives_up(n, 0.0) for n in (0, 1, 2, 3, 4)] == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_gives_up_after_max_elapsed_seconds() -> None:
    policy = Reconnect(max_elapsed=60)
    assert not policy.gives_up(1000, 59.9)
    assert policy.gives_up(0, 60.0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("base", -1),
        ("base", float("nan")),
        ("cap", float("inf")),
        ("later", -0.5),
        ("factor", 0.5),
        ("factor", float("inf")),
        ("max_attempts", 0),
        ("max_attempts", True),
        ("max_attempts", 2.5),
        ("max_elapsed", 0),
        ("max_elapsed", float("inf")),
    ],
)
def test_bad_values_name_the_field_and_the_value(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"Reconnect\.{field} .*{value!r}"):
        Reconnect(**{field: value})  # type: ignore[arg-type]
