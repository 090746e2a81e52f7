"""The circuit breaker (rtcs/backends/breaker.py) and the guarded backends: pure, synchronous
where they can be, with a fake clock."""

from __future__ import annotations

import pytest

from rtcs.backends.base import Backends
from rtcs.backends.breaker import BreakerPolicy, BreakerState, CircuitBreaker
from rtcs.backends.guarded import guard
from rtcs.backends.memory import MemoryBroker, MemorySessionStore, memory_backends
from rtcs.errors import ConfigError, Unavailable
from tests.support.waiting import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def breaker(
    failures: int = 3, successes: int = 2, timeout: float = 5.0
) -> tuple[CircuitBreaker, list[tuple[BreakerState, BreakerState]]]:
    seen: list[tuple[BreakerState, BreakerState]] = []
    b = CircuitBreaker(
        BreakerPolicy(failures, successes, timeout), lambda o, n: seen.append((o, n))
    )
    return b, seen


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    b, seen = breaker(failures=3)
    b.failed(0.0)
    b.failed(0.0)
    b.succeeded()
    b.failed(0.0)
    b.failed(0.0)
    assert b.state is CLOSED and not b.degraded and seen == []
    b.failed(1.0)
    assert b.state is OPEN and b.degraded and seen == [(CLOSED, OPEN)]


def test_open_refuses_until_the_timeout_then_lets_a_trial_through() -> None:
    b, seen = breaker(failures=1, timeout=5.0)
    b.failed(10.0)
    assert not b.allow(10.0) and not b.allow(14.99)
    assert b.allow(15.0) and b.state is HALF_OPEN
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_half_open_closes_after_enough_successes() -> None:
    b, seen = breaker(failures=1, successes=2, timeout=1.0)
    b.failed(0.0)
    assert b.allow(1.0)
    b.succeeded()
    assert b.state is HALF_OPEN and b.degraded
    b.succeeded()
    assert b.state is CLOSED and not b.degraded
    assert seen[-1] == (HALF_OPEN, CLOSED)


def test_trip_opens_it_at_once_from_closed_and_half_open() -> None:
    b, seen = breaker(failures=5, timeout=1.0)
    b.trip(0.0)
    assert b.state is OPEN and not b.allow(0.5)
    assert b.allow(1.0) and b.state is HALF_OPEN
    b.trip(1.2)
    assert b.state is OPEN and not b.allow(2.1) and b.allow(2.2)
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN), (OPEN, HALF_OPEN)]


async def test_the_probe_fails_while_the_broker_is_not_subscribed() -> None:
    class Unsubscribed(MemoryBroker):
        def __init__(self) -> None:
            super().__init__()
            self.distributed = True  # as if other nodes shared it

        def healthy(self) -> bool:
            return False

    b, _ = breaker(failures=1)
    plain = memory_backends()
    _, probe = guard(Backends(Unsubscribed(), plain.sessions, plain.presence), b, FakeClock(0.0))
    with pytest.raises(Unavailable, match="not subscribed"):
        await probe()
    assert b.state is OPEN


def test_a_failed_trial_opens_it_again_and_restarts_the_timeout() -> None:
    b, seen = breaker(failures=1, successes=2, timeout=1.0)
    b.failed(0.0)
    assert b.allow(1.0)
    b.succeeded()
    b.failed(1.5)
    assert b.state is OPEN and seen[-1] == (HALF_OPEN, OPEN)
    assert not b.allow(2.4) and b.allow(2.5)
    b.succeeded()  # the earlier success does not count any more
    assert b.state is HALF_OPEN


@pytest.mark.parametrize(
    "failures, successes, timeout, key",
    [
        (0, 1, 1.0, "breaker.failure_threshold"),
        (1, 0, 1.0, "breaker.success_threshold"),
        (1, 1, 0.0, "breaker.timeout"),
    ],
)
def test_a_bad_policy_names_its_key(
    failures: int, successes: int, timeout: float, key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        BreakerPolicy(failures, successes, timeout)
    assert info.value.key == key


class SwitchableSessions(MemorySessionStore):
    """A session store that can be down (every call raises ``Unavailable``)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.calls = 0

    async def count(self) -> int:
        self.calls += 1
        if self.down:
            raise Unavailable("down")
        return await super().count()


async def test_guarded_calls_feed_the_breaker_and_fail_fast_while_open() -> None:
    clock = FakeClock(0.0)
    b, _ = breaker(failures=2, successes=1, timeout=5.0)
    sessions = SwitchableSessions()
    plain = memory_backends()
    guarded, probe = guard(Backends(plain.broker, sessions, plain.presence), b, clock)
    await probe()
    assert b.state is CLOSED and sessions.calls == 1
    sessions.down = True
    for _ in range(2):
        with pytest.raises(Unavailable):
            await guarded.sessions.count()
    assert b.state is OPEN and sessions.calls == 3
    # Open: refused without reaching the backend, whatever the store would say.
    sessions.down = False
    with pytest.raises(Unavailable, match="circuit open"):
        await guarded.sessions.count()
    with pytest.raises(Unavailable, match="circuit open"):
        await guarded.presence.members("r")
    assert sessions.calls == 3
    clock.advance(5.0)
    await probe()
    assert b.state is CLOSED and sessions.calls == 4


async def test_errors_that_are_the_callers_fault_do_not_count() -> None:
    b, _ = breaker(failures=1)
    guarded, _ = guard(memory_backends(), b, FakeClock(0.0))
    with pytest.raises(ValueError):
        await guarded.sessions.append("s-1", 1, b"x", -1)
    assert b.state is CLOSED
