"""Per-connection rate limiting (docs/protocol.md "Limits and close codes").

Two token buckets: one counts frames, the other the characters of their text
(``limits.byte_rate`` / ``limits.byte_burst``). Excess frames, by either
bucket, are answered with ``rate_limited``; a client that keeps
exceeding the limit is closed with 4029. Invalid frames (``bad_request``,
``bad_topic``) spend the same error budget (``RateLimiter.penalize``). The
caller passes ``now`` (a monotonic clock in seconds) to every call.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import math

__all__ = ["Limit", "RateLimiter", "TokenBucket", "Verdict"]

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

    def give(self, n: int) -> None:
        """Give back ``n`` tokens taken by ``take`` (never beyond ``burst``)."""
        self._tokens = min(float(self.burst), self._tokens + n)


class _Unlimited:
    """A bucket that always has room: no byte limit."""

    __slots__ = ()

    def take(self, now: float, n: int = 1) -> bool:
        return True


class Verdict(enum.Enum):
    """What to do with one client frame."""

    ALLOW = "allow"  # serve it
    REJECT = "reject"  # answer with a rate_limited error
    CLOSE = "close"  # close the connection with 4029


class Limit(enum.Enum):
    """Which bucket refused a frame (the ``limit`` label of ``rtcs_rate_limited_total``)."""

    FRAMES = "frames"
    BYTES = "bytes"


class RateLimiter:
    """Token buckets for frames and bytes, plus a count of recent rejections.

    A frame is allowed when both buckets have room: one frame token and, if
    ``byte_rate`` and ``byte_burst`` are given, as many byte tokens as the
    frame's size. A refused frame takes no token from either bucket;
    ``refused_by`` names the bucket that refused the last one. A frame larger
    than ``byte_burst`` can never pass, so callers keep ``byte_burst`` at
    least the largest frame they accept (``limits.max_message_size``).

    ``check`` answers CLOSE once more than ``close_after`` frames were
    rejected within the last ``window`` seconds; frames rejected as invalid
    (``penalize``) count the same. Rejections are counted in
    ``_SLOTS`` fixed sub-windows of ``window / _SLOTS`` seconds each, so memory
    is constant; the window is therefore accurate to one sub-window (rejections
    between ``window * (1 - 1/_SLOTS)`` and ``window`` seconds old may or may not
    still count).

    Raises:
        ValueError: invalid ``rate``/``burst`` or ``byte_rate``/``byte_burst``
            (see ``TokenBucket``), only one of ``byte_rate`` and ``byte_burst``
            given, ``close_after`` < 0 or ``window`` not positive.
    """

    _SLOTS = 10

    __slots__ = (
        "_bucket",
        "_bytes",
        "_counts",
        "_ids",
        "_width",
        "close_after",
        "refused_by",
        "window",
    )

    def __init__(
        self,
        rate: float,
        burst: int,
        close_after: int,
        window: float,
        now: float,
        *,
        byte_rate: float | None = None,
        byte_burst: int | None = None,
    ) -> None:
        if close_after < 0:
            raise ValueError(f"close_after must be >= 0, got {close_after!r}")
        if not (window > 0 and math.isfinite(window)):
            raise ValueError(f"window must be a positive number, got {window!r}")
        if (byte_rate is None) != (byte_burst is None):
            raise ValueError("byte_rate and byte_burst must be given together")
        self._bucket = TokenBucket(rate, burst, now)
        # Without a byte limit the byte bucket is a null object that always
        # has room, so ``check`` stays branch-free.
        self._bytes: TokenBucket | _Unlimited = (
            _Unlimited()
            if byte_rate is None or byte_burst is None
            else TokenBucket(byte_rate, byte_burst, now)
        )
        self.refused_by = Limit.FRAMES
        self.close_after = close_after
        self.window = window
        self._width = window / self._SLOTS
        self._ids = [-1] * self._SLOTS  # which sub-window each slot currently counts
        self._counts = [0] * self._SLOTS

    def check(self, now: float, size: int = 0) -> Verdict:
        """Account one client frame of ``size`` bytes arriving at ``now``; return its verdict.

        ``size`` is the length of the frame's text as received (before it is
        parsed). On REJECT or CLOSE, ``refused_by`` names the bucket that
        refused it, and neither bucket was charged.
        """
        if self._bucket.take(now):
            if self._bytes.take(now, size):
                return Verdict.ALLOW
            self._bucket.give(1)  # a refused frame takes no token
            self.refused_by = Limit.BYTES
        else:
            self.refused_by = Limit.FRAMES
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
