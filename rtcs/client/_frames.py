"""Typed server frames and request results, and the JSON of client frames.

Each class reads one server frame of docs/protocol.md ("Server frames"); the
frame itself stays available as ``frame`` (left out of comparisons and
``repr``) for fields a newer server adds.

Pure: no I/O.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rtcs.client._errors import TooLarge

__all__ = [
    "Ack",
    "Joined",
    "Left",
    "Message",
    "Pong",
    "RoomPresence",
    "Subscribed",
    "Unsubscribed",
    "UserPresence",
    "Welcome",
    "encode",
    "resume_url",
]


def _str(frame: Mapping[str, Any], key: str) -> str | None:
    value = frame.get(key)
    return value if isinstance(value, str) else None


def _int(frame: Mapping[str, Any], key: str) -> int | None:
    value = frame.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _strings(frame: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = frame.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(item for item in value if isinstance(item, str))


def encode(frame: Mapping[str, Any], max_size: int) -> str:
    """The JSON text of a client frame, checked against the server's message size.

    Raises:
        TooLarge: the UTF-8 text is longer than ``max_size`` bytes (the server
            would close the connection with 1009).
        ValueError: the frame holds something JSON cannot carry faithfully
            (NaN, infinities, circular references).
        TypeError: the frame holds something that is not JSON (sets, objects…).
    """
    try:
        text = json.dumps(frame, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise ValueError(f"{frame.get('type')} frame is not valid JSON: {exc}") from None
    except TypeError as exc:
        raise TypeError(f"{frame.get('type')} frame is not JSON-serializable: {exc}") from None
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_size:
        raise TooLarge(f"{frame.get('type')} frame of {size} bytes exceeds {max_size} bytes")
    return text


def resume_url(url: str, session: str, last_seq: int) -> str:
    """``url`` asking to resume ``session`` after ``last_seq`` (``?session=…&last_seq=…``).

    The token travels in a header, never in the URL. Parameters of the same
    names already in ``url`` are replaced; others are kept.
    """
    parts = urllib.parse.urlsplit(url)
    query = [
        (key, value)
        for key, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        if key not in ("session", "last_seq")
    ]
    query += [("session", session), ("last_seq", str(last_seq))]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@dataclass(frozen=True, slots=True)
class Message:
    """A ``message`` frame: one delivery to this client's session.

    Attributes:
        seq: its number in the session (1, 2, 3, …).
        data: the payload, any JSON value.
        topic: the topic, for topic deliveries.
        room: the room, for room broadcasts (``"*"`` for global and filtered ones).
        sender: the sender's user id (the frame's ``from``), when known; a
            direct message has only this.
        ts: when rtcs routed it, integer milliseconds since the Unix epoch.
        redelivered: true when the server delivers it again (delivery receipts).
        frame: the whole frame as received.
    """

    seq: int
    data: Any
    topic: str | None = None
    room: str | None = None
    sender: str | None = None
    ts: int | None = None
    redelivered: bool = False
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_direct(self) -> bool:
        """True for a direct message (neither a topic nor a room)."""
        return self.topic is None and self.room is None

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> Message:
        """Read a ``message`` frame (a missing ``seq`` reads as 0)."""
        return cls(
            seq=_int(frame, "seq") or 0,
            data=frame.get("data"),
            topic=_str(frame, "topic"),
            room=_str(frame, "room"),
            sender=_str(frame, "from"),
            ts=_int(frame, "ts"),
            redelivered=frame.get("redelivered") is True,
            frame=frame,
        )


@dataclass(frozen=True, slots=True)
class Welcome:
    """A ``welcome`` frame: the connection is authenticated (or its token refreshed).

    ``replayed`` is the number of messages replayed after a resume;
    ``degraded`` is true while the server runs without its shared backend.
    """

    connection_id: str
    session_id: str
    user: str
    roles: tuple[str, ...] = ()
    heartbeat: int | None = None
    resumed: bool = False
    replayed: int = 0
    server: str = ""
    degraded: bool = False
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> Welcome:
        """Read a ``welcome`` frame."""
        return cls(
            connection_id=_str(frame, "connection_id") or "",
            session_id=_str(frame, "session_id") or "",
            user=_str(frame, "user") or "",
            roles=_strings(frame, "roles"),
            heartbeat=_int(frame, "heartbeat"),
            resumed=frame.get("resumed") is True,
            replayed=_int(frame, "replayed") or 0,
            server=_str(frame, "server") or "",
            degraded=frame.get("degraded") is True,
            frame=frame,
        )


@dataclass(frozen=True, slots=True)
class Ack:
    """The ``ack`` of ``publish``, ``send`` or ``broadcast``.

    ``duplicate`` is true when rtcs had already delivered a publish with this
    id (the client resent it after a resume): it was not delivered again.
    """

    duplicate: bool = False
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> Ack:
        """Read an ``ack`` frame."""
        return cls(duplicate=frame.get("duplicate") is True, frame=frame)


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The ``subscribed`` reply: ``topic`` is the topic or pattern now subscribed."""

    topic: str
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> Subscribed:
        """Read a ``subscribed`` frame."""
        return cls(topic=_str(frame, "topic") or "", frame=frame)


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The ``unsubscribed`` reply."""

    topic: str
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> Unsubscribed:
        """Read an ``unsubscribed`` frame."""
        return cls(topic=_str(frame, "topic") or "", frame=frame)


@dataclass(frozen=True, slots=True)
class Joined:
    """The ``joined`` reply: the room's members (user ids) when the client joined."""

    room: str
    members: tuple[str, ...] = ()
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> Joined:
        """Read a ``joined`` frame."""
        return cls(room=_str(frame, "room") or "", members=_strings(frame, "members"), frame=frame)


@dataclass(frozen=True, slots=True)
class Left:
    """The ``left`` reply."""

    room: str
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> Left:
        """Read a ``left`` frame."""
        return cls(room=_str(frame, "room") or "", frame=frame)


@dataclass(frozen=True, slots=True)
class RoomPresence:
    """A ``presence_state`` reply for a room: its members (user ids)."""

    room: str
    members: tuple[str, ...] = ()
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> RoomPresence:
        """Read a room's ``presence_state`` frame."""
        return cls(room=_str(frame, "room") or "", members=_strings(frame, "members"), frame=frame)


@dataclass(frozen=True, slots=True)
class UserPresence:
    """A ``presence_state`` reply for a user: online anywhere, and on how many connections."""

    user: str
    online: bool = False
    connections: int = 0
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any]) -> UserPresence:
        """Read a user's ``presence_state`` frame."""
        return cls(
            user=_str(frame, "user") or "",
            online=frame.get("online") is True,
            connections=_int(frame, "connections") or 0,
            frame=frame,
        )


@dataclass(frozen=True, slots=True)
class Pong:
    """The ``pong`` reply; ``rtt`` is the round trip in seconds, as the client measured it."""

    rtt: float
    frame: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
