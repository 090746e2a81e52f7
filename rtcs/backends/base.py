"""The backend contracts: broker, session store and presence store.

Each moving part that may span nodes sits behind a small ``typing.Protocol``
with async methods, so the in-memory implementation (``rtcs.backends.memory``)
and a networked one (Redis) are interchangeable. Every implementation runs the
same conformance suite (``tests/contract``).

Rules every implementation keeps:

- Local delivery never goes through the broker. The broker only carries what
  must reach *other* nodes; an envelope is tagged with its origin node and a
  node never delivers its own envelopes back to itself.
- Broker delivery is at-most-once (Redis pub/sub loses what is published while
  a subscriber reconnects). Anything that must survive a disconnect lives in
  the session store, which has a cap and a TTL.
- A backend that cannot do its job raises ``rtcs.errors.Unavailable``, which the
  caller turns into the ``unavailable`` wire error or close code 1013.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

EnvelopeKind = Literal["topic", "room", "user", "connection", "global", "filter", "presence"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """What crosses nodes through the broker; local delivery never uses it.

    ``origin`` is the publishing node's id (receivers drop their own echoes).
    ``target`` is the topic, room, user id or connection id, and ``""`` for the
    ``global`` and ``filter`` kinds. ``tail`` is the pre-encoded message tail
    (``rtcs.protocol.codec.message_tail``), opaque to the backends; for the
    ``presence`` kind (``target`` is the room) it is a whole ``presence``
    frame for the room's live members. ``roles`` and ``users`` select
    recipients of a ``filter`` broadcast.
    """

    origin: str
    kind: EnvelopeKind
    target: str
    tail: bytes
    roles: tuple[str, ...] = ()
    users: tuple[str, ...] = ()


DeliverFn = Callable[[Envelope], None]


class Broker(Protocol):
    """Carries envelopes to every other node.

    ``distributed`` is False when there is no other node to reach (the
    single-node memory broker); callers then skip ``publish`` entirely.
    """

    distributed: bool

    async def start(self, node_id: str, deliver: DeliverFn) -> None:
        """Attach as node ``node_id``; call once before ``publish``.

        ``deliver`` is called on the event loop, in publish order per origin,
        for every envelope published by another node, and never for this
        node's own envelopes.

        Raises:
            RuntimeError: the broker was already started or is closed.
            Unavailable: the backing service cannot be reached.
        """
        ...

    async def publish(self, envelope: Envelope) -> None:
        """Send ``envelope`` to every other node (at most once).

        Raises:
            Unavailable: the broker is down, not started or closed.
        """
        ...

    async def close(self) -> None:
        """Detach; no delivery happens afterwards. Idempotent."""
        ...

    def healthy(self) -> bool:
        """True while started, not closed and able to publish."""
        ...


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A detached session, kept for resume.

    ``seq`` is the last sequence number assigned to the session. ``buffer``
    holds ``(seq, tail)`` of the last messages, oldest first, at most the
    replay buffer size. ``node`` is the node that detached it.
    """

    session_id: str
    user: str
    subscriptions: tuple[str, ...]
    rooms: tuple[str, ...]
    seq: int
    buffer: tuple[tuple[int, bytes], ...]
    node: str


class SessionStore(Protocol):
    """Detached sessions, for resume (across nodes with a shared store)."""

    async def save(self, snapshot: SessionSnapshot, ttl: float) -> None:
        """Store or replace ``snapshot``; it expires ``ttl`` seconds later.

        Raises:
            ValueError: ``ttl`` is not positive.
            Unavailable: the store is down.
        """
        ...

    async def claim(self, session_id: str, user: str) -> SessionSnapshot | None:
        """Atomically remove and return the session.

        Returns the snapshot when it exists, is unexpired and belongs to
        ``user``; otherwise None, and a session of another user stays in
        place. Of concurrent claims at most one gets the snapshot.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def append(self, session_id: str, seq: int, tail: bytes, cap: int) -> bool:
        """Add ``(seq, tail)`` to a stored session's buffer, keeping at most ``cap``.

        The oldest entries are dropped past ``cap``; the snapshot's ``seq``
        becomes ``max(seq, snapshot.seq)``; the expiry does not move.
        Returns False when no such unexpired session exists.

        Raises:
            ValueError: ``cap`` is negative.
            Unavailable: the store is down.
        """
        ...

    async def delete(self, session_id: str) -> None:
        """Forget the session; nothing happens when it does not exist.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def count(self) -> int:
        """Number of unexpired stored sessions.

        Raises:
            Unavailable: the store is down.
        """
        ...

    def healthy(self) -> bool:
        """True while the store can serve requests."""
        ...


class PresenceStore(Protocol):
    """Who is online and who is in which room, across nodes."""

    async def add_connection(self, user: str, connection_id: str, node: str) -> int:
        """Record a live connection of ``user`` held by ``node``; idempotent.

        Returns the number of live connections of ``user`` afterwards.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def remove_connection(self, user: str, connection_id: str) -> int:
        """Forget a connection; returns the user's remaining connection count.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def user_connections(self, user: str) -> int:
        """Number of live connections of ``user`` on every node.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def connection_node(self, connection_id: str) -> str | None:
        """The live node holding connection ``connection_id``, else None.

        A connection is held from its ``add_connection`` until its
        ``remove_connection``; None also when its node is dead (its liveness
        lapsed) or was dropped with ``drop_node``.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def join(self, room: str, user: str, member: str, node: str) -> bool:
        """Add ``member`` (a session id of ``user``) to ``room``; idempotent.

        Returns True when this makes ``user`` present in ``room`` (the first
        member of that user), so the caller emits a presence join event.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def leave(self, room: str, user: str, member: str) -> bool:
        """Remove ``member`` from ``room``.

        Returns True when this removed the last member of ``user``, so that
        ``user`` is no longer present and the caller emits a presence leave
        event; False when other members of ``user`` remain or ``member`` was
        not in the room.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def members(self, room: str) -> list[str]:
        """Sorted ids of the users present in ``room``.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def drop_node(self, node: str) -> None:
        """Forget every connection and room member that ``node`` held (a dead node).

        Raises:
            Unavailable: the store is down.
        """
        ...

    def healthy(self) -> bool:
        """True while the store can serve requests."""
        ...


@dataclass(frozen=True, slots=True)
class Backends:
    """The three backends one node uses, built together by the composition root."""

    broker: Broker
    sessions: SessionStore
    presence: PresenceStore
