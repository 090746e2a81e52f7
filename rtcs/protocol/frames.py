"""Typed client commands: one frozen dataclass per client frame of docs/protocol.md.

The codec (``rtcs.protocol.codec.decode``) is the only place that turns wire
frames into these, after validating every field; inside rtcs the types are
trusted. Constructors still check the "exactly one of" invariants, so a
command built by hand cannot carry an ambiguous target.

Extensions to docs/protocol.md defined here:

- room names are 1 to 128 characters of ``[A-Za-z0-9_.:@-]``;
- user ids, connection ids, session ids and role names sent by clients are
  non-empty strings of at most 256 characters.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import enum
import re
import typing
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, TypeAlias

from rtcs.errors import BadRequest

__all__ = [
    "BEARER_PREFIX",
    "BROADCAST_KINDS",
    "CLIENT_FRAME_TYPES",
    "COMMANDS",
    "GLOBAL_ROOM",
    "GLOBAL_SCOPE",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_ROOM_LENGTH",
    "SUBPROTOCOL",
    "Auth",
    "Broadcast",
    "BroadcastFilter",
    "BroadcastKind",
    "Command",
    "DropReason",
    "Join",
    "Leave",
    "Ping",
    "PresenceQuery",
    "Publish",
    "Received",
    "RequestId",
    "Send",
    "ServerFrame",
    "Subscribe",
    "Unsubscribe",
    "validate_name",
    "validate_room",
]

RequestId: TypeAlias = str | int | None

#: Why the server ended a subscription or a room membership on its own (the
#: ``reason`` of an unsolicited ``unsubscribed`` / ``left``, docs/protocol.md
#: "Permissions"): the user's roles no longer allow it.
DropReason: TypeAlias = Literal["forbidden"]

#: The WebSocket subprotocol of this protocol version (docs/protocol.md "Authentication").
SUBPROTOCOL = "rtcs.v1"
#: Prefix of the subprotocol that carries a browser's token.
BEARER_PREFIX = "rtcs.bearer."
#: The ``scope`` value of a broadcast to everyone; a global broadcast's ``room`` is ``"*"``.
GLOBAL_SCOPE: Final = "global"
GLOBAL_ROOM: Final = "*"

MAX_ID_LENGTH = 64  # request ids: docs/protocol.md "Transport"
MAX_ROOM_LENGTH = 128
MAX_NAME_LENGTH = 256  # user, connection and session ids, role names

_ROOM_RE = re.compile(rf"[A-Za-z0-9_.:@-]{{1,{MAX_ROOM_LENGTH}}}")


def validate_room(room: object, *, request_id: RequestId = None) -> str:
    """Return ``room`` if it is a valid room name (1-128 chars of ``[A-Za-z0-9_.:@-]``).

    Raises:
        BadRequest: ``room`` is not a string or breaks the rule; carries ``request_id``.
    """
    if type(room) is not str or _ROOM_RE.fullmatch(room) is None:
        raise BadRequest("invalid room name", request_id=request_id)
    return room


def validate_name(value: object, what: str, *, request_id: RequestId = None) -> str:
    """Return ``value`` if it is a non-empty string of at most 256 characters.

    ``what`` names the field in the error message (never the value itself).

    Raises:
        BadRequest: otherwise; carries ``request_id``.
    """
    if type(value) is not str or not value or len(value) > MAX_NAME_LENGTH:
        raise BadRequest(
            f"{what} must be a non-empty string of at most {MAX_NAME_LENGTH} characters",
            request_id=request_id,
        )
    return value


@dataclass(frozen=True, slots=True)
class Auth:
    """``auth``: first-frame authentication, token refresh, or resume."""

    TYPE: ClassVar[str] = "auth"

    id: RequestId
    token: str
    session: str | None = None
    last_seq: int | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``subscribe``: ``topic`` is a validated topic or pattern.

    ``receipts``: the client acknowledges this subscription's messages with
    ``received`` and rtcs redelivers those it does not (docs/protocol.md
    "Delivery receipts").
    """

    TYPE: ClassVar[str] = "subscribe"

    id: RequestId
    topic: str
    receipts: bool = False


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``unsubscribe``: ``topic`` is a validated topic or pattern."""

    TYPE: ClassVar[str] = "unsubscribe"

    id: RequestId
    topic: str


@dataclass(frozen=True, slots=True)
class Publish:
    """``publish``: ``topic`` is a validated concrete topic, never a pattern."""

    TYPE: ClassVar[str] = "publish"

    id: RequestId
    topic: str
    data: Any


@dataclass(frozen=True, slots=True)
class Send:
    """``send``: a direct message to exactly one of a user or a connection.

    Raises:
        BadRequest: neither or both of ``to_user`` / ``to_connection`` are set.
    """

    TYPE: ClassVar[str] = "send"

    id: RequestId
    to_user: str | None
    to_connection: str | None
    data: Any

    def __post_init__(self) -> None:
        if (self.to_user is None) == (self.to_connection is None):
            raise BadRequest("'to' needs exactly one of 'user' or 'connection'", request_id=self.id)


@dataclass(frozen=True, slots=True)
class Join:
    """``join``: ``room`` is a validated room name."""

    TYPE: ClassVar[str] = "join"

    id: RequestId
    room: str


@dataclass(frozen=True, slots=True)
class Leave:
    """``leave``: ``room`` is a validated room name."""

    TYPE: ClassVar[str] = "leave"

    id: RequestId
    room: str


@dataclass(frozen=True, slots=True)
class BroadcastFilter:
    """Selects connections whose user has any of ``roles`` or is one of ``users``.

    Raises:
        BadRequest: both tuples are empty.
    """

    roles: tuple[str, ...] = ()
    users: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.roles and not self.users:
            raise BadRequest("'filter' needs non-empty 'roles' or 'users'")


BroadcastKind: TypeAlias = Literal["room", "global", "filter"]
#: The broadcast scopes, as the permissions name them (``rbac`` ``broadcast`` lists).
BROADCAST_KINDS: tuple[BroadcastKind, ...] = ("room", "global", "filter")


@dataclass(frozen=True, slots=True)
class Broadcast:
    """``broadcast`` to exactly one of a room, everyone (``scope="global"``), or a filter.

    Raises:
        BadRequest: not exactly one of ``room`` / ``scope`` / ``filter`` is set.
    """

    TYPE: ClassVar[str] = "broadcast"

    id: RequestId
    room: str | None
    scope: Literal["global"] | None
    filter: BroadcastFilter | None
    data: Any

    def __post_init__(self) -> None:
        chosen = (self.room is not None) + (self.scope is not None) + (self.filter is not None)
        if chosen != 1:
            raise BadRequest(
                "broadcast needs exactly one of 'room', 'scope' or 'filter'", request_id=self.id
            )

    @property
    def kind(self) -> BroadcastKind:
        """The permission scope this broadcast needs: ``room``, ``global`` or ``filter``."""
        if self.room is not None:
            return "room"
        if self.scope is not None:
            return "global"
        return "filter"


@dataclass(frozen=True, slots=True)
class PresenceQuery:
    """``presence``: the members of a room, or whether a user is online.

    Raises:
        BadRequest: not exactly one of ``room`` / ``user`` is set.
    """

    TYPE: ClassVar[str] = "presence"

    id: RequestId
    room: str | None
    user: str | None

    def __post_init__(self) -> None:
        if (self.room is None) == (self.user is None):
            raise BadRequest("presence needs exactly one of 'room' or 'user'", request_id=self.id)


@dataclass(frozen=True, slots=True)
class Ping:
    """``ping``: answered with ``pong``."""

    TYPE: ClassVar[str] = "ping"

    id: RequestId


@dataclass(frozen=True, slots=True)
class Received:
    """``received``: every message of the session with ``seq`` up to ``seq``
    reached the client (a cumulative delivery receipt, docs/protocol.md
    "Delivery receipts"). Never answered; ``seq`` is 0 <= seq < 2**63."""

    TYPE: ClassVar[str] = "received"

    id: RequestId
    seq: int


Command: TypeAlias = (
    Auth
    | Subscribe
    | Unsubscribe
    | Publish
    | Send
    | Join
    | Leave
    | Broadcast
    | PresenceQuery
    | Ping
    | Received
)


#: Every client command class, in the order of ``Command``.
COMMANDS: tuple[type[Command], ...] = typing.get_args(Command)
#: The client frame ``type`` values (metrics labels, the codec's table).
CLIENT_FRAME_TYPES: tuple[str, ...] = tuple(c.TYPE for c in COMMANDS)


class ServerFrame(enum.StrEnum):
    """The ``type`` of every frame the server sends (docs/protocol.md "Server frames")."""

    WELCOME = "welcome"
    MESSAGE = "message"
    PRESENCE = "presence"
    ERROR = "error"
    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    JOINED = "joined"
    LEFT = "left"
    ACK = "ack"
    PONG = "pong"
    PRESENCE_STATE = "presence_state"
    STATUS = "status"  # degraded mode (docs/protocol.md, "Degraded mode")
