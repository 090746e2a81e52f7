"""Per-connection rate limiting (docs/protocol.md "Limits and close codes").

Excess frames are answered with ``rate_limited``; a client that keeps
exceeding the limit is closed with 4029. Invalid frames (``bad_request``,
``bad_topic``) spend the same error budget (``RateLimiter.penalize``). The
caller passes ``now`` (a monotonic clock in seconds) to every call.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import math

__all__ = ["RateLimiter", "TokenBucket", "Verdict"]

_EPSILON = 1e-9


class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` tokens per second.

    The bucket starts full.

    Raises:
        ValueError: ``rate`` is not a positive finite number or ``burst`` < 1.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._last = now

    def take(self, now: float, n: int = 1) -> bool:
        """Take ``n`` tokens if available; True if taken, False (nothing taken) if not."""
        elapsed = now - self._last
        if elapsed > 0:  # a clock that steps back refills nothing
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now
        # The epsilon absorbs float drift from summing many small refills.
        if self._tokens >= n - _EPSILON:
            self._tokens -= n
            return True
        return False

    def tokens(self, now: float) -> float:
        """Tokens available at ``now`` (without taking any)."""
        elapsed = max(0.0, now - self._last)
        return min(float(self.burst), self._tokens + elapsed * self.rate)


class Verdict(enum.Enum):
    """What to do with one client frame."""

    ALLOW = "allow"  # serve it
    REJECT = "reject"  # answer with a rate_limited error
    CLOSE = "close"  # close the connection with 4029


class RateLimiter:
    """A token bucket plus a count of recent rejections (the error budget).

    ``check`` answers CLOSE once more than ``close_after`` frames were
    rejected within the last ``window`` seconds; frames rejected as invalid
    (``penalize``) count the same. Rejections are counted in
    ``_SLOTS`` fixed sub-windows of ``window / _SLOTS`` seconds each, so memory
    is constant; the window is therefore accurate to one sub-window (rejections
    between ``window * (1 - 1/_SLOTS)`` and ``window`` seconds old may or may not
    still count).

    Raises:
        ValueError: invalid ``rate``/``burst`` (see ``TokenBucket``),
            ``close_after`` < 0 or ``window`` not positive.
    """

    _SLOTS = 10

    __slots__ = ("_bucket", "_counts", "_ids", "_width", "close_after", "window")

    def __init__(
        self, rate: float, burst: int, close_after: int, window: float, now: float
    ) -> None:
        if close_after < 0:
            raise ValueError(f"close_after must be >= 0, got {close_after!r}")
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a positive number, got {window!r}")
        self._bucket = TokenBucket(rate, burst, now)
        self.close_after = close_after
        self.window = window
        self._width = window / self._SLOTS
        self._ids = [-1] * self._SLOTS  # which sub-window each slot currently counts
        self._counts = [0] * self._SLOTS

    def check(self, now: float) -> Verdict:
        """Account one client frame arriving at ``now`` and return its verdict."""
        if self._bucket.take(now):
            return Verdict.ALLOW
        return self._reject(now)

    def penalize(self, now: float) -> Verdict:
        """Count one invalid frame arriving at ``now`` against the error budget.

        The frame takes no token (it is not served); it counts as one
        rejection. Returns REJECT (answer it with its error) or CLOSE (the
        budget is spent: close with 4029), never ALLOW.
        """
        return self._reject(now)

    def _reject(self, now: float) -> Verdict:
        current = math.floor(now / self._width)
        slot = current % self._SLOTS
        if self._ids[slot] != current:
            self._ids[slot] = current
            self._counts[slot] = 0
        self._counts[slot] += 1
        oldest = current - self._SLOTS
        recent = sum(
            c for i, c in zip(self._ids, self._counts, strict=True) if oldest < i <= current
        )
        return Verdict.CLOSE if recent > self.close_after else Verdict.REJECT
