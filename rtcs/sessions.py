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

Delivery receipts (docs/protocol.md "Delivery receipts") are per-session
state too (:class:`Receipts`), created by the first subscription made with
receipts: a session without one pays a single attribute test per delivery.
Which messages need a receipt, the cumulative ``received``, the redelivery
rounds and the resume rules are decided here; the connection actor owns the
one timer of a session and writes what these methods return.
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
from typing import TYPE_CHECKING, NamedTuple, Protocol

from rtcs.backends.base import ReceiptState
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

    def _gone(self, item: str) -> None:
        """``item`` left the set (before the change is told); nothing here."""

    def discard(self, item: object) -> None:
        if item in self:
            super().discard(item)
            self._gone(str(item))
            self._changed()

    def remove(self, item: str) -> None:
        super().remove(item)
        self._gone(item)
        self._changed()

    def update(self, *others: Iterable[str]) -> None:
        size = len(self)
        super().update(*others)
        if len(self) != size:
            self._changed()

    def clear(self) -> None:
        if self:
            gone = tuple(self)
            super().clear()
            for item in gone:
                self._gone(item)
            self._changed()


class _Subscriptions(_Tracked):
    """A session's subscriptions: a pattern that goes stops needing receipts
    too (docs/protocol.md "Delivery receipts"), before the change is told."""

    __slots__ = ()

    def _gone(self, pattern: str) -> None:
        session = self._session()
        if session is not None and session.receipts is not None:
            session.receipts_off(pattern)


# -- delivery receipts (docs/protocol.md "Delivery receipts") ----------------------------

#: Why a message stopped being redelivered without its receipt
#: (``rtcs_receipts_given_up_total{reason}``): out of redeliveries, or pushed
#: out of the replay buffer (nothing left to redeliver it from).
GIVE_UP_REASONS = ("attempts", "evicted")

#: A session's redelivery rounds are at least this fraction of
#: ``session.receipt_timeout`` apart: messages falling due close together are
#: redelivered together, so a client that stopped acknowledging costs one
#: timer per tenth of the timeout, not one per message.
ROUND_FRACTION = 0.1


class Redelivery(NamedTuple):
    """What one redelivery round (``Session.redeliver``) did."""

    written: int
    given_up: int


class ReceiptCounts:
    """Node-wide delivery-receipt figures, kept up to date by the sessions and
    read by the metrics when scraped: ``pending`` (unacknowledged messages
    that need a receipt), ``redeliveries`` and ``given_up`` (by reason)."""

    __slots__ = ("given_up", "pending", "redeliveries")

    def __init__(self) -> None:
        self.pending = 0
        self.redeliveries = 0
        self.given_up: dict[str, int] = dict.fromkeys(GIVE_UP_REASONS, 0)


class _Unacked:
    """A delivered message still awaiting its receipt."""

    __slots__ = ("redeliveries", "sent_at")

    def __init__(self, sent_at: float | None, redeliveries: int = 0) -> None:
        # When it was last written on the current connection; None: not yet
        # (detached, or waiting behind a replay).
        self.sent_at = sent_at
        self.redeliveries = redeliveries


