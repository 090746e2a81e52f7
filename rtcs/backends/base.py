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

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from rtcs.revocations import RevocationStore

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
    recipients of a ``filter`` broadcast (any of the roles, or one of the
    users).

    On a ``topic`` envelope they are the routing rules' recipient filter
    (docs/rules.md), applied by every receiving node as the publishing node
    decided it: a recipient needs one of ``roles`` (when not empty) *and* to
    be one of ``users`` (when not empty), and ``exclude`` names a user (the
    publisher) whose sessions are left out.

    ``trace`` is the W3C ``traceparent`` of the publishing node's route span
    when that node traces the message (rtcs.tracing), else empty: the
    receiving node's delivery joins that trace.
    """

    origin: str
    kind: EnvelopeKind
    target: str
    tail: bytes
    roles: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    exclude: str = ""
    trace: str = ""


DeliverFn = Callable[[Envelope], None]


class Broker(Protocol):
    """Carries envelopes to the other nodes that listen for them.

    ``distributed`` is False when there is no other node to reach (the
    single-node memory broker); callers then skip ``publish`` entirely.

    Interest. A node receives a targeted envelope (``topic``, ``room``,
    ``presence``) only while it ``listen``s to a target whose shard carries it
    (``shard_key``): a broker may deliver more than was asked for (the memory
    broker delivers everything), never less. ``global`` and ``filter``
    envelopes reach every node, and so does an envelope published with
    ``node=`` (direct messages) reach that node, without any ``listen``.
    """

    distributed: bool

    async def start(self, node_id: str, deliver: DeliverFn) -> None:
        """Attach as node ``node_id``; call once before ``publish``.

        ``deliver`` is called on the event loop, in publish order per origin
        and channel, for every envelope published by another node that this
        node listens to (see the class docstring), and never for this node's
        own envelopes.

        Raises:
            RuntimeError: the broker was already started or is closed.
            Unavailable: the backing service cannot be reached.
        """
        ...

    async def publish(self, envelope: Envelope, node: str | None = None) -> None:
        """Send ``envelope`` to the other nodes listening for it (at most once).

        With ``node``, send it to that node only (its node channel), whatever
        it listens to.

        Raises:
            Unavailable: the broker is down, not started or closed.
        """
        ...

    def listen(self, kind: EnvelopeKind, target: str) -> Awaitable[None]:
        """Declare interest in envelopes of ``kind`` for ``target``.

        The interest is recorded when this is *called* (not awaited), and
        counted: each ``listen`` needs one ``unlisten``. Await the result to
        know the subscription is live: once it completes, every envelope
        published afterwards for ``target`` is delivered. ``target`` may be a
        topic pattern (``chat.>``).

        Raises (when awaited):
            Unavailable: the subscription could not be confirmed now; the
                interest stays recorded and the broker subscribes once the
                backing service is back.
        """
        ...

    def unlisten(self, kind: EnvelopeKind, target: str) -> None:
        """Withdraw one ``listen(kind, target)``; unknown interest is ignored.

        The broker may keep receiving the target's shard for a while (lazy
        unsubscribe); nothing is owed to the caller.
        """
        ...

    def reset(self, kind: EnvelopeKind) -> None:
        """Withdraw every interest of ``kind`` at once (a restarted handler
        calls it before listening again, so nothing is counted twice)."""
        ...

    async def close(self) -> None:
        """Detach; no delivery happens afterwards. Idempotent."""
        ...

    def healthy(self) -> bool:
        """True while started, not closed and able to publish."""
        ...


ALL_SHARDS = None  # ``shard_key`` result: the target needs every shard


def shard_key(kind: EnvelopeKind, target: str) -> str | None:
    """The key that picks the shard channel an envelope or interest lives on.

    Pure. ``topic``: the first segment, so a topic and every pattern naming
    that segment (``chat.x``, ``chat.>``, ``chat.*.y``) share one shard; a
    pattern whose first segment is ``*`` or ``>`` matches topics of every
    shard: ``ALL_SHARDS`` (None). ``room`` and ``presence``: the room, so a
    room's presence frames keep their order with its messages. Other kinds:
    the target itself (``global``/``filter`` travel on their own channel,
    ``user``/``connection`` on node channels; see the broker).
    """
    if kind == "topic":
        first = target.split(".", 1)[0]
        return ALL_SHARDS if first in ("*", ">") else first
    return target


@dataclass(frozen=True, slots=True)
class ReceiptState:
    """A session's delivery receipts, kept with it for resume (docs/protocol.md
    "Delivery receipts").

    ``patterns`` are its subscriptions made with receipts. ``unacked`` holds
    ``(seq, redeliveries)`` of each delivered message still awaiting a
    receipt, in ``seq`` order. ``upto`` is the session's ``seq`` when this was
    taken: buffered messages after it were delivered since (appended to a
    stored session's buffer), and whether they need a receipt is decided
    again from ``patterns`` when the session is restored.
    """

    patterns: tuple[str, ...] = ()
    unacked: tuple[tuple[int, int], ...] = ()
    upto: int = 0


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    """A session kept for resume: detached, or attached and mirrored
    (``session.crash_safe``).

    ``seq`` is the last sequence number assigned to the session. ``buffer``
    holds ``(seq, tail)`` of the last messages, oldest first, at most the
    replay buffer size. ``node`` is the node that owns the stored record
    (the one that saved it); only that node may append to it or save it
    again without ``take_over``. ``receipts`` is None for a session without
    delivery receipts (every session saved by a release before them).
    """

    session_id: str
    user: str
    subscriptions: tuple[str, ...]
    rooms: tuple[str, ...]
    seq: int
    buffer: tuple[tuple[int, bytes], ...]
    node: str
    receipts: ReceiptState | None = None


def check_ttl(ttl: float) -> float:
    """``ttl`` if it is a positive number of seconds (what every store requires).

    Raises:
        ValueError: it is not.
    """
    if not ttl > 0:
        raise ValueError(f"session ttl must be positive, got {ttl!r}")
    return ttl


def check_cap(cap: int) -> int:
    """``cap`` if it is a replay buffer size a store accepts (0 or more).

    Raises:
        ValueError: it is negative.
    """
    if cap < 0:
        raise ValueError(f"buffer cap must not be negative, got {cap!r}")
    return cap


#: Publish ids longer than this (in UTF-8 bytes) are remembered by digest.
MAX_PUBLISH_ID_BYTES = 128


def publish_key(publish_id: str) -> str:
    """What a store remembers for ``publish_id`` (pure).

    The id itself, or for an id over ``MAX_PUBLISH_ID_BYTES`` its SHA-256
    (``"#"`` + 64 hex digits), so a huge id costs a store no more than a short
    one. A short id equal to such a digest would need a SHA-256 preimage.
    """
    data = publish_id.encode("utf-8", "surrogatepass")
    if len(data) <= MAX_PUBLISH_ID_BYTES:
        return publish_id
    return "#" + hashlib.sha256(data).hexdigest()


def check_window(window: float) -> float:
    """``window`` if it is a positive number of seconds.

    Raises:
        ValueError: it is not.
    """
    if not window > 0:
        raise ValueError(f"publish de-duplication window must be positive, got {window!r}")
    return window


class SessionStore(Protocol):
    """Sessions kept for resume (across nodes with a shared store).

    Every stored record names its owner node (``SessionSnapshot.node``).
    ``save`` without ``take_over``, ``mirror`` and ``touch`` change a record
    only when it belongs to the calling node, so a node that lost a session
    to another (the client resumed there) can never overwrite the new
    owner's copy.
    """

    async def save(self, snapshot: SessionSnapshot, ttl: float, *, take_over: bool = False) -> bool:
        """Store or replace ``snapshot``; it expires ``ttl`` seconds later.

        When an unexpired record of this session belongs to another node
        than ``snapshot.node`` and ``take_over`` is False, nothing changes and
        the result is False (the session moved elsewhere); else True. A node
        that just claimed the session saves it with ``take_over=True``.

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

    async def mirror(
        self, node: str, ttl: float | None, cap: int, entries: Sequence[tuple[str, int, bytes]]
    ) -> tuple[set[str], set[str]]:
        """Append many ``(session_id, seq, tail)`` at once, for sessions ``node`` owns.

        Per entry, as ``append`` (the newest ``cap`` kept, ``seq`` raised to
        the max), and, when ``ttl`` is not None, the session's expiry moves
        to ``ttl`` seconds from now (an attached session must not expire
        while attached); with ``ttl`` None the expiry does not move (a
        detached session). Entries of one session are applied in order.
        Returns ``(absent, moved)``: the ids with no unexpired record, and
        the ids whose record belongs to another node; nothing is written
        for either.

        Raises:
            ValueError: ``cap`` is negative, or ``ttl`` is not positive.
            Unavailable: the store is down (some entries may be written).
        """
        ...

    async def touch(
        self, node: str, ttl: float, session_ids: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """Move the expiry of sessions ``node`` owns to ``ttl`` seconds from now.

        Keeps idle attached sessions alive. Returns ``(absent, moved)`` as
        ``mirror`` does; nothing is changed for those.

        Raises:
            ValueError: ``ttl`` is not positive.
            Unavailable: the store is down.
        """
        ...

    async def delete(self, session_id: str) -> None:
        """Forget the session; nothing happens when it does not exist.

        Raises:
            Unavailable: the store is down.
        """
        ...

    async def first_publish(
        self, session_id: str, publish_id: str, window: float, cap: int
    ) -> bool:
        """De-duplicate a client's publish: True the first time ``publish_id``
        is seen for ``session_id`` within ``window`` seconds, else False.

        True records the id now (it is a duplicate until ``window`` seconds
        later); False changes nothing (a duplicate does not extend its own
        window). At most ``cap`` ids are remembered per session, the oldest
        forgotten first (so with ``cap`` 0 every id is new); everything
        expires by itself ``window`` seconds after the session's last new id.
        Ids longer than ``MAX_PUBLISH_ID_BYTES`` are remembered by digest
        (``publish_key``). Independent of the session record itself: it
        survives ``claim`` and ``delete``, so a resumed client's resend is
        still recognised. Atomic: of concurrent calls with the same ids, one
        gets True.

        Raises:
            ValueError: ``window`` is not positive, or ``cap`` is negative.
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

    async def user_nodes(self, user: str) -> list[str]:
        """Sorted ids of the live nodes holding a connection of ``user``.

        A node counts from the user's ``add_connection`` there until the last
        ``remove_connection``; a dead or dropped node does not count.

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
    #: The shared revocation log (``POST /admin/revoke``); None: a private
    #: in-memory one (a single node).
    revocations: RevocationStore | None = None
