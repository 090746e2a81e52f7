"""In-memory store of sessions kept for resume, with expiry by an injected clock.

Expired sessions are purged lazily on every access (cheaply, from a heap of
expiry times) and by ``purge()``, so memory holds only sessions saved within
the last TTL.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from rtcs.backends.base import (
    SessionSnapshot,
    check_cap,
    check_ttl,
    check_window,
    publish_key,
)


@dataclass(slots=True)
class _Stored:
    # The buffer lives in a deque so that append is O(1) however large the
    # replay buffer is; the snapshot's own buffer field is rebuilt on claim.
    snapshot: SessionSnapshot
    buffer: deque[tuple[int, bytes]]
    expires_at: float
    # The time of this session's one authoritative heap entry. Moving the
    # expiry later (mirror, touch) pushes nothing: when the entry surfaces
    # before ``expires_at``, it is pushed again for ``expires_at``.
    scheduled: float


@dataclass(slots=True)
class _Publishes:
    # publish key -> when it was recorded, oldest first (a duplicate never
    # moves its entry, so insertion order is time order).
    seen: OrderedDict[str, float] = field(default_factory=OrderedDict)
    expires_at: float = 0.0
    scheduled: float = 0.0  # as _Stored.scheduled, in the publishes heap


class MemorySessionStore:
    """A ``SessionStore`` kept in process memory.

    ``clock`` returns seconds on a monotonic scale; tests inject a fake one.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._sessions: dict[str, _Stored] = {}
        # (expires_at, session_id); entries of replaced or removed sessions
        # stay until they surface and are then checked against _sessions.
        self._expiries: list[tuple[float, str]] = []
        # Publish ids seen per session (first_publish), expired like sessions.
        self._publishes: dict[str, _Publishes] = {}
        self._publish_expiries: list[tuple[float, str]] = []

    async def save(self, snapshot: SessionSnapshot, ttl: float, *, take_over: bool = False) -> bool:
        """Store or replace ``snapshot``; it expires ``ttl`` seconds from now.

        Returns False, changing nothing, when a live record belongs to another
        node and ``take_over`` is False.

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        check_ttl(ttl)
        now = self._clock()
        self._purge(now)
        current = self._sessions.get(snapshot.session_id)
        if current is not None and not take_over and current.snapshot.node != snapshot.node:
            return False
        expires_at = now + ttl
        self._sessions[snapshot.session_id] = _Stored(
            snapshot=replace(snapshot, buffer=()),
            buffer=deque(snapshot.buffer),
            expires_at=expires_at,
            scheduled=expires_at,
        )
        heapq.heappush(self._expiries, (expires_at, snapshot.session_id))
        return True

    async def claim(self, session_id: str, user: str) -> SessionSnapshot | None:
        """Remove and return the session when it is live and owned by ``user``."""
        stored = self._live(session_id)
        if stored is None or stored.snapshot.user != user:
            return None
        del self._sessions[session_id]
        return replace(stored.snapshot, buffer=tuple(stored.buffer))

    async def append(self, session_id: str, seq: int, tail: bytes, cap: int) -> bool:
        """Add ``(seq, tail)`` to a live session's buffer, keeping the last ``cap``.

        Raises:
            ValueError: ``cap`` is negative.
        """
        check_cap(cap)
        stored = self._live(session_id)
        if stored is None:
            return False
        _append(stored, seq, tail, cap)
        return True

    async def mirror(
        self, node: str, ttl: float | None, cap: int, entries: Sequence[tuple[str, int, bytes]]
    ) -> tuple[set[str], set[str]]:
        """Append entries of sessions ``node`` owns; with ``ttl``, move their expiry.

        Raises:
            ValueError: ``cap`` is negative, or ``ttl`` is not positive.
        """
        check_cap(cap)
        if ttl is not None:
            check_ttl(ttl)
        now = self._clock()
        self._purge(now)
        absent: set[str] = set()
        moved: set[str] = set()
        for session_id, seq, tail in entries:
            stored = self._owned(session_id, node, absent, moved)
            if stored is not None:
                _append(stored, seq, tail, cap)
                if ttl is not None:
                    stored.expires_at = now + ttl
        return absent, moved

    async def touch(
        self, node: str, ttl: float, session_ids: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """Move the expiry of sessions ``node`` owns to ``ttl`` seconds from now.

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        check_ttl(ttl)
        now = self._clock()
        self._purge(now)
        absent: set[str] = set()
        moved: set[str] = set()
        for session_id in session_ids:
            stored = self._owned(session_id, node, absent, moved)
            if stored is not None:
                stored.expires_at = now + ttl
        return absent, moved

    def _owned(
        self, session_id: str, node: str, absent: set[str], moved: set[str]
    ) -> _Stored | None:
        stored = self._sessions.get(session_id)
        if stored is None:
            absent.add(session_id)
        elif stored.snapshot.node != node:
            moved.add(session_id)
        else:
            return stored
        return None

    async def delete(self, session_id: str) -> None:
        """Forget the session, if any."""
        self._sessions.pop(session_id, None)

    async def first_publish(
        self, session_id: str, publish_id: str, window: float, cap: int
    ) -> bool:
        """True, recording it, unless ``publish_id`` was seen for the session
        within ``window`` seconds; at most ``cap`` ids kept per session.

        Raises:
            ValueError: ``window`` is not positive, or ``cap`` is negative.
        """
        check_window(window)
        check_cap(cap)
        now = self._clock()
        self._purge_publishes(now)
        key = publish_key(publish_id)
        entry = self._publishes.get(session_id)
        if entry is None:
            if cap == 0:
                return True
            entry = self._publishes[session_id] = _Publishes(scheduled=now + window)
            heapq.heappush(self._publish_expiries, (entry.scheduled, session_id))
        seen = entry.seen
        horizon = now - window
        while seen:  # forget what fell out of this call's window
            oldest = next(iter(seen.values()))
            if oldest > horizon:
                break
            seen.popitem(last=False)
        if key in seen:
            return False
        seen[key] = now
        while len(seen) > cap:
            seen.popitem(last=False)
        entry.expires_at = now + window
        return True

    async def count(self) -> int:
        """Number of unexpired sessions."""
        self._purge(self._clock())
        return len(self._sessions)

    def purge(self) -> int:
        """Remove every expired session now; returns how many were removed.

        Expired publish-id records (``first_publish``) go too, uncounted.
        """
        now = self._clock()
        self._purge_publishes(now)
        return self._purge(now)

    def healthy(self) -> bool:
        """Always True: memory does not go away."""
        return True

    def _live(self, session_id: str) -> _Stored | None:
        # Purging first means whatever is still in _sessions is unexpired.
        self._purge(self._clock())
        return self._sessions.get(session_id)

    def _purge(self, now: float) -> int:
        removed = 0
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            scheduled, session_id = heapq.heappop(expiries)
            stored = self._sessions.get(session_id)
            # The heap entry of a replaced session is stale: not its scheduled one.
            if stored is None or stored.scheduled != scheduled:
                continue
            if stored.expires_at <= now:
                del self._sessions[session_id]
                removed += 1
            else:  # the expiry moved later (mirror, touch): look again then
                stored.scheduled = stored.expires_at
                heapq.heappush(expiries, (stored.expires_at, session_id))
        return removed

    def _purge_publishes(self, now: float) -> None:
        expiries = self._publish_expiries
        while expiries and expiries[0][0] <= now:
            scheduled, session_id = heapq.heappop(expiries)
            entry = self._publishes.get(session_id)
            if entry is None or entry.scheduled != scheduled:
                continue
            if entry.expires_at <= now or not entry.seen:
                del self._publishes[session_id]
            else:  # recorded since: look again at its new expiry
                entry.scheduled = entry.expires_at
                heapq.heappush(expiries, (entry.expires_at, session_id))


def _append(stored: _Stored, seq: int, tail: bytes, cap: int) -> None:
    if stored.buffer.maxlen != cap:
        stored.buffer = deque(stored.buffer, maxlen=cap)
    stored.buffer.append((seq, tail))
    if seq > stored.snapshot.seq:
        stored.snapshot = replace(stored.snapshot, seq=seq)
