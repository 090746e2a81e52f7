"""Sessions kept for resume in Redis: one hash and one list per session, on one slot.

Keys (``wire.Keys``), with the session id as the Cluster hash tag:

- ``<prefix>:s:{<id>}:meta`` hash: ``user``, ``seq`` (decimal), ``node``,
  ``subs`` and ``rooms`` (``wire.pack_strings``), and ``rcpt``, the delivery
  receipts (``wire.pack_receipts``), only for a session that has them (a
  record without it, as earlier releases wrote, is a session without).
- ``<prefix>:s:{<id>}:buf`` list, oldest first, of ``b"<seq>:" + tail``
  (binary-safe: the client never decodes responses).
- ``<prefix>:sessions`` sorted set: session id -> expiry (ms, by that server's
  clock), only so that ``count`` need not scan every master.

``<prefix>:s:{<id>}:pub`` sorted set: the session's recent publish ids
(``first_publish``) -> when first seen, in microseconds by the server's clock,
each score above the previous one so rank order is arrival order. One script
drops what left the window, adds the id with ``ZADD NX`` (not added: a
duplicate), trims to the newest ``cap`` and sets the TTL to the window. It is
on the session's slot but separate from the record, so it outlives ``claim``.

Both per-session keys carry the same absolute expiry (``PEXPIRE`` on save).
``save``, ``claim`` and ``append`` are each one Lua script on the session's
slot, so they are atomic against each other: of concurrent claims one script
runs first, deletes both keys and wins; the others find nothing. ``claim``
checks the owner inside the script, so a wrong user never removes a session.
``append`` copies the hash's expiry onto the list with ``PEXPIRETIME`` /
``PEXPIREAT`` (Redis 7.0) instead of setting a new TTL, so the expiry never
moves; it trims the list to ``cap`` with ``LTRIM`` and raises ``seq`` to the
max. Expired keys are invisible to scripts, so "no unexpired session" is just
"no meta hash".

``node`` in the hash is the record's owner. ``save`` (unless ``take_over``),
``mirror`` and ``touch`` check it inside their script, so a node never writes
over a record another node owns. ``mirror`` is ``append`` for many sessions
in one pipeline (one script call per session); with a TTL it also moves the
expiry of both keys (an attached, crash-safe session).

The index is written in the same pipeline as the session (a different slot in
Cluster mode, so not atomically): it can only over-count, for a session claimed
or deleted while its index update failed, and only until that entry's expiry.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rtcs.backends.base import (
    SessionSnapshot,
    check_cap,
    check_ttl,
    check_window,
    publish_key,
)
from rtcs.backends.redis.client import Link, RedisStore, Script
from rtcs.backends.redis.wire import (
    Keys,
    WireError,
    pack_receipts,
    pack_strings,
    unpack_receipts,
    unpack_strings,
)
from rtcs.errors import Unavailable

_SAVE = Script("""
-- KEYS: meta, buf. ARGV: ttl_ms, user, seq, node, subs, rooms, take_over,
-- rcpt ('' for none), entries...
-- 0: another node owns the live record (nothing changed); 1: saved.
if ARGV[7] ~= '1' then
  local owner = redis.call('HGET', KEYS[1], 'node')
  if owner and owner ~= ARGV[4] then return 0 end
end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'user', ARGV[2], 'seq', ARGV[3], 'node', ARGV[4],
           'subs', ARGV[5], 'rooms', ARGV[6])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'rcpt', ARGV[8]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local n = #ARGV
if n > 8 then
  for i = 9, n, 256 do
    redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 255, n)))
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
end
return 1
""")

_CLAIM = Script("""
-- KEYS: meta, buf. ARGV: user. nil: no session; 0: another user's; else the data
-- (rcpt last: a record without it yields five items).
local user = redis.call('HGET', KEYS[1], 'user')
if not user then return nil end
if user ~= ARGV[1] then return 0 end
local meta = redis.call('HMGET', KEYS[1], 'seq', 'node', 'subs', 'rooms', 'rcpt')
local buf = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
return {meta[1], meta[2], meta[3], meta[4], buf, meta[5]}
""")

_APPEND = Script("""
-- KEYS: meta, buf. ARGV: seq, entry, cap. 0: no live session; 1: appended.
local expires = redis.call('PEXPIRETIME', KEYS[1])
if expires == -2 then return 0 end
local cap = tonumber(ARGV[3])
if cap > 0 then
  redis.call('RPUSH', KEYS[2], ARGV[2])
  redis.call('LTRIM', KEYS[2], -cap, -1)
  if expires > 0 then redis.call('PEXPIREAT', KEYS[2], expires) end
else
  redis.call('DEL', KEYS[2])
end
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', KEYS[1], 'seq')) then
  redis.call('HSET', KEYS[1], 'seq', ARGV[1])
