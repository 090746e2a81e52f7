"""Node-local session state: the hot path of every delivery.

A *session* outlives its connection (docs/protocol.md "Sessions, resume and
replay"): it owns the per-session ``seq`` counter, a bounded replay buffer of
the last delivered messages, and the subscriptions and rooms that are restored
on resume. While a connection is attached, the session holds its ``Sink`` (the
gateway's bounded outbox); while detached, deliveries are buffered only.

This module is pure: no sockets, no actors, no clocks (``now`` is passed in).
Delivery is one function call per recipient that splices the recipient's
``seq`` into a message tail encoded once per published message
(``rtcs.protocol.codec.message_tail``), appends it to the replay buffer and
hands the bytes to the sink: no actor message and no JSON encode per
recipient.
"""

from __future__ import annotations

import base64
import enum
import itertools
import os
import secrets
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from rtcs.protocol.codec import tail_target, with_seq
from rtcs.protocol.topics import matches

if TYPE_CHECKING:
    from rtcs.backends.base import SessionSnapshot


class Sink(Protocol):
    """Where a connection's outbound frames go (implemented by the gateway).

    ``push`` never blocks and never raises: it returns False when the frame was
    dropped because the connection is closing or its bounded outbox overflowed
    (the sink then closes the connection with 4008 by itself).
    """

    connection_id: str

    def push(self, frame: bytes) -> bool: ...

    def push_message(self, frame: bytes) -> bool:
        """``push`` for a ``message`` frame, which may be written a little later
        together with more (``limits.batch_window_ms``)."""
        ...

    def close(self, code: int, reason: str = "") -> None: ...


class SessionIds:
    """Unguessable session ids (``s-`` prefix, docs/protocol.md; 128 random bits
    each), drawn from the OS random source a batch at a time rather than with one system call per
    connection."""

    BATCH = 256

    def __init__(self) -> None:
        self._pool = b""

    def __call__(self) -> str:
        if not self._pool:
            self._pool = os.urandom(16 * self.BATCH)
        chunk, self._pool = self._pool[:16], self._pool[16:]
        return "s-" + base64.urlsafe_b64encode(chunk).rstrip(b"=").decode("ascii")


class ConnectionIds:
    """Connection ids (``c-`` prefix, docs/protocol.md), unique across nodes.

    A random prefix per node and a counter: no system call per connection.
    Connection ids are addresses (``send`` to ``{"connection": id}``), not
    secrets; session ids are, and come from :class:`SessionIds`.
    """

    def __init__(self) -> None:
        self._prefix = "c-" + secrets.token_urlsafe(9) + "-"
        self._next = itertools.count(1).__next__

    def __call__(self) -> str:
        return self._prefix + format(self._next(), "x")


class _Tracked(set[str]):
    """A session's subscriptions or rooms: a set that tells its session when it
    changes (the route handlers mutate it with ``add``/``discard``), so a
    crash-safe session can be saved at the moment of the change.

    It refers to its session weakly: a strong reference would make every
    session a reference cycle, freed only by the cyclic collector.
    """

    __slots__ = ("_session",)

    def __init__(self, session: Session) -> None:
        super().__init__()
        self._session = weakref.ref(session)

    def _changed(self) -> None:
        session = self._session()
        if session is not None:
            session.changed()

    def add(self, item: str) -> None:
        if item not in self:
            super().add(item)
            self._changed()

    def discard(self, item: object) -> None:
        if item in self:
            super().discard(item)
            self._changed()

    def remove(self, item: str) -> None:
        super().remove(item)
        self._changed()

    def update(self, *others: Iterable[str]) -> None:
        size = len(self)
        super().update(*others)
        if len(self) != size:
            self._changed()

    def clear(self) -> None:
        if self:
            super().clear()
            self._changed()


#: The replay buffer of a session that has buffered nothing yet: shared and
#: empty (``maxlen`` 0), so an idle session costs no deque of its own. It is
#: never appended to: :meth:`Session.writable_buffer` replaces it first.
NO_BUFFER: deque[tuple[int, bytes]] = deque(maxlen=0)


