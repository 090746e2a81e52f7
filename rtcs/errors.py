"""The rtcs error tree, wire error codes and WebSocket close codes.

Every error a client can cause carries the wire code (docs/protocol.md, "Error
codes") or the close code (docs/protocol.md, "Limits and close codes") that the
gateway sends for it. Actors answer a request with an error by raising or
passing one of the ``ProtocolError`` classes below; nothing else builds
error frames. Nothing here does I/O.

Tree::

    RtcsError
    ├── ConfigError            a setting is wrong: names the key and the value
    │   └── RuleError          a routing-rules file is wrong: names file, rule and field
    ├── ProtocolError          a client frame cannot be served; ``code`` is the wire code
    │   ├── BadRequest         bad_request
    │   ├── BadTopic           bad_topic
    │   ├── Forbidden          forbidden
    │   ├── Offline            offline
    │   ├── RateLimited        rate_limited
    │   ├── LimitExceeded      limit
    │   ├── Unavailable        unavailable
    │   └── InternalError      internal
    ├── AuthError              a token is missing or fails a check (401 / close 4001)
    └── TransitionError        an illegal state-machine transition (a bug, not a client fault)
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    """Wire error codes sent in ``{"type": "error", "code": ...}`` frames."""

    BAD_REQUEST = "bad_request"
    BAD_TOPIC = "bad_topic"
    FORBIDDEN = "forbidden"
    OFFLINE = "offline"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"  # reserved: a frame over limits.max_message_size closes with 1009
    LIMIT = "limit"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes used by rtcs (docs/protocol.md, "Limits and close codes")."""

    NORMAL = 1000
    GOING_AWAY = 1001  # server shutting down: reconnect and resume
    UNSUPPORTED_DATA = 1003  # binary frame on the JSON protocol
    ABNORMAL = 1006  # never sent: the connection dropped without a close frame
    INVALID_DATA = 1007  # a text frame that is not UTF-8
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011  # reconnect and resume
    TRY_AGAIN_LATER = 1013  # overloaded or backend unavailable
    AUTH_FAILED = 4001  # authentication failed, missing or expired
    FORBIDDEN = 4003  # origin or account blocked: stop
    TOO_SLOW = 4008  # outbound queue overflowed
    RATE_LIMITED = 4029  # rate limit or error budget exhausted
    CONNECTION_LIMIT = 4031  # per user, per address or per node


class RtcsError(Exception):
    """Base of every error rtcs raises on purpose."""


class ConfigError(RtcsError):
    """A configuration value is invalid; the message names the key and the value."""

    def __init__(self, key: str, value: object, reason: str) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        super().__init__(f"invalid setting {key}={value!r}: {reason}")


class RuleError(ConfigError):
    """A routing-rules file (``rules.file``) is invalid.

    ``file`` is the file as configured, ``rule`` the rule's name (or ``#N``,
    1-based, when the rule has no usable name; ``None`` for the file as a
    whole), ``field`` the rule's key (``""`` for the rule or file as a whole)
    and ``reason`` what is wrong. The message names all four, so an operator
    can fix the file without a traceback.
    """

    def __init__(self, file: str, rule: str | None, field: str, reason: str) -> None:
        super().__init__("rules.file", file, reason)
        self.file = file
        self.rule = rule
        self.field = field
        where = f"rules file {file}"
        if rule is not None:
            where += f": rule {rule}"
        if field:
            where += f": {field}"
        self.args = (f"{where}: {reason}",)


class ProtocolError(RtcsError):
    """A client frame that cannot be served. The connection stays open.

    ``code`` is the wire error code; ``message`` is a short human text that
    never contains tokens or message bodies.
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str = "", *, request_id: str | int | None = None) -> None:
        self.message = message or self.code.value.replace("_", " ")
        self.request_id = request_id  # the client frame's "id", echoed in the error frame
        super().__init__(self.message)


class BadRequest(ProtocolError):
    code = ErrorCode.BAD_REQUEST


class BadTopic(ProtocolError):
    code = ErrorCode.BAD_TOPIC


class Forbidden(ProtocolError):
    code = ErrorCode.FORBIDDEN


class Offline(ProtocolError):
    code = ErrorCode.OFFLINE


class RateLimited(ProtocolError):
    code = ErrorCode.RATE_LIMITED


class LimitExceeded(ProtocolError):
    code = ErrorCode.LIMIT


class Unavailable(ProtocolError):
    code = ErrorCode.UNAVAILABLE


class InternalError(ProtocolError):
    code = ErrorCode.INTERNAL


class AuthError(RtcsError):
    """A token is missing, malformed, expired or fails a configured check.

    Before the upgrade this is an HTTP 401; after it, close code 4001.
    ``reason`` is safe to log and to send (it never contains the token).
    """

    http_status = 401
    close_code = CloseCode.AUTH_FAILED

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TransitionError(RtcsError):
    """An event that the state machine does not allow in its current state."""

    def __init__(self, state: object, event: object) -> None:
        self.state = state
        self.event = event
        super().__init__(f"illegal transition: event {event!r} in state {state!r}")
