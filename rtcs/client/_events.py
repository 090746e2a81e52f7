"""The events of a client's life, as :meth:`Client.events` yields them.

One frozen dataclass per event; match on the class::

    async for event in client.events():
        match event:
            case Connected(resumed=False) if event.session != first: ...
            case Status(degraded=True): ...

The stream ends after :class:`Stopped`. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from rtcs.client._errors import ClientClosed

__all__ = [
    "Connected",
    "Disconnected",
    "Event",
    "GaveUp",
    "PresenceChanged",
    "Reconnecting",
    "RoomDropped",
    "SessionLost",
    "Status",
    "Stopped",
    "SubscriptionDropped",
    "TokenRefreshFailed",
    "TokenRefreshed",
]


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection is authenticated (its ``welcome`` arrived).

    ``resumed`` is true when the previous session was resumed: ``replayed``
    missed messages follow, then live ones. A first connection, or a resume
    the server refused, has ``resumed`` false (the latter follows a
    :class:`SessionLost`).
    """

    session: str
    resumed: bool
    replayed: int = 0
    connection_id: str = ""
    user: str = ""
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class Disconnected:
    """A connection ended: ``code`` is its close code (1006 when it just dropped)."""

    code: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reconnecting:
    """The client waits ``delay`` seconds, then makes reconnect attempt ``attempt`` (1-based).

    ``cause`` says why the connection (or the previous attempt) ended.
    """

    attempt: int
    delay: float
    cause: str = ""


@dataclass(frozen=True, slots=True)
class SessionLost:
    """The server could not resume ``previous`` (expired, unknown, buffer overrun).

    Messages of the old session after ``last_seq`` are lost; the new session
    ``session`` starts again from seq 1. The client re-subscribes and re-joins
    what it had; this event comes before any message of the new session.
    """

    previous: str
    session: str
    last_seq: int


@dataclass(frozen=True, slots=True)
class Status:
    """The server's degraded mode changed (a ``status`` frame, or the ``welcome``).

    ``degraded`` is true while the shared backend is unreachable: clients on the
    same server still reach each other, requests needing the backend get
    ``Unavailable``. ``reason`` is the server's (``"backend"``), None when unsaid.
    """

    degraded: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionDropped:
    """A subscription ended without the application asking.

    ``reason`` is ``"forbidden"`` when the server dropped it (the user's roles no
    longer allow it), or the error code that refused it again after a
    :class:`SessionLost`.
    """

    topic: str
    reason: str


@dataclass(frozen=True, slots=True)
class RoomDropped:
    """A room membership ended without the application asking (see :class:`SubscriptionDropped`)."""

    room: str
    reason: str


@dataclass(frozen=True, slots=True)
class PresenceChanged:
    """A ``presence`` frame: ``user`` joined or left ``room`` (``event``: join or leave)."""

    room: str
    user: str
    event: str


@dataclass(frozen=True, slots=True)
class TokenRefreshed:
    """The connection now runs on a fresh token expiring at ``expires_at`` (epoch seconds)."""

    expires_at: float | None


@dataclass(frozen=True, slots=True)
class TokenRefreshFailed:
    """A token refresh failed (the callable raised, or the server refused the token).

    The client tries again while the current token lasts; after it expires the
    server closes with 4001 and the client reconnects with a fresh token.
    """

    error: str


@dataclass(frozen=True, slots=True)
class GaveUp:
    """The reconnect policy is exhausted: ``attempts`` failed in ``elapsed`` seconds.

    :class:`Stopped` follows, carrying the :class:`~rtcs.client.ReconnectFailed` error.
    """

    attempts: int
    elapsed: float
    cause: str = ""


@dataclass(frozen=True, slots=True)
class Stopped:
    """The last event: the client will not reconnect.

    ``error`` is None when the application closed the client, else why it
    stopped (:class:`~rtcs.client.AuthFailed`, :class:`~rtcs.client.Rejected`,
    :class:`~rtcs.client.ReconnectFailed`).
    """

    error: ClientClosed | None = None


Event: TypeAlias = (
    Connected
    | Disconnected
    | Reconnecting
    | SessionLost
    | Status
    | SubscriptionDropped
    | RoomDropped
    | PresenceChanged
    | TokenRefreshed
    | TokenRefreshFailed
    | GaveUp
    | Stopped
)
