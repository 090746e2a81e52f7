"""In-memory store of detached sessions, with expiry by an injected clock.

Expired sessions are purged lazily on every access (cheaply, from a heap of
expiry times) and by ``purge()``, so memory holds only sessions saved within
the last TTL.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from rtcs.backends.base import SessionSnapshot


@dataclass(slots=True)
class _Stored:
    # The buffer lives in a deque so that append is O(1) however large the
    # replay buffer is; the snapshot's own buffer field is rebuilt on claim.
    snapshot: SessionSnapshot
    buffer: deque[tuple[int, bytes]]
    expires_at: float


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

    async def save(self, snapshot: SessionSnapshot, ttl: float) -> None:
        """Store or replace ``snapshot``; it expires ``ttl`` seconds from now.

        Raises:
            ValueError: ``ttl`` is not positive.
        """
        if not ttl > 0:
            raise ValueError(f"session ttl must be positive, got {ttl!r}")
        now = self._clock()
        self._purge(now)
        expires_at = now + ttl
        self._sessions[snapshot.session_id] = _Stored(
            snapshot=replace(snapshot, buffer=()),
            buffer=deque(snapshot.buffer),
            expires_at=expires_at,
        )
        heapq.heappush(self._expiries, (expires_at, snapshot.session_id))

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
        if cap < 0:
            raise ValueError(f"buffer cap must not be negative, got {cap!r}")
        stored = self._live(session_id)
        if stored is None:
            return False
        if stored.buffer.maxlen != cap:
            stored.buffer = deque(stored.buffer, maxlen=cap)
        stored.buffer.append((seq, tail))
        if seq > stored.snapshot.seq:
            stored.snapshot = replace(stored.snapshot, seq=seq)
        return True

    async def delete(self, session_id: str) -> None:
        """Forget the session, if any."""
        self._sessions.pop(session_id, None)

    async def count(self) -> int:
        """Number of unexpired sessions."""
        self._purge(self._clock())
        return len(self._sessions)

    def purge(self) -> int:
        """Remove every expired session now; returns how many were removed."""
        return self._purge(self._clock())

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
            expires_at, session_id = heapq.heappop(expiries)
            stored = self._sessions.get(session_id)
            # A replaced session has a later expiry: its old heap entry is stale.
            if stored is not None and stored.expires_at <= expires_at:
                del self._sessions[session_id]
                removed += 1
        return removed
