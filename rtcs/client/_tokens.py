"""Reading a token's expiry, and when to refresh it.

The client never verifies a token (it holds no key): it only reads the ``exp``
claim of the JWT payload (base64url, no signature check) to refresh the token
before the server closes the connection with 4001.

Pure: no I/O, no clock (callers pass ``now``).
"""

from __future__ import annotations

import base64
import binascii
import json
import math

__all__ = ["refresh_delay", "retry_delay", "token_expiry"]

#: The shortest wait between two refresh attempts, in seconds.
MIN_RETRY = 1.0


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a compact JWT, in seconds since the epoch; None if unreadable.

    Never raises: a token that is not a JWT, whose payload is not base64url
    JSON, or whose ``exp`` is missing or not a finite number gives None (the
    client then does not refresh it ahead of time).
    """
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    segment = parts[1]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    exp = payload.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        value = float(exp)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def refresh_delay(expires_at: float, now: float, margin: float) -> float:
    """Seconds from ``now`` until a token expiring at ``expires_at`` should be refreshed.

    The refresh happens ``margin`` seconds before expiry, or, for a token
    whose remaining lifetime is under four margins, when three quarters of it
    have passed (a 2-second token is refreshed after 1.5 s). Never negative.
    """
    remaining = expires_at - now
    if remaining <= 0:
        return 0.0
    return remaining - min(margin, remaining / 4)


def retry_delay(expires_at: float, now: float) -> float | None:
    """Seconds until the next refresh attempt after one failed; None when too late.

    Half the remaining lifetime, at least :data:`MIN_RETRY`; None when the
    token expires before that (the server will close with 4001, and the
    client reconnects with a fresh token).
    """
    remaining = expires_at - now
    delay = max(MIN_RETRY, remaining / 2)
    return delay if delay < remaining else None
