"""The circuit breaker around the shared backend, written as a table.

States and rules (docs/operations.md, "Degraded mode"):

- CLOSED: calls go through. ``failure_threshold`` consecutive failures ->
  OPEN. A success resets the count. ``trip`` (the backend reported itself
  down: its subscription connection dropped or stopped answering) -> OPEN
  at once.
- OPEN: calls fail at once (``Unavailable``), nothing reaches the backend.
  Once ``timeout`` seconds have passed, the next call (or probe) is let
  through as a trial -> HALF_OPEN.
- HALF_OPEN: trial calls go through. A failure -> OPEN (the timeout starts
  again); ``success_threshold`` consecutive successes -> CLOSED.

While the breaker is not CLOSED the node is *degraded*: local delivery goes
on, requests that need the backend are answered ``unavailable``, and clients
are told with ``status`` frames.

Pure: no I/O; the caller passes ``now``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from rtcs.errors import ConfigError, TransitionError

__all__ = ["TRANSITIONS", "BreakerEvent", "BreakerPolicy", "BreakerState", "CircuitBreaker"]


class BreakerState(enum.Enum):
    """Whether calls reach the backend."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerEvent(enum.Enum):
    """What moves the breaker between states."""

    TRIPPED = "tripped"  # failure_threshold consecutive failures while closed
    COOLED = "cooled"  # the timeout passed while open: allow a trial
    TRIAL_FAILED = "trial_failed"
    RECOVERED = "recovered"  # success_threshold consecutive successes while half-open


TRANSITIONS: dict[BreakerState, dict[BreakerEvent, BreakerState]] = {
    BreakerState.CLOSED: {BreakerEvent.TRIPPED: BreakerState.OPEN},
    BreakerState.OPEN: {BreakerEvent.COOLED: BreakerState.HALF_OPEN},
    BreakerState.HALF_OPEN: {
        BreakerEvent.TRIAL_FAILED: BreakerState.OPEN,
        BreakerEvent.RECOVERED: BreakerState.CLOSED,
    },
}


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """``[breaker]``: when the breaker opens and closes.

    Raises:
        ConfigError: a threshold below 1 or a timeout that is not positive.
    """

    failure_threshold: int = 5
    success_threshold: int = 2
    timeout: float = 5.0

    def __post_init__(self) -> None:
        for key in ("failure_threshold", "success_threshold"):
            value = getattr(self, key)
            if type(value) is not int or value < 1:
                raise ConfigError(f"breaker.{key}", value, "must be a whole number of at least 1")
        if not self.timeout > 0:
            raise ConfigError("breaker.timeout", self.timeout, "must be greater than 0")


Listener = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """One breaker: ``allow`` before a call, then ``succeeded`` or ``failed``.

    ``on_change(old, new)`` is called on every transition, synchronously.
    Obligations: used from one thread (the event loop).
    """

    __slots__ = ("_failures", "_listener", "_opened_at", "_successes", "policy", "state")

    def __init__(self, policy: BreakerPolicy, on_change: Listener | None = None) -> None:
        self.policy = policy
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._successes = 0
        self._opened_at = 0.0
        self._listener = on_change

    @property
    def degraded(self) -> bool:
        """True while calls may not reach the backend (OPEN or HALF_OPEN)."""
        return self.state is not BreakerState.CLOSED

    def allow(self, now: float) -> bool:
        """May a call go to the backend now? Moves OPEN to HALF_OPEN after the timeout."""
        if self.state is BreakerState.OPEN:
            if now - self._opened_at < self.policy.timeout:
                return False
            self._fire(BreakerEvent.COOLED)
            self._successes = 0
        return True

    def succeeded(self) -> None:
        """A call that was allowed succeeded."""
        if self.state is BreakerState.HALF_OPEN:
            self._successes += 1
            if self._successes >= self.policy.success_threshold:
                self._failures = 0
                self._fire(BreakerEvent.RECOVERED)
        else:
            self._failures = 0

    def failed(self, now: float) -> None:
        """A call that was allowed failed because the backend is unavailable."""
        if self.state is BreakerState.HALF_OPEN:
            self._opened_at = now
            self._fire(BreakerEvent.TRIAL_FAILED)
        elif self.state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self.policy.failure_threshold:
                self._opened_at = now
                self._fire(BreakerEvent.TRIPPED)

    def trip(self, now: float) -> None:
        """The backend is known to be down: open now (from CLOSED or HALF_OPEN)."""
        if self.state is BreakerState.CLOSED:
            self._opened_at = now
            self._failures = 0
            self._fire(BreakerEvent.TRIPPED)
        elif self.state is BreakerState.HALF_OPEN:
            self._opened_at = now
            self._fire(BreakerEvent.TRIAL_FAILED)

    def _fire(self, event: BreakerEvent) -> None:
        old = self.state
        try:
            self.state = TRANSITIONS[old][event]
        except KeyError:  # pragma: no cover - the methods above only fire legal events
            raise TransitionError(old, event) from None
        if self._listener is not None:
            self._listener(old, self.state)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.state.value})"