end
return 1
""")

_MIRROR = Script("""
-- KEYS: meta, buf. ARGV: node, ttl_ms (0: the expiry does not move), cap,
-- then seq, entry pairs. 0: no live session; 2: another node's; 1: appended.
local owner = redis.call('HGET', KEYS[1], 'node')
if not owner then return 0 end
if owner ~= ARGV[1] then return 2 end
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local top = redis.call('HGET', KEYS[1], 'seq')
local raised = false
for i = 4, #ARGV, 2 do
  if cap > 0 then redis.call('RPUSH', KEYS[2], ARGV[i + 1]) end
  if tonumber(ARGV[i]) > tonumber(top) then top = ARGV[i]; raised = true end
end
if raised then redis.call('HSET', KEYS[1], 'seq', top) end
if cap > 0 then
  redis.call('LTRIM', KEYS[2], -cap, -1)
else
  redis.call('DEL', KEYS[2])
end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  local expires = redis.call('PEXPIRETIME', KEYS[1])
  if expires > 0 then redis.call('PEXPIREAT', KEYS[2], expires) end
end
return 1
""")

_TOUCH = Script("""
-- KEYS: meta, buf. ARGV: node, ttl_ms. 0: no live session; 2: another node's; 1: moved on.
local owner = redis.call('HGET', KEYS[1], 'node')
if not owner then return 0 end
if owner ~= ARGV[1] then return 2 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
""")

_FIRST_PUBLISH = Script("""
-- KEYS: pub. ARGV: publish key, window_ms, cap. 1: first seen (recorded); 0: duplicate.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window * 1000)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if cap <= 0 then return 1 end
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] and tonumber(newest[2]) >= now then now = tonumber(newest[2]) + 1 end
redis.call('ZADD', KEYS[1], 'NX', now, ARGV[1])
local n = redis.call('ZCARD', KEYS[1])
if n > cap then redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - cap - 1) end
redis.call('PEXPIRE', KEYS[1], window)
return 1
""")

_INDEX_TOUCH = Script("""
-- KEYS: index. ARGV: ttl_ms, session ids... Moves the expiry of listed entries
-- that exist (XX) to now + ttl, never earlier (GT).
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 'GT', expires, ARGV[i])
end
return 1
""")

_INDEX_ADD = Script("""
-- KEYS: index. ARGV: session id, ttl_ms. Expired entries go first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 1
""")

_INDEX_COUNT = Script("""
-- KEYS: index. The number of unexpired entries, after dropping the others.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
""")


class RedisSessionStore(RedisStore):
    """A ``SessionStore`` in Redis (see the module docstring for the layout)."""

    def __init__(self, link: Link, keys: Keys) -> None:
        super().__init__(link, "session")
        self._keys = keys

    async def save(self, snapshot: SessionSnapshot, ttl: float, *, take_over: bool = False) -> bool:
        """Store or replace ``snapshot`` for ``ttl`` seconds (millisecond precision).

        Returns False, changing nothing, when a live record belongs to another
        node and ``take_over`` is False (checked inside the script).

        Raises:
            ValueError: ``ttl`` is not positive.
            Unavailable: Redis is down.
        """
        ttl_ms = _ttl_ms(ttl)
        meta, buf = self._keys.session(snapshot.session_id)
        args: list[Any] = [
            ttl_ms,
            snapshot.user,
            snapshot.seq,
            snapshot.node,
            pack_strings(snapshot.subscriptions),
            pack_strings(snapshot.rooms),
            1 if take_over else 0,
            b"" if snapshot.receipts is None else pack_receipts(snapshot.receipts),
        ]
        args += [b"%d:" % seq + tail for seq, tail in snapshot.buffer]
        async with self._guard("save"):
            pipe = self._link.client.pipeline(transaction=False)
            _SAVE.queue(pipe, [meta, buf], args)
            # Queued whatever the save says: a refused save can only make the
            # index over-count, until the entry's expiry.
            _INDEX_ADD.queue(pipe, [self._keys.sessions_index], [snapshot.session_id, ttl_ms])
            saved, _ = await pipe.execute()
        return bool(saved)

    async def claim(self, session_id: str, user: str) -> SessionSnapshot | None:
        """Remove and return the session when it is live and ``user``'s (atomic).

        Raises:
            Unavailable: Redis is down, or the stored session is corrupt.
        """
        meta, buf = self._keys.session(session_id)
        async with self._guard("claim"):
            found = await _CLAIM(self._link.client, [meta, buf], [user])
            if not isinstance(found, list):
                return None
            await self._link.client.zrem(self._keys.sessions_index, session_id)
        seq, node, subs, rooms, entries, *rest = found
        receipts = rest[0] if rest else None
        try:
            buffer = tuple(_entry(raw) for raw in entries)
            return SessionSnapshot(
                session_id=session_id,
                user=user,
                subscriptions=unpack_strings(subs),
                rooms=unpack_strings(rooms),
                seq=int(seq),
                buffer=buffer,
                node=node.decode(),
                receipts=None if not receipts else unpack_receipts(receipts),
            )
        except (WireError, ValueError, TypeError, AttributeError) as exc:
            # Written by something else under our prefix: the session is lost.
            raise Unavailable(f"stored session {session_id!r} is corrupt") from exc

    async def append(self, session_id: str, seq: int, tail: bytes, cap: int) -> bool:
        """Add ``(seq, tail)`` to a live session's buffer, keeping the newest ``cap``.

        Raises:
            ValueError: ``cap`` is negative.
            Unavailable: Redis is down.
        """
        check_cap(cap)
        meta, buf = self._keys.session(session_id)
        async with self._guard("append"):
            done = await _APPEND(self._link.client, [meta, buf], [seq, b"%d:" % seq + tail, cap])
        return bool(done)

    async def mirror(
        self, node: str, ttl: float | None, cap: int, entries: Sequence[tuple[str, int, bytes]]
    ) -> tuple[set[str], set[str]]:
        """Append entries of sessions ``node`` owns, in one pipeline: one script
        call per session (on its slot), plus one index update when ``ttl`` moves
        the expiry.

        Raises:
            ValueError: ``cap`` is negative, or ``ttl`` is not positive.
            Unavailable: Redis is down.
        """
        check_cap(cap)
        ttl_ms = 0 if ttl is None else _ttl_ms(ttl)
        by_session: dict[str, list[Any]] = {}
        for session_id, seq, tail in entries:
            args = by_session.get(session_id)
            if args is None:
                args = by_session[session_id] = [node, ttl_ms, cap]
            args += (seq, b"%d:" % seq + tail)
        if not by_session:
            return set(), set()
        async with self._guard("mirror"):
            pipe = self._link.client.pipeline(transaction=False)
            for session_id, args in by_session.items():
                _MIRROR.queue(pipe, list(self._keys.session(session_id)), args)
            if ttl_ms:
                self._queue_index_touch(pipe, ttl_ms, by_session)
            results = await pipe.execute()
        return _verdicts(by_session, results)

    async def touch(
        self, node: str, ttl: float, session_ids: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """Move the expiry of sessions ``node`` owns, in one pipeline.

        Raises:
            ValueError: ``ttl`` is not positive.
            Unavailable: Redis is down.
        """
        ttl_ms = _ttl_ms(ttl)
        ids = list(dict.fromkeys(session_ids))
        if not ids:
            return set(), set()
        async with self._guard("touch"):
            pipe = self._link.client.pipeline(transaction=False)
            for session_id in ids:
                _TOUCH.queue(pipe, list(self._keys.session(session_id)), [node, ttl_ms])
            self._queue_index_touch(pipe, ttl_ms, ids)
            results = await pipe.execute()
        return _verdicts(ids, results)

    def _queue_index_touch(self, pipe: Any, ttl_ms: int, ids: Iterable[str]) -> None:
        _INDEX_TOUCH.queue(pipe, [self._keys.sessions_index], [ttl_ms, *ids])

    async def delete(self, session_id: str) -> None:
        """Forget the session, if any.

        Raises:
            Unavailable: Redis is down.
        """
        meta, buf = self._keys.session(session_id)
        async with self._guard("delete"):
            pipe = self._link.client.pipeline(transaction=False)
            pipe.delete(meta, buf)
            pipe.zrem(self._keys.sessions_index, session_id)
            await pipe.execute()

    async def first_publish(
        self, session_id: str, publish_id: str, window: float, cap: int
    ) -> bool:
        """True, recording it, unless ``publish_id`` was seen for the session
        within ``window`` seconds (millisecond precision); one script, atomic.

        Raises:
            ValueError: ``window`` is not positive, or ``cap`` is negative.
            Unavailable: Redis is down.
        """
        window_ms = max(1, round(check_window(window) * 1000))
        check_cap(cap)
        member = publish_key(publish_id).encode("utf-8", "surrogatepass")
        async with self._guard("first_publish"):
            first = await _FIRST_PUBLISH(
                self._link.client, [self._keys.publishes(session_id)], [member, window_ms, cap]
            )
        return bool(first)

    async def count(self) -> int:
        """Number of unexpired stored sessions (from the index).

        Raises:
            Unavailable: Redis is down.
        """
        async with self._guard("count"):
            return int(await _INDEX_COUNT(self._link.client, [self._keys.sessions_index], []))


def _ttl_ms(ttl: float) -> int:
    return max(1, round(check_ttl(ttl) * 1000))


def _verdicts(ids: Iterable[str], results: Sequence[Any]) -> tuple[set[str], set[str]]:
    """``(absent, moved)`` from the per-session script results (0, 2; 1 is done)."""
    absent: set[str] = set()
    moved: set[str] = set()
    for session_id, result in zip(ids, results, strict=False):
        if result == 0:
            absent.add(session_id)
        elif result == 2:
            moved.add(session_id)
    return absent, moved


def _entry(raw: bytes) -> tuple[int, bytes]:
    seq, sep, tail = raw.partition(b":")
    if not sep:
        raise WireError("buffer entry without a sequence number")
    return int(seq), tail
