"""Revocations in memory: the log of one process (or of one ``MemoryHub``)."""

from __future__ import annotations

import bisect

from rtcs.revocations import Revocation

MAX_ENTRIES = 100_000


class MemoryRevocationStore:
    """A ``RevocationStore`` in a list; ``keep`` is ignored past ``MAX_ENTRIES``.

    Entries past ``MAX_ENTRIES`` are forgotten oldest first, like the Redis
    store; lapsed entries are left to the readers (``RevocationTable``).
    """

    def __init__(self) -> None:
        self._seqs: list[int] = []
        self._entries: list[Revocation] = []
        self._last = 0

    async def revoke(self, revocation: Revocation, keep: float) -> int:
        self._last += 1
        self._seqs.append(self._last)
        self._entries.append(revocation)
        if len(self._seqs) > MAX_ENTRIES:
            del self._seqs[0], self._entries[0]
        return self._last

    async def since(self, seq: int, limit: int) -> list[tuple[int, Revocation]]:
        start = bisect.bisect_right(self._seqs, seq)
        end = min(len(self._seqs), start + max(0, limit))
        return list(zip(self._seqs[start:end], self._entries[start:end], strict=True))

    def healthy(self) -> bool:
        return True
