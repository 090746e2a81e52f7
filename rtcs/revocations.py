"""Revoked users and sessions, as one node knows them (pure: no I/O).

``POST /admin/revoke`` records a revocation in the shared backend and tells
every node; each node keeps this table so that checking a token costs a dict
lookup, not a backend round trip. A user revocation at time ``T`` refuses
every token of that user issued at or before ``T`` (``iat <= T``, and tokens
without ``iat``) until the revocation expires; it expires once every such
token has (``auth.max_token_lifetime`` after ``T``). A session revocation
makes that session id unusable for as long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["Revocation", "RevocationStore", "RevocationTable", "Revoker"]

RevocationKind = Literal["user", "session"]


@dataclass(frozen=True, slots=True)
class Revocation:
    """``kind`` ("user" or "session") ``target`` revoked at ``at`` until ``until``."""

    kind: RevocationKind
    target: str
    at: float
    until: float


class RevocationTable:
    """The live revocations, newest per target; expired ones are dropped lazily."""

    def __init__(self) -> None:
        self._users: dict[str, Revocation] = {}
        self._sessions: dict[str, Revocation] = {}

    def add(self, revocation: Revocation) -> bool:
        """Record ``revocation``; False if a later one for the same target is known."""
        table = self._users if revocation.kind == "user" else self._sessions
        known = table.get(revocation.target)
        if known is not None and known.at >= revocation.at and known.until >= revocation.until:
            return False
        table[revocation.target] = revocation
        return True

    def user_refused(self, user: str, issued_at: float | None, now: float) -> bool:
        """True if a token of ``user`` issued at ``issued_at`` is revoked at ``now``."""
        known = self._live(self._users, user, now)
        return known is not None and (issued_at is None or issued_at <= known.at)

    def session_refused(self, session: str, now: float) -> bool:
        return self._live(self._sessions, session, now) is not None

    def prune(self, now: float) -> int:
        """Drop what has expired; how many were dropped."""
        dropped = 0
        for table in (self._users, self._sessions):
            for target in [t for t, r in table.items() if r.until <= now]:
                del table[target]
                dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._users) + len(self._sessions)

    @staticmethod
    def _live(table: dict[str, Revocation], target: str, now: float) -> Revocation | None:
        known = table.get(target)
        if known is None:
            return None
        if known.until <= now:
            del table[target]
            return None
        return known


class RevocationStore(Protocol):
    """Revocations shared by every node: an append-only log read forward.

    Implementations: ``rtcs.backends.memory.revocations`` (one process or one
    ``MemoryHub``) and ``rtcs.backends.redis.revocations``.
    """

    async def revoke(self, revocation: Revocation, keep: float) -> int:
        """Append ``revocation``; its sequence number (increasing).

        The log may forget an entry ``keep`` seconds after it was appended.

        Raises:
            Unavailable: the store cannot be reached.
        """
        ...

    async def since(self, seq: int, limit: int) -> list[tuple[int, Revocation]]:
        """The entries after sequence number ``seq``, oldest first, at most ``limit``.

        Raises:
            Unavailable: the store cannot be reached.
        """
        ...

    def healthy(self) -> bool:
        """True while the last call succeeded."""
        ...


class Revoker:
    """Records revocations in the shared store and applies everyone's locally.

    ``revoke`` appends to the store and applies at once on this node;
    ``catch_up`` (called at start and then periodically) applies what other
    nodes appended. Applying means: remember it in ``table`` (which the token
    verifier consults) and call ``on_revoked`` once per new revocation (which
    closes this node's matching sockets).
    """

    def __init__(
        self,
        store: RevocationStore,
        table: RevocationTable,
        *,
        lifetime: float,
        clock: Callable[[], float],
        on_revoked: Callable[[Revocation], None],
    ) -> None:
        self.store = store
        self.table = table
        self._lifetime = lifetime
        self._clock = clock
        self._on_revoked = on_revoked
        self._seq = 0

    async def revoke(self, kind: RevocationKind, target: str) -> Revocation:
        """Revoke ``target`` now for the longest token lifetime.

        Raises:
            Unavailable: the shared store cannot be reached (nothing revoked).
        """
        now = self._clock()
        revocation = Revocation(kind, target, now, now + self._lifetime)
        await self.store.revoke(revocation, self._lifetime)
        self._take(revocation, now)
        return revocation

    async def catch_up(self, batch: int = 1000) -> int:
        """Apply every revocation appended since the last call; how many were new.

        Raises:
            Unavailable: the shared store cannot be reached.
        """
        taken = 0
        while True:
            entries = await self.store.since(self._seq, batch)
            now = self._clock()
            for seq, revocation in entries:
                self._seq = max(self._seq, seq)
                taken += self._take(revocation, now)
            if len(entries) < batch:
                self.table.prune(now)
                return taken

    def _take(self, revocation: Revocation, now: float) -> int:
        if revocation.until <= now or not self.table.add(revocation):
            return 0
        self._on_revoked(revocation)
        return 1
