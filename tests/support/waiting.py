"""Waiting on a condition with a timeout, and a clock that moves only when told.

Tests wait on conditions, never sleep to "let things settle" (STYLE.md, habit
15). When a condition has no event to await (a close the server notices, a
counter of another component, a store behind a network round trip), these
helpers poll it: a short ``asyncio.sleep`` between checks keeps the event loop
running, and the timeout turns "never" into a failure that says what was
awaited.

- :func:`wait_until` polls a plain predicate.
- :func:`wait_until_returns` polls an async probe until it returns a value.
- :func:`describe` names a check in a failure message (its source line).
- :class:`FakeClock` stands in for ``time.monotonic`` wherever code takes a
  ``clock`` or ``now`` callable.

Class-specific waits ("N envelopes in this inbox") are methods built on
:func:`wait_until`, passing a ``message`` that reports the state at timeout.
"""

from __future__ import annotations

import asyncio
import linecache
import os
from collections.abc import Awaitable, Callable

TIMEOUT = 5.0  # seconds: the default wait before a test fails
INTERVAL = 0.005  # seconds between two checks of a polled condition

Message = str | Callable[[], str] | None


def describe(check: Callable[..., object]) -> str:
    """A check's name and the source line that defines it (a lambda's text), for failures."""
    name = getattr(check, "__qualname__", None) or repr(check)
    code = getattr(check, "__code__", None)
    if code is None:
        return name
    line = linecache.getline(code.co_filename, code.co_firstlineno).strip()
    where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
    return f"{name} at {where}: {line}" if line else f"{name} at {where}"


def _message(check: Callable[..., object], message: Message) -> str:
    if callable(message):
        return message()
    return describe(check) if message is None else message


async def wait_until(
    predicate: Callable[[], object],
    timeout: float = TIMEOUT,
    *,
    interval: float = INTERVAL,
    message: Message = None,
) -> None:
    """Return once ``predicate()`` is true, checking it every ``interval`` seconds.

    The predicate runs on the event loop and must not block. It is checked
    once more at the deadline, so a condition that became true during the last
    interval still passes.

    Args:
        predicate: a cheap, synchronous check of the condition.
        timeout: seconds to wait before failing.
        interval: seconds to sleep between two checks.
        message: what was awaited, for the failure; a callable is called at
            the timeout, so it can report the state then (e.g. "3 of 5 frames").
            Defaults to the predicate's name and source line.

    Raises:
        AssertionError: the predicate is still false after ``timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        remaining = deadline - loop.time()
        if remaining <= 0:
            what = _message(predicate, message)
            raise AssertionError(f"still false after {timeout} s: {what}")
        await asyncio.sleep(min(interval, remaining))


async def wait_until_returns(
    probe: Callable[[], Awaitable[object]],
    expected: object,
    timeout: float = TIMEOUT,
    *,
    interval: float = INTERVAL,
    message: Message = None,
) -> None:
    """Return once ``await probe()`` equals ``expected``, probing every ``interval`` seconds.

    For conditions only an async call can observe (a backend store). The
    timeout bounds the probes too: a probe that hangs fails the wait.

    Raises:
        AssertionError: no probe returned ``expected`` within ``timeout``
            seconds; the message gives the last value returned.
    """
    last: object = "<no probe finished>"
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            while (last := await probe()) != expected:
                await asyncio.sleep(interval)
    except TimeoutError:
        if not deadline.expired():
            raise  # the probe's own TimeoutError: not ours to reword
        what = _message(probe, message)
        raise AssertionError(
            f"expected {expected!r}, last got {last!r} after {timeout} s: {what}"
        ) from None


class FakeClock:
    """A monotonic clock that moves only when told to.

    Call it for the time; ``advance(seconds)`` moves it forward. ``now`` is a
    plain attribute for tests that need to set an absolute time. It starts
    away from zero so that code treating 0 as "never" is caught.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``.

        Raises:
            ValueError: ``seconds`` is negative (a monotonic clock never goes back).
        """
        if seconds < 0:
            raise ValueError(f"a monotonic clock cannot go back ({seconds} s)")
        self.now += seconds
