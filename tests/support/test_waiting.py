"""The shared waiting helpers and the fake clock."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import FakeClock, wait_until, wait_until_returns


async def test_wait_until_returns_once_the_condition_holds() -> None:
    flag: list[bool] = []
    asyncio.get_running_loop().call_later(0.02, flag.append, True)
    await wait_until(lambda: bool(flag), timeout=2)
    assert flag == [True]


async def test_wait_until_fails_naming_the_condition() -> None:
    def never_true() -> bool:
        return False

    with pytest.raises(AssertionError, match=r"still false after 0\.05 s: .*never_true at "):
        await wait_until(never_true, timeout=0.05)
    # A lambda is named by its source line.
    with pytest.raises(AssertionError, match=r'<lambda> at test_waiting\.py:\d+: .*text == ""'):
        text = "lambda text"
        await wait_until(lambda: text == "", timeout=0.05)


async def test_wait_until_reports_the_given_message_at_the_timeout() -> None:
    seen = [1, 2]
    with pytest.raises(AssertionError, match="3 items, got 2"):
        await wait_until(
            lambda: len(seen) >= 3, timeout=0.05, message=lambda: f"3 items, got {len(seen)}"
        )


async def test_wait_until_returns_compares_what_the_probe_returns() -> None:
    values = iter(range(100))

    async def probe() -> int:
        return next(values)

    await wait_until_returns(probe, 3, timeout=2, interval=0)
    with pytest.raises(AssertionError, match=r"expected -1, last got \d+ after 0\.05 s"):
        await wait_until_returns(probe, -1, timeout=0.05)


async def test_wait_until_returns_bounds_a_hanging_probe() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    with pytest.raises(AssertionError, match="last got '<no probe finished>'"):
        await wait_until_returns(hangs, True, timeout=0.05)


async def test_the_probes_own_timeout_error_is_not_reworded() -> None:
    async def times_out() -> None:
        raise TimeoutError("the probe's")

    with pytest.raises(TimeoutError, match="the probe's"):
        await wait_until_returns(times_out, True, timeout=2)


def test_fake_clock_moves_only_when_told() -> None:
    clock = FakeClock(10.0)
    assert clock() == clock() == 10.0
    clock.advance(2.5)
    assert clock() == 12.5
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)
    assert clock() == 12.5