class Session:
    """One client session. Mutated only on the event-loop thread.

    Sessions are used as keys of the routing indexes, so they hash by
    identity.
    """

    __slots__ = (
        "__weakref__",
        "buffer",
        "capacity",
        "connection_id",
        "detached_at",
        "holding",
        "id",
        "mirror",
        "on_change",
        "publish_ids",
        "roles",
        "rooms",
        "seq",
        "sink",
        "subscriptions",
        "user",
    )

    def __init__(self, session_id: str, user: str, roles: tuple[str, ...], buffer_size: int):
        self.id = session_id
        self.user = user
        self.roles = roles
        self.seq = 0
        # The replay buffer, created at the first message (NO_BUFFER until then).
        self.buffer: deque[tuple[int, bytes]] = NO_BUFFER
        self.capacity = buffer_size
        self.subscriptions: set[str] = _Tracked(self)
        self.rooms: set[str] = _Tracked(self)
        self.sink: Sink | None = None
        self.connection_id: str | None = None
        self.detached_at: float | None = None
        # While a replay is in progress: deliver() only buffers, and the
        # replay goes on from the buffer (so live messages follow it in order).
        self.holding = False
        # While shared with other nodes (detached, or attached and crash-safe):
        # where delivered messages are also noted (the write-behind to the
        # shared session store).
        self.mirror: Callable[[str, int, bytes], None] | None = None
        # While attached and crash-safe: called when subscriptions or rooms change.
        self.on_change: Callable[[Session], None] | None = None
        # Publish ids this session used on this node: key -> when (oldest first).
        self.publish_ids: OrderedDict[str, float] | None = None

    def __repr__(self) -> str:
        return f"<Session {self.id} user={self.user!r} seq={self.seq}>"

    def deliver(self, tail: bytes) -> None:
        """Deliver one message: next ``seq``, buffer it, write it if attached,
        note it in the mirror if any."""
        seq = self.seq = self.seq + 1
        buffer = self.buffer
        if buffer is NO_BUFFER:
            buffer = self.writable_buffer()
        buffer.append((seq, tail))
        sink = self.sink
        if sink is not None and not self.holding:
            sink.push_message(with_seq(seq, tail))
        mirror = self.mirror
        if mirror is not None:
            mirror(self.id, seq, tail)

    def writable_buffer(self) -> deque[tuple[int, bytes]]:
        """The session's own replay buffer, created now if it had none."""
        if self.buffer is NO_BUFFER:
            self.buffer = deque(maxlen=self.capacity)
        return self.buffer

    def used_publish_id(self, key: str, now: float, window: float) -> bool:
        """True if ``key`` was noted (``note_publish_id``) less than ``window`` seconds ago.

        The local half of publish de-duplication: a retry on the node that saw
        the first attempt is answered without asking the shared store.
        """
        ids = self.publish_ids
        if not ids:
            return False
        horizon = now - window
        while ids:
            first = next(iter(ids))
            if ids[first] > horizon:
                break
            del ids[first]
        return key in ids

    def note_publish_id(self, key: str, now: float, cap: int) -> None:
        """Remember ``key`` as used at ``now``; at most ``cap`` keys, the oldest dropped."""
        if cap <= 0:
            return
        ids = self.publish_ids
        if ids is None:
            ids = self.publish_ids = OrderedDict()
        ids[key] = now
        ids.move_to_end(key)
        while len(ids) > cap:
            ids.popitem(last=False)

    def changed(self) -> None:
        """Subscriptions or rooms changed: tell ``on_change``, if set."""
        on_change = self.on_change
        if on_change is not None:
            on_change(self)

    def withhold(
        self,
        dropped_topics: Collection[str],
        kept_topics: Collection[str],
        dropped_rooms: Collection[str],
    ) -> set[int]:
        """Never replay the buffered messages of dropped subscriptions and rooms.

        After a role downgrade (docs/protocol.md "Permissions"): a buffered
        topic message matched by a pattern of ``dropped_topics`` and by none
        of ``kept_topics``, and a buffered message of a room in
        ``dropped_rooms``, keeps its ``seq`` but loses its body (a
        tombstone, skipped by :meth:`replay_after`), so no later resume
        replays it either. Returns the ``seq`` of every message withheld now.
        """
        if not dropped_topics and not dropped_rooms:
            return set()
        withheld: set[int] = set()
        kept: list[tuple[int, bytes]] = []
        for seq, tail in self.buffer:
            target = tail_target(tail) if tail else None
            if target is not None and _withheld(target, dropped_topics, kept_topics, dropped_rooms):
                withheld.add(seq)
                tail = b""
            kept.append((seq, tail))
        if withheld:
            self.buffer = deque(kept, maxlen=self.buffer.maxlen)
        return withheld

    def replay_after(self, last_seq: int) -> list[tuple[int, bytes]] | None:
        """The buffered messages with ``seq > last_seq``, in order.

        Returns None when the buffer no longer holds ``last_seq + 1`` or
        ``last_seq`` is ahead of this session: a resume must then start a new
        session rather than replay partially. Withheld messages
        (:meth:`withhold`) are left out: their ``seq`` is skipped.
        """
        if last_seq > self.seq or last_seq < 0:
            return None
        if last_seq == self.seq:
            return []
        if not self.buffer or self.buffer[0][0] > last_seq + 1:
            return None
        start = last_seq + 1 - self.buffer[0][0]
        return [entry for entry in itertools.islice(self.buffer, start, None) if entry[1]]