class Receipts:
    """The delivery-receipt state of one session.

    ``patterns`` are its subscriptions made with ``"receipts": true``.
    ``unacked`` maps the ``seq`` of every delivered message that needs a
    receipt and has none yet to its :class:`_Unacked`, in ``seq`` order. Every
    key is in the session's replay buffer: a message pushed out of it is given
    up (counted ``evicted``), so ``unacked`` is bounded by the buffer.

    While a connection is attached, the connection actor wires ``clock`` and
    ``arm`` (``arm(delay)`` schedules the session's one redelivery timer; at
    most one is armed: ``armed``) and the settings ``timeout`` and
    ``attempts``; :meth:`unwire` undoes it when the connection goes.
    """

    __slots__ = (
        "arm",
        "armed",
        "attempts",
        "clock",
        "counts",
        "patterns",
        "timeout",
        "unacked",
    )

    def __init__(self, counts: ReceiptCounts) -> None:
        self.patterns: set[str] = set()
        self.unacked: OrderedDict[int, _Unacked] = OrderedDict()
        self.counts = counts
        self.clock: Callable[[], float] | None = None
        self.arm: Callable[[float], None] | None = None
        self.armed = False
        self.timeout = 5.0
        self.attempts = 3

    def wire(
        self,
        clock: Callable[[], float],
        arm: Callable[[float], None],
        timeout: float,
        attempts: int,
    ) -> None:
        """Attached: redeliveries are timed with ``clock`` and ``arm`` (see the class)."""
        self.clock, self.arm = clock, arm
        self.timeout, self.attempts = timeout, attempts
        self.armed = False

    def unwire(self) -> None:
        """Detached: no clock, no timer (the one armed is the gone connection's)."""
        self.clock = self.arm = None
        self.armed = False

    def arm_in(self, delay: float) -> None:
        """Arm the redelivery timer ``delay`` seconds from now, unless one is armed."""
        arm = self.arm
        if self.armed or arm is None:
            return
        self.armed = True
        arm(delay)

    def add(self, seq: int, sent_at: float | None, redeliveries: int = 0) -> None:
        """``seq`` needs a receipt (the newest such message)."""
        self.unacked[seq] = _Unacked(sent_at, redeliveries)
        self.counts.pending += 1

    def drop(self, seq: int) -> None:
        """``seq`` no longer needs a receipt."""
        if self.unacked.pop(seq, None) is not None:
            self.counts.pending -= 1

    def give_up(self, seq: int, reason: str) -> None:
        """Stop waiting for the receipt of ``seq``, counted under ``reason``."""
        if self.unacked.pop(seq, None) is not None:
            self.counts.pending -= 1
            self.counts.given_up[reason] += 1

    def acknowledge(self, seq: int) -> int:
        """A cumulative receipt: every message up to ``seq`` arrived. Returns how
        many were awaiting theirs."""
        unacked = self.unacked
        done = 0
        while unacked and next(iter(unacked)) <= seq:
            unacked.popitem(last=False)
            done += 1
        self.counts.pending -= done
        return done

    def evict_before(self, first: int) -> None:
        """The replay buffer starts at ``first`` now: give up on what left it."""
        unacked = self.unacked
        while unacked:
            seq = next(iter(unacked))
            if seq >= first:
                return
            self.give_up(seq, "evicted")

    def clear(self) -> None:
        """Forget every pending receipt (the session is gone)."""
        self.counts.pending -= len(self.unacked)
        self.unacked.clear()

    def state(self, seq: int) -> ReceiptState:
        """What is kept with the session for resume (``seq``: the session's)."""
        return ReceiptState(
            patterns=tuple(sorted(self.patterns)),
            unacked=tuple((s, entry.redeliveries) for s, entry in self.unacked.items()),
            upto=seq,
        )


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
        "receipts",
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
        self.subscriptions: set[str] = _Subscriptions(self)
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
        # Delivery receipts: None until a subscription is made with receipts.
        self.receipts: Receipts | None = None

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
        receipts = self.receipts
        if receipts is not None:
            self._delivered_with_receipts(receipts, seq, tail)

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

    # -- delivery receipts (docs/protocol.md "Delivery receipts") -----------------------

    def needs_receipt(self, tail: bytes) -> bool:
        """Whether a message (its tail) needs a receipt: a topic message matched
        by a subscription of the session made with receipts."""
        receipts = self.receipts
        if receipts is None or not tail.startswith(b'"topic":'):
            return False
        target = tail_target(tail)
        if target is None:
            return False
        topic, subscriptions = target[1], self.subscriptions
        return any(p in subscriptions and matches(p, topic) for p in receipts.patterns)

    def _delivered_with_receipts(self, receipts: Receipts, seq: int, tail: bytes) -> None:
        buffer = self.buffer
        if receipts.unacked:
            receipts.evict_before(buffer[0][0] if buffer else seq + 1)
        if not self.needs_receipt(tail):
            return
        if not buffer or buffer[-1][0] != seq:
            # No replay buffer (``session.replay_buffer = 0``): nothing to
            # redeliver it from.
            receipts.counts.given_up["evicted"] += 1
            return
        clock = receipts.clock
        if clock is not None and self.sink is not None and not self.holding:
            receipts.add(seq, clock())
            receipts.arm_in(receipts.timeout)
        else:
            receipts.add(seq, None)  # written later: by a replay, or after a resume

    def want_receipts(self, pattern: str, on: bool, counts: ReceiptCounts) -> bool:
        """Turn receipts on or off for the subscription ``pattern`` (the latest
        ``subscribe`` of a pattern decides). Returns True when that changed.

        Receipts on: from now on, its messages need receipts (earlier ones do
        not). Off: its pending messages no longer need one unless another
        receipt subscription matches them.
        """
        receipts = self.receipts
        if on:
            if receipts is None:
                receipts = self.receipts = Receipts(counts)
            if pattern in receipts.patterns:
                return False
            receipts.patterns.add(pattern)
            return True
        if receipts is None or pattern not in receipts.patterns:
            return False
        self.receipts_off(pattern)
        return True

    def receipts_off(self, pattern: str) -> None:
        """``pattern`` is no receipt subscription any more (unsubscribed, or
        subscribed again without receipts): what only it required is dropped."""
        receipts = self.receipts
        if receipts is None or pattern not in receipts.patterns:
            return
        receipts.patterns.discard(pattern)
        if receipts.unacked:
            tails = dict(self.buffer)
            for seq in list(receipts.unacked):
                if not self.needs_receipt(tails.get(seq) or b""):
                    receipts.drop(seq)
        if not receipts.patterns and not receipts.unacked and not receipts.armed:
            self.receipts = None  # back to the one-test delivery

    def acknowledge(self, seq: int) -> None:
        """A ``received`` with ``seq`` (cumulative; the caller checked that it is
        not ahead of the session's ``seq``)."""
        receipts = self.receipts
        if receipts is not None and receipts.unacked:
            receipts.acknowledge(seq)

    def receipts_sent(self, now: float) -> None:
        """Everything awaiting a receipt that was not written on this connection
        yet has been now (a replay finished, or a resume needed none)."""
        receipts = self.receipts
        if receipts is None:
            return
        stamped = False
        for entry in receipts.unacked.values():
            if entry.sent_at is None:
                entry.sent_at = now
                stamped = True
        if stamped:
            receipts.arm_in(receipts.timeout)

    def resume_receipts(self, last_seq: int, now: float) -> list[tuple[int, bytes]]:
        """A resume after ``last_seq``: the messages up to ``last_seq`` still
        awaiting a receipt, in order, to be written again now (marked
        redelivered, before the replay).

        Each counts as a redelivery; one that has had ``attempts`` already is
        given up instead. Messages after ``last_seq`` are replayed as usual and
        their timeout starts once the replay is done (:meth:`receipts_sent`).
        """
        receipts = self.receipts
        if receipts is None or not receipts.unacked:
            return []
        tails = dict(self.buffer)
        again: list[tuple[int, bytes]] = []
        for seq, entry in list(receipts.unacked.items()):
            if seq > last_seq:
                entry.sent_at = None
                continue
            tail = tails.get(seq)
            if tail is None:
                receipts.give_up(seq, "evicted")
            elif not tail:
                receipts.drop(seq)  # withheld: never replayed again
            elif entry.redeliveries >= receipts.attempts:
                receipts.give_up(seq, "attempts")
            else:
                entry.redeliveries += 1
                entry.sent_at = now
                again.append((seq, tail))
        receipts.counts.redeliveries += len(again)
        if again:
            receipts.arm_in(receipts.timeout)
        return again

    def redeliver(self, now: float, write: Callable[[int, bytes], bool]) -> Redelivery:
        """The redelivery timer fired: write again, in ``seq`` order, every
        message whose receipt is ``receipts.timeout`` overdue; give up on those
        redelivered ``receipts.attempts`` times already. Returns how many were
        written and given up.

        ``write(seq, tail)`` writes one (marked redelivered); False: not now
        (the outbox is full or a replay runs), so the rest waits for the next
        round. The next round is armed for the next message falling due, but
        no sooner than a tenth of the timeout from now.
        """
        receipts = self.receipts
        if receipts is None:
            return Redelivery(0, 0)
        receipts.armed = False
        timeout, written, given_up = receipts.timeout, 0, 0
        tails: dict[int, bytes] | None = None
        next_due: float | None = None
        writing = True
        for seq, entry in list(receipts.unacked.items()):
            sent_at = entry.sent_at
            if sent_at is None:
                continue  # not written on this connection yet
            due = sent_at + timeout
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            if entry.redeliveries >= receipts.attempts:
                receipts.give_up(seq, "attempts")
                given_up += 1
                continue
            if tails is None:
                tails = dict(self.buffer)
            tail = tails.get(seq)
            if tail is None:
                receipts.give_up(seq, "evicted")
                given_up += 1
            elif not tail:
                receipts.drop(seq)  # withheld after a role downgrade
            elif writing and write(seq, tail):
                entry.sent_at = now
                entry.redeliveries += 1
                written += 1
                due = now + timeout  # its next round
                next_due = due if next_due is None else min(next_due, due)
            else:
                writing = False
                next_due = now  # still due: the next round
        receipts.counts.redeliveries += written
        if next_due is not None:
            receipts.arm_in(max(next_due - now, timeout * ROUND_FRACTION))
        elif not receipts.patterns and not receipts.unacked:
            self.receipts = None
        return Redelivery(written, given_up)

    def receipt_state(self) -> ReceiptState | None:
        """The receipts kept with a saved session, or None without any."""
        receipts = self.receipts
        if receipts is None or not receipts.patterns:
            return None
        return receipts.state(self.seq)

    def restore_receipts(self, state: ReceiptState, counts: ReceiptCounts) -> None:
        """Take up the receipts of a session restored from the shared store.

        Call once the buffer and subscriptions are restored: a pending message
        no longer buffered is given up (``evicted``), and buffered messages
        delivered after the state was taken (``state.upto``) are checked
        against the receipt subscriptions. Nothing counts as written on the
        new connection yet.
        """
        if not state.patterns:
            return
        receipts = self.receipts = Receipts(counts)
        receipts.patterns.update(state.patterns)
        tails = dict(self.buffer)
        for seq, redeliveries in sorted(state.unacked):
            tail = tails.get(seq)
            if tail is None:
                counts.given_up["evicted"] += 1
            elif tail:
                receipts.add(seq, None, redeliveries)
        for seq, tail in self.buffer:
            if seq > state.upto and seq not in receipts.unacked and self.needs_receipt(tail):
                receipts.add(seq, None)

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
        #: Delivery-receipt figures of every session here (the metrics read them).
        self.receipt_counts = ReceiptCounts()
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
        if session.receipts is not None:
            session.receipts.unwire()
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
        receipts: ReceiptState | None = None,
    ) -> Session:
        """Register a session resumed from another node's snapshot (detached)."""
        session = self.create(user, roles, session_id)
        session.detached_at = now  # until attached, it expires like any detached one
        self._detached[session.id] = session
        session.seq = seq
        session.writable_buffer().extend(buffer)
        session.subscriptions.update(subscriptions)
        session.rooms.update(rooms)
        if receipts is not None:
            session.restore_receipts(receipts, self.receipt_counts)
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
            receipts=snapshot.receipts,
        )

    def remove(self, session: Session) -> None:
        """Forget a session entirely (expired, or replaced)."""
        if session.sink is not None:
            self.detach(session, 0.0)
        if session.receipts is not None:
            session.receipts.clear()  # expired with it, or moved with its record
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
    ``last_seq`` is the client's, for a resume (delivery receipts: what
    awaits a receipt up to it is redelivered, ``Session.resume_receipts``).
    """

    verdict: ResumeVerdict
    session: Session | None = None
    replay: tuple[tuple[int, bytes], ...] = ()
    previous: Sink | None = None
    last_seq: int = 0

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
        return ResumePlan(ResumeVerdict.TAKE_OVER, session, tuple(replay), session.sink, last_seq)
    return ResumePlan(ResumeVerdict.RESUME, session, tuple(replay), last_seq=last_seq)
