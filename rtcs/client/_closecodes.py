"""What the client does after a close code or a refused handshake (docs/protocol.md,
"Limits and close codes"); the table is documented in :mod:`rtcs.client`.

Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from rtcs.client._errors import AuthFailed, ClientClosed, Rejected

__all__ = [
    "ABNORMAL",
    "AUTH_FAILED",
    "CLOSE_ACTIONS",
    "Action",
    "after_close",
    "after_refusal",
    "stop_error",
]

ABNORMAL = 1006  # never sent: the connection dropped without a close frame
AUTH_FAILED = 4001
#: The reason of a 4001 close for a revoked user or session: never retried.
REVOKED = "revoked"


class Action(enum.Enum):
    """What the client does once a connection has ended or an attempt was refused."""

    RESUME = "resume"  # reconnect (backoff from a small window) and resume the session
    LATER = "later"  # reconnect after Reconnect.later seconds more, and resume
    STOP = "stop"  # do not reconnect: the client ends with an error


_CLOSE: dict[int, Action] = {
    1000: Action.STOP,  # normal close: rtcs sends it when another connection took the session over
    1001: Action.RESUME,  # server shutting down
    1003: Action.STOP,  # binary frame: a client bug
    ABNORMAL: Action.RESUME,  # the network dropped
    1007: Action.STOP,  # invalid UTF-8: a client bug
    1009: Action.STOP,  # frame too large (checked before sending; a smaller server limit)
    1011: Action.RESUME,  # internal error
    1013: Action.LATER,  # overloaded or backend unavailable
    AUTH_FAILED: Action.STOP,  # see after_close: a token callable may get a fresh token once
    4003: Action.STOP,  # forbidden: origin or account blocked
    4008: Action.RESUME,  # too slow: the outbound queue overflowed
    4029: Action.LATER,  # rate limit or error budget exhausted
    4031: Action.LATER,  # connection limit reached
}
#: The action for every close code rtcs sends; any other code is RESUME.
CLOSE_ACTIONS: Mapping[int, Action] = MappingProxyType(_CLOSE)


def after_close(code: int, reason: str, *, authenticated: bool, refreshable: bool) -> Action:
    """The action after a connection ended with ``code`` (1006 when no close frame came).

    ``authenticated`` says whether the connection had received its
    ``welcome``; ``refreshable`` whether the token comes from a callable. A
    4001 on an authenticated connection of a token callable (the token
    expired before a refresh got through) reconnects with a fresh token,
    unless the reason is ``revoked``; a 4001 before the welcome (the fresh
    token was refused) stops.
    """
    if code == AUTH_FAILED:
        if authenticated and refreshable and reason != REVOKED:
            return Action.RESUME
        return Action.STOP
    return CLOSE_ACTIONS.get(code, Action.RESUME)


def after_refusal(status: int) -> Action:
    """The action after the HTTP upgrade was refused with ``status``.

    401 (bad token) and 403 (origin) stop, as do 400 and other 4xx statuses
    (a wrong URL or bad resume parameters do not fix themselves); 429 and 503
    mean later; other statuses (a proxy's 502, …) are retried.
    """
    if status in (429, 503):
        return Action.LATER
    if 400 <= status < 500:
        return Action.STOP
    return Action.RESUME


def stop_error(code: int, reason: str, *, http: bool = False) -> ClientClosed:
    """The error a client stops with after close code ``code`` (or HTTP status, ``http``)."""
    what = f"HTTP {code}" if http else f"close code {code}"
    text = f"{what}: {reason}" if reason else what
    if code == (401 if http else AUTH_FAILED):
        return AuthFailed(f"authentication failed ({text})", close_code=code)
    return Rejected(f"the server rejected the connection ({text})", close_code=code)