def _withheld(
    target: tuple[str, str],
    dropped_topics: Collection[str],
    kept_topics: Collection[str],
    dropped_rooms: Collection[str],
) -> bool:
    kind, name = target
    if kind == "room":
        return name in dropped_rooms
    return any(matches(p, name) for p in dropped_topics) and not any(
        matches(p, name) for p in kept_topics
    )


class SessionRegistry:
    """Every session this node holds, attached or detached (within its TTL).

    The routing handlers rebuild their indexes from here when they restart,
    so subscriptions and rooms of live sessions survive a router restart.
    """

    def __init__(self, buffer_size: int) -> None:
        self.buffer_size = buffer_size
        self._new_id = SessionIds()
        self._sessions: dict[str, Session] = {}
        self._by_connection: dict[str, Session] = {}
        self._by_user: dict[str, set[Session]] = {}
        # Detached sessions in detach order (the TTL is the same for all, so
        # the oldest expire first): expiry looks only at what expired.
        self._detached: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._sessions.values()))

    def get(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def create(self, user: str, roles: tuple[str, ...], session_id: str | None = None) -> Session:
        """Create and register a new session, to be attached at once."""
        session = Session(session_id or self._new_id(), user, roles, self.buffer_size)
        self._sessions[session.id] = session
        return session

    def attach(self, session: Session, sink: Sink) -> None:
        """Attach a live connection; a previous sink must be detached first."""
        if session.sink is not None:
            raise RuntimeError(f"session {session.id} is already attached")
        session.sink = sink
        session.connection_id = sink.connection_id
        session.detached_at = None
        session.holding = False
        session.mirror = None
        session.on_change = None
        self._detached.pop(session.id, None)
        self._by_connection[sink.connection_id] = session
        self._by_user.setdefault(session.user, set()).add(session)

    def detach(self, session: Session, now: float) -> None:
        """Drop the session's connection; the session stays for its TTL."""
        if session.connection_id is not None:
            self._by_connection.pop(session.connection_id, None)
        users = self._by_user.get(session.user)
        if users is not None:
            users.discard(session)
            if not users:
                del self._by_user[session.user]
        session.sink = None
        session.holding = False
        session.connection_id = None
        session.mirror = None
        session.on_change = None
        session.detached_at = now
        self._detached.pop(session.id, None)
        self._detached[session.id] = session

    def restore(
        self,
        session_id: str,
        user: str,
        roles: tuple[str, ...],
        *,
        seq: int,
        buffer: Iterable[tuple[int, bytes]],
        subscriptions: Iterable[str],
        rooms: Iterable[str],
        now: float,
    ) -> Session:
        """Register a session resumed from another node's snapshot (detached)."""
        session = self.create(user, roles, session_id)
        session.detached_at = now  # until attached, it expires like any detached one
        self._detached[session.id] = session
        session.seq = seq
        session.writable_buffer().extend(buffer)
        session.subscriptions.update(subscriptions)
        session.rooms.update(rooms)
        return session

    def restore_snapshot(
        self, snapshot: SessionSnapshot, roles: tuple[str, ...], now: float
    ) -> Session:
        """Register a session claimed from the shared store (detached until attached)."""
        return self.restore(
            snapshot.session_id,
            snapshot.user,
            roles,
            seq=snapshot.seq,
            buffer=snapshot.buffer,
            subscriptions=snapshot.subscriptions,
            rooms=snapshot.rooms,
            now=now,
        )

    def remove(self, session: Session) -> None:
        """Forget a session entirely (expired, or replaced)."""
        if session.sink is not None:
            self.detach(session, 0.0)
        self._detached.pop(session.id, None)
        self._sessions.pop(session.id, None)

    def by_connection(self, connection_id: str) -> Session | None:
        return self._by_connection.get(connection_id)

    def attached_of(self, user: str) -> set[Session]:
        """Live (attached) sessions of ``user`` on this node; do not mutate."""
        return self._by_user.get(user) or _EMPTY

    def attached(self) -> list[Session]:
        """Every attached session of this node."""
        return list(self._by_connection.values())

    def attached_count(self) -> int:
        return len(self._by_connection)

    def detached_count(self) -> int:
        return len(self._detached)

    def detached(self) -> list[Session]:
        """Every detached session of this node, oldest detach first."""
        return list(self._detached.values())

    def expired(self, now: float, ttl: float) -> list[Session]:
        """Detached sessions whose TTL has run out at ``now``, oldest first."""
        found = []
        for session in self._detached.values():
            if session.detached_at is None or now - session.detached_at < ttl:
                break
            found.append(session)
        return found

    def matching(self, roles: Iterable[str], users: Iterable[str]) -> list[Session]:
        """Sessions with any of ``roles`` or whose user is in ``users``."""
        role_set, user_set = set(roles), set(users)
        return [
            s
            for s in self._sessions.values()
            if s.user in user_set or not role_set.isdisjoint(s.roles)
        ]


_EMPTY: set[Session] = set()


# -- resume (docs/protocol.md "Sessions, resume and replay") ---------------------------


class ResumeVerdict(enum.Enum):
    """What a connection presenting ``session`` + ``last_seq`` gets."""

    NOT_REQUESTED = "not_requested"  # no resume asked for: a new session
    UNKNOWN = "unknown"  # no such session (never existed, expired, or moved away)
    OTHER_OWNER = "other_owner"  # the session belongs to another user
    TOO_OLD = "too_old"  # the buffer no longer holds last_seq + 1, or last_seq is ahead
    RESUME = "resume"  # exact replay, then live messages
    TAKE_OVER = "take_over"  # resume; the connection still attached is closed first
    CLAIM = "claim"  # not held here, but sessions are shared: claim it from the store


@dataclass(frozen=True, slots=True)
class ResumePlan:
    """A resume decision: the verdict, and for a resume the session and its replay.

    ``previous`` is the sink still attached to the session on a take-over
    (the client reconnected before its old socket was noticed gone).
    """

    verdict: ResumeVerdict
    session: Session | None = None
    replay: tuple[tuple[int, bytes], ...] = ()
    previous: Sink | None = None

    @property
    def resumed(self) -> bool:
        """True when the session is resumed (with or without a take-over)."""
        return self.verdict is ResumeVerdict.RESUME or self.verdict is ResumeVerdict.TAKE_OVER

    @property
    def requested(self) -> bool:
        """True when the client asked to resume (whatever the outcome)."""
        return self.verdict is not ResumeVerdict.NOT_REQUESTED


_NOT_REQUESTED = ResumePlan(ResumeVerdict.NOT_REQUESTED)


def plan_resume(
    registry: SessionRegistry,
    user: str,
    session_id: str | None,
    last_seq: int | None,
    *,
    shared: bool,
) -> ResumePlan:
    """Decide what a connection of ``user`` resuming ``session_id`` after ``last_seq`` gets.

    ``shared`` is True when other nodes share sessions through a store: a
    session not held here may then be claimed from it (``CLAIM``). Nothing is
    changed: the caller carries out the plan (detaching ``previous`` on a
    take-over, attaching the session, replaying).
    """
    if session_id is None or last_seq is None:
        return _NOT_REQUESTED
    session = registry.get(session_id)
    if session is None:
        return ResumePlan(ResumeVerdict.CLAIM if shared else ResumeVerdict.UNKNOWN)
    if session.user != user:
        return ResumePlan(ResumeVerdict.OTHER_OWNER)
    return _replayable(session, last_seq)


def plan_claimed(session: Session | None, last_seq: int) -> ResumePlan:
    """Decide a resume once the shared store answered a claim.

    ``session`` is the claimed session, already restored into the registry,
    or None when the store had no unexpired session of this user.
    """
    if session is None:
        return ResumePlan(ResumeVerdict.UNKNOWN)
    return _replayable(session, last_seq)


def _replayable(session: Session, last_seq: int) -> ResumePlan:
    replay = session.replay_after(last_seq)
    if replay is None:
        return ResumePlan(ResumeVerdict.TOO_OLD)
    if session.sink is not None:
        return ResumePlan(ResumeVerdict.TAKE_OVER, session, tuple(replay), session.sink)
    return ResumePlan(ResumeVerdict.RESUME, session, tuple(replay))
