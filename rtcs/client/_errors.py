"""The errors of the rtcs client: one class per wire error code, and the client's own.

Tree::

    RtcsError(code, message)     base: ``code`` is the wire error code, or one of the client's
    ├── BadRequest               bad_request   malformed or ill-typed frame, bad room or user name
    ├── BadTopic                 bad_topic     a topic or pattern breaks the topic rules
    ├── Forbidden                forbidden     the user's roles do not allow the request
    ├── Offline                  offline       ``send`` target has no live connection
    ├── RateLimited              rate_limited  too many frames or bytes: slow down
    ├── TooLarge                 too_large     the frame would exceed ``max_message_size``
    │                                          (checked before sending: the server would close 1009)
    ├── LimitExceeded            limit         too many subscriptions or rooms
    ├── Unavailable              unavailable   a backend the request needs is down: retry later
    ├── InternalError            internal      a bug in rtcs: the request may be retried
    ├── RequestTimeout           timeout       no reply within the request timeout
    ├── ConnectionLost           connection_lost
    │                                          the connection dropped while the request was in
    │                                          flight and resending it could deliver it twice
    └── ClientClosed             closed        the client is closed and will not reconnect
        ├── AuthFailed           auth_failed   the token was refused (close 4001, HTTP 401)
        ├── Rejected             rejected      the server said not to come back (see the
        │                                      close-code table of :mod:`rtcs.client`)
        └── ReconnectFailed      gave_up       the reconnect policy ran out of attempts or time

A wire error code this client does not know yet is raised as a plain
:class:`RtcsError` carrying that code, so newer servers keep working.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "WIRE_ERRORS",
    "AuthFailed",
    "BadRequest",
    "BadTopic",
    "ClientClosed",
    "ConnectionLost",
    "Forbidden",
    "InternalError",
    "LimitExceeded",
    "Offline",
    "RateLimited",
    "ReconnectFailed",
    "Rejected",
    "RequestTimeout",
    "RtcsError",
    "TooLarge",
    "Unavailable",
    "error_from_frame",
]


class RtcsError(Exception):
    """Base of every error the client raises on purpose.

    ``code`` is the protocol's error code (``"forbidden"``, ``"bad_topic"``, …)
    for errors the server answered, or one of the client's own codes
    (``"timeout"``, ``"connection_lost"``, ``"closed"``, …); ``message`` is the
    human text (the server's, when it sent one).
    """

    #: The code of this class; the base class takes any code.
    CODE: ClassVar[str] = ""

    def __init__(self, code: str, message: str = "") -> None:
        self.code = code
        self.message = message or code.replace("_", " ")
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class _WireError(RtcsError):
    """An error of one fixed wire code: build it with the message only."""

    def __init__(self, message: str = "") -> None:
        super().__init__(self.CODE, message)


class BadRequest(_WireError):
    """``bad_request``: a malformed or ill-typed frame, or an invalid room or user name."""

    CODE = "bad_request"


class BadTopic(_WireError):
    """``bad_topic``: the topic or pattern breaks the topic rules, or a publish names a pattern."""

    CODE = "bad_topic"


class Forbidden(_WireError):
    """``forbidden``: the user's roles do not allow this request (or a token refresh failed)."""

    CODE = "forbidden"


class Offline(_WireError):
    """``offline``: the ``send`` target has no live connection anywhere."""

    CODE = "offline"


class RateLimited(_WireError):
    """``rate_limited``: too many frames or bytes on this connection; slow down."""

    CODE = "rate_limited"


class TooLarge(_WireError):
    """``too_large``: the frame is larger than the maximum message size.

    The client checks the size before sending (the server would close the
    connection with 1009 instead of answering).
    """

    CODE = "too_large"


class LimitExceeded(_WireError):
    """``limit``: too many subscriptions or rooms on this connection."""

    CODE = "limit"


class Unavailable(_WireError):
    """``unavailable``: a backend the request needs is down; retry later."""

    CODE = "unavailable"


class InternalError(_WireError):
    """``internal``: a bug in rtcs; the request may be retried."""

    CODE = "internal"


class RequestTimeout(_WireError):
    """No reply arrived within the request timeout (reconnecting time included).

    The request may still have been served: a publish that timed out may have
    been delivered.
    """

    CODE = "timeout"


class ConnectionLost(_WireError):
    """The connection dropped while the request was in flight, and it is not resent.

    Raised for ``send`` and ``broadcast`` (the server does not de-duplicate
    them) and for a ``publish`` whose session could not be resumed. The request
    may or may not have been served.
    """

    CODE = "connection_lost"


class ClientClosed(RtcsError):
    """The client is closed and will not reconnect.

    Raised by requests made after the end and by :meth:`Client.messages`
    (after the buffered messages) when the client stopped on its own.
    ``close_code`` is the WebSocket close code or the HTTP status that stopped
    it (None when the application closed it or the policy gave up).
    """

    CODE = "closed"

    def __init__(self, message: str = "", *, close_code: int | None = None) -> None:
        super().__init__(self.CODE, message)
        self.close_code = close_code


class AuthFailed(ClientClosed):
    """The server refused the token (close 4001, or HTTP 401 at the handshake).

    The client stops: a static token will not become valid, and a fresh token
    from a token callable was refused too (or the user was revoked).
    """

    CODE = "auth_failed"


class Rejected(ClientClosed):
    """The server closed with a code meaning "do not reconnect".

    4003 (forbidden), 1003/1007/1009 (the client sent something the protocol
    forbids), 1000 (the session was taken over by another connection), or an
    HTTP refusal of the handshake other than 401, 429 and 5xx.
    """

    CODE = "rejected"


class ReconnectFailed(ClientClosed):
    """The reconnect policy gave up: too many attempts in a row, or too long offline.

    ``attempts`` is the number of failed attempts, ``elapsed`` the seconds
    since the connection was lost, ``cause`` what the last attempt failed with.
    """

    CODE = "gave_up"

    def __init__(self, attempts: int, elapsed: float, cause: str) -> None:
        super().__init__(
            f"gave up reconnecting after {attempts} attempt(s) in {elapsed:.1f} s: {cause}"
        )
        self.attempts = attempts
        self.elapsed = elapsed
        self.cause = cause


#: The wire error codes of the protocol, each with its class.
WIRE_ERRORS: dict[str, type[_WireError]] = {
    cls.CODE: cls
    for cls in (
        BadRequest,
        BadTopic,
        Forbidden,
        Offline,
        RateLimited,
        TooLarge,
        LimitExceeded,
        Unavailable,
        InternalError,
    )
}


def error_from_frame(frame: dict[str, Any]) -> RtcsError:
    """The exception for an ``error`` frame: its code's class, else a plain RtcsError."""
    code = frame.get("code")
    message = frame.get("message")
    code = code if isinstance(code, str) and code else "internal"
    message = message if isinstance(message, str) else ""
    cls = WIRE_ERRORS.get(code)
    return cls(message) if cls is not None else RtcsError(code, message)
