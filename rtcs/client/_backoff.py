"""The reconnect policy: exponential backoff with full jitter, a cap, and when to give up.

Attempt ``n`` (1, 2, 3, … since the connection was lost) waits a random time
in ``[0, window(n))`` where ``window(n) = min(cap, base * factor ** (n - 1))``
("full jitter": clients dropped together do not come back together); a
client's very first attempt does not wait. After a close that asks to come
back later (1013, 4029, 4031, HTTP 429 and 503) the wait is ``later`` seconds
more. The client gives up once ``max_attempts`` attempts in a row have
failed, or ``max_elapsed`` seconds have passed since the connection was lost
(since the first attempt, before any connection); None means never.

Pure: no I/O, no clock, no randomness of its own (the caller passes a number
in ``[0, 1)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Reconnect"]


@dataclass(frozen=True, slots=True)
class Reconnect:
    """How the client reconnects, and when it gives up.

    Attributes:
        base: seconds, the jitter window of the first attempt.
        cap: seconds, the largest jitter window.
        factor: how much the window grows per attempt (at least 1).
        later: seconds added to the wait after a "reconnect later" close.
        max_attempts: failed attempts in a row before giving up (the very
            first connection's attempts included); None: never.
        max_elapsed: seconds offline before giving up; None: never.

    Raises:
        ValueError: a value out of range; the message names the field and the value.
    """

    base: float = 0.5
    cap: float = 30.0
    factor: float = 2.0
    later: float = 5.0
    max_attempts: int | None = None
    max_elapsed: float | None = None

    def __post_init__(self) -> None:
        for name in ("base", "cap", "later"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Reconnect.{name} must be a finite number >= 0, not {value!r}")
        if not (isinstance(self.factor, int | float) and 1 <= self.factor < math.inf):
            raise ValueError(f"Reconnect.factor must be a finite number >= 1, not {self.factor!r}")
        if self.max_attempts is not None and (
            isinstance(self.max_attempts, bool)
            or not isinstance(self.max_attempts, int)
            or self.max_attempts < 1
        ):
            raise ValueError(
                f"Reconnect.max_attempts must be an integer >= 1 or None, not {self.max_attempts!r}"
            )
        if self.max_elapsed is not None and not (
            isinstance(self.max_elapsed, int | float) and 0 < self.max_elapsed < math.inf
        ):
            raise ValueError(
                f"Reconnect.max_elapsed must be a positive number or None, not {self.max_elapsed!r}"
            )

    def window(self, attempt: int) -> float:
        """The jitter window of attempt ``attempt`` (1-based): ``min(cap, base * factor**(n-1))``.

        Raises:
            ValueError: ``attempt`` is below 1.
        """
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, not {attempt}")
        try:
            grown = self.base * self.factor ** (attempt - 1)
        except OverflowError:  # a very long outage: the window is long capped
            return self.cap
        return min(self.cap, grown)

    def delay(self, attempt: int, random: float, *, later: bool = False) -> float:
        """Seconds to wait before attempt ``attempt``.

        ``random`` is a number in ``[0, 1)`` (``random.random()``); ``later``
        adds :attr:`later` (the server asked to come back later).

        Raises:
            ValueError: ``attempt`` below 1 or ``random`` outside ``[0, 1)``.
        """
        if not 0 <= random < 1:
            raise ValueError(f"random must lie in [0, 1), not {random!r}")
        jittered = random * self.window(attempt)
        return jittered + self.later if later else jittered

    def gives_up(self, failures: int, elapsed: float) -> bool:
        """Whether the client gives up after ``failures`` failed attempts in a row.

        ``elapsed`` is the seconds since the connection was lost (or since the
        client's first attempt, before any connection).
        """
        if self.max_attempts is not None and failures >= self.max_attempts:
            return True
        return self.max_elapsed is not None and elapsed >= self.max_elapsed
