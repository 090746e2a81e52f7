"""Revocations in Redis: one append-only log every node reads forward.

Keys (one Cluster slot, hash tag ``{revocations}``):

- ``<prefix>:{revocations}:seq`` counter: the last sequence number given out.
- ``<prefix>:{revocations}:log`` sorted set: score = sequence number, member =
  ``wire``-style JSON ``[seq, kind, target, at, until]`` (the sequence number
  inside keeps equal revocations distinct).

``revoke`` is one script: INCR, ZADD, trim to ``MAX_ENTRIES`` (oldest first),
and an expiry on both keys of ``keep`` seconds, so a deployment that stops
revoking forgets the log once every revocation in it has lapsed. Readers ask
for what came after the last number they saw (``ZRANGEBYSCORE (seq +inf``):
one small read per poll, nothing when nothing changed.

If the log was trimmed or expired past a reader's number the reader cannot
tell; it only misses revocations older than ``MAX_ENTRIES`` newer ones.
"""

from __future__ import annotations

import json
from typing import Any

from rtcs.backends.redis.client import Link, RedisStore, Script
from rtcs.backends.redis.wire import Keys
from rtcs.revocations import Revocation

MAX_ENTRIES = 100_000

_REVOKE = Script("""
-- KEYS: seq, log. ARGV: kind, target, at, until, keep_ms, max_entries.
local seq = redis.call('INCR', KEYS[1])
local member = cjson.encode({seq, ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])})
redis.call('ZADD', KEYS[2], seq, member)
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[6])
if extra > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return seq
""")


class RedisRevocationStore(RedisStore):
    """A ``RevocationStore`` in Redis (see the module docstring for the layout)."""

    def __init__(self, link: Link, keys: Keys) -> None:
        super().__init__(link, "revocation")
        self._seq = f"{keys.prefix}:{{revocations}}:seq"
        self._log = f"{keys.prefix}:{{revocations}}:log"

    async def revoke(self, revocation: Revocation, keep: float) -> int:
        """Append ``revocation``; its sequence number.

        Raises:
            Unavailable: Redis cannot be reached or the store is closed.
        """
        keep_ms = max(1, round(keep * 1000))
        async with self._guard("revoke"):
            seq = await _REVOKE(
                self._link.client,
                [self._seq, self._log],
                [
                    revocation.kind,
                    revocation.target,
                    repr(revocation.at),
                    repr(revocation.until),
                    keep_ms,
                    MAX_ENTRIES,
                ],
            )
        return int(seq)

    async def since(self, seq: int, limit: int) -> list[tuple[int, Revocation]]:
        """The revocations after ``seq``, oldest first, at most ``limit``.

        Raises:
            Unavailable: Redis cannot be reached or the store is closed.
        """
        async with self._guard("since"):
            raw = await self._link.client.zrangebyscore(
                self._log, f"({seq}", "+inf", start=0, num=limit
            )
        found: list[tuple[int, Revocation]] = []
        for item in raw:
            entry = _decode(item)
            if entry is not None:
                found.append(entry)
        return found


def _decode(item: Any) -> tuple[int, Revocation] | None:
    """One log member, or None for one this version cannot read."""
    try:
        seq, kind, target, at, until = json.loads(item)
        if kind not in ("user", "session") or not isinstance(target, str):
            return None
        return int(seq), Revocation(kind, target, float(at), float(until))
    except (ValueError, TypeError):
        return None
