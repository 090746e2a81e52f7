"""Presence in Redis: connections per user and per id, room members, tied to node liveness.

Keys (``wire.Keys``); the entity in braces is the Cluster hash tag:

- ``<prefix>:u:{<user>}:conns`` hash: connection id -> node.
- ``<prefix>:c:{<connection id>}:node`` string: the node holding that
  connection (``connection_node``), written and deleted with the user's hash
  entry in one pipeline.
- ``<prefix>:r:{<room>}:members`` hash: user -> JSON object ``{member: node}``
  (one field per user keeps ``join``/``leave`` O(members of that user), not
  O(room)).
- ``<prefix>:n:{<node>}:held`` set: what ``node`` holds (``wire.encode_entry``),
  so ``drop_node`` finds its entries without scanning.
- ``<prefix>:n:{<node>}:sweeper`` string: the live node sweeping this dead
  one (``SET NX PX node_ttl``), so dead nodes are swept once, not by all.
- ``<prefix>:nodes`` sorted set: node -> liveness deadline, in ms of that
  server's clock (``TIME`` inside a script, so no client clock is trusted).

Liveness. Every node that added a connection or a member through this store
is refreshed by a heartbeat task (every ``heartbeat_interval``: deadline =
now + ``node_ttl``); every write refreshes its node too. A node whose deadline
has passed is *dead*. Each call fetches the dead set in the same pipeline as
its data (one round trip), and counts only entries of nodes not in it, so a
crashed node's users drop out of every count within ``node_ttl`` of its last
heartbeat, with no sweep needed for correctness. The heartbeat task also
sweeps: it calls ``drop_node`` for every dead node, which deletes that node's
entries for good (checking each still names that node: the user's hash
entry and the connection's node key) and then removes the node from the
sorted set. ``connection_node`` follows the same rule: a connection whose
node is in the dead set is not found.

Why the dead set and not a Lua script that checks liveness: in Cluster mode a
script may only touch keys of one slot, and a user's or room's entries cannot
share a slot with every node key. Why not a periodic sweep alone: counts would
include a dead node's users until the next sweep, i.e. up to ``node_ttl`` plus
a sweep interval. Fetching the (usually empty) dead set alongside costs no
extra round trip.

Atomicity. ``join`` and ``leave`` are one Lua script on the room's slot each,
returning the nodes of the user's members before the change, so "first live
member" / "last live member" is decided on one consistent read; connection
updates are plain commands (the user's hash field, the connection's node key)
in one pipeline. The ``held`` set is on the node's slot and is updated in the
same pipeline (additions) or right after (removals); it may hold stale
entries, which ``drop_node`` skips.

Cost: every call reads (and every write refreshes) ``<prefix>:nodes``, one
small sorted set on one master; a ``drop_node`` takes two round trips per
``DROP_BATCH`` entries of the dead node.

A node that stalls past ``node_ttl`` and comes back is live again (its
heartbeat re-registers it); entries already swept are gone and are not
restored by this store (logged at warning level).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, cast

from rtcs.backends.redis.client import Link, RedisStore, Script
from rtcs.backends.redis.wire import (
    ConnectionEntry,
    Keys,
    MemberEntry,
    WireError,
    decode_entry,
    encode_entry,
)
from rtcs.errors import Unavailable

_log = logging.getLogger("rtcs.backends.redis")

DROP_BATCH = 256  # entries of a dead node removed per round trip

_TOUCH = Script("""
-- KEYS: nodes. ARGV: node ('' for none), ttl_ms.
-- Refreshes node; returns {1 if node had lapsed (deadline passed) else 0, dead...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lapsed = 0
if ARGV[1] ~= '' then
  local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
  if prev and tonumber(prev) <= now then lapsed = 1 end
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
table.insert(dead, 1, lapsed)
return dead
""")

_FORGET_NODE = Script("""
-- KEYS: nodes. ARGV: node. Remove it unless it is live again.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= now then redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
""")

_JOIN = Script("""
-- KEYS: room. ARGV: user, member, node. Returns the nodes of the user's members before.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local members = {}
if raw then members = cjson.decode(raw) end
local before = {}
for _, node in pairs(members) do table.insert(before, node) end
members[ARGV[2]] = ARGV[3]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(members))
return before
""")

_LEAVE = Script("""
-- KEYS: room. ARGV: user, member, node ('' for any).
-- nil: member absent (or held by another node); else {its node, nodes of the rest...}.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return nil end
local members = cjson.decode(raw)
local node = members[ARGV[2]]
if not node or (ARGV[3] ~= '' and node ~= ARGV[3]) then return nil end
members[ARGV[2]] = nil
local result = {node}
for _, other in pairs(members) do table.insert(result, other) end
if #result == 1 then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(members))
end
return result
""")

_DROP_CONNECTION = Script("""
-- KEYS: user conns. ARGV: connection id, node. Delete only if still held by node.
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
""")

_DROP_CONNECTION_NODE = Script("""
-- KEYS: connection node. ARGV: node. Delete only if it still names node.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
""")


class RedisPresenceStore(RedisStore):
    """A ``PresenceStore`` in Redis (see the module docstring).

    Obligations: used on one event loop; ``aclose()`` stops the heartbeat
    task. Closing without ``drop_node`` is what a crash looks like to the other
    nodes: this node's entries stop counting ``node_ttl`` later.
    """

    def __init__(self, link: Link, keys: Keys) -> None:
        super().__init__(link, "presence")
        self._keys = keys
        options = link.options
        self._ttl_ms = max(1, round(options.node_ttl * 1000))
        self._interval = options.heartbeat_interval
        self._nodes: set[str] = set()  # nodes this store keeps alive
        self._heartbeat: asyncio.Task[None] | None = None

    def _pipeline(self, node: str = "") -> Any:
        """A pipeline whose first command refreshes ``node`` and returns the dead set."""
        pipe = self._link.client.pipeline(transaction=False)
        _TOUCH.queue(pipe, [self._keys.nodes], [node, self._ttl_ms])
        return pipe

    def _keep_alive(self, node: str) -> None:
        self._nodes.add(node)
        if self._heartbeat is None and not self._closed:
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._beat(), name="rtcs-redis-presence-heartbeat"
            )

    async def add_connection(self, user: str, connection_id: str, node: str) -> int:
        """Record a connection of ``user`` on ``node``; returns the user's live count.

        Raises:
            Unavailable: Redis is down.
        """
        self._keep_alive(node)
        key = self._keys.user_connections(user)
        async with self._guard("add_connection"):
            pipe = self._pipeline(node)
            pipe.sadd(
                self._keys.node_entries(node), encode_entry(ConnectionEntry(user, connection_id))
            )
            pipe.hset(key, connection_id, node)
            pipe.set(self._keys.connection_node(connection_id), node)
            pipe.hvals(key)
            touched, _, _, _, nodes = await pipe.execute()
        return _live_count(nodes, _dead(touched))

    async def remove_connection(self, user: str, connection_id: str) -> int:
        """Forget a connection; returns the user's remaining live count.

        Raises:
            Unavailable: Redis is down.
        """
        key = self._keys.user_connections(user)
        async with self._guard("remove_connection"):
            pipe = self._pipeline()
            pipe.hget(key, connection_id)
            pipe.hdel(key, connection_id)
            pipe.delete(self._keys.connection_node(connection_id))
            pipe.hvals(key)
            touched, node, removed, _, nodes = await pipe.execute()
            if removed and node is not None:
                entry = encode_entry(ConnectionEntry(user, connection_id))
                await self._link.client.srem(self._keys.node_entries(node.decode()), entry)
        return _live_count(nodes, _dead(touched))

    async def user_connections(self, user: str) -> int:
        """Number of live connections of ``user`` on every live node.

        Raises:
            Unavailable: Redis is down.
        """
        return len(await self._live_connection_nodes(user, "user_connections"))

    async def user_nodes(self, user: str) -> list[str]:
        """Sorted ids of the live nodes holding a connection of ``user``.

        Raises:
            Unavailable: Redis is down.
        """
        nodes = await self._live_connection_nodes(user, "user_nodes")
        return sorted({node.decode() for node in nodes})

    async def _live_connection_nodes(self, user: str, what: str) -> list[bytes]:
        """The node of each of ``user``'s connections, leaving out dead nodes (one round trip)."""
        async with self._guard(what):
            pipe = self._pipeline()
            pipe.hvals(self._keys.user_connections(user))
            touched, nodes = await pipe.execute()
        dead = _dead(touched)
        return [cast(bytes, node) for node in nodes if node not in dead]

    async def connection_node(self, connection_id: str) -> str | None:
        """The node holding ``connection_id``, or None (also when that node is dead).

        Raises:
            Unavailable: Redis is down.
        """
        async with self._guard("connection_node"):
            pipe = self._pipeline()
            pipe.get(self._keys.connection_node(connection_id))
            touched, node = await pipe.execute()
        if node is None or node in _dead(touched):
            return None
        return cast(bytes, node).decode()

    async def join(self, room: str, user: str, member: str, node: str) -> bool:
        """Add ``member`` of ``user`` to ``room``; True when ``user`` was not present.

        Raises:
            Unavailable: Redis is down.
        """
        self._keep_alive(node)
        async with self._guard("join"):
            pipe = self._pipeline(node)
            pipe.sadd(self._keys.node_entries(node), encode_entry(MemberEntry(room, user, member)))
            _JOIN.queue(pipe, [self._keys.room_members(room)], [user, member, node])
            touched, _, before = await pipe.execute()
        return _live_count(before, _dead(touched)) == 0

    async def leave(self, room: str, user: str, member: str) -> bool:
        """Remove ``member``; True when it was the last live member of ``user``.

        Raises:
            Unavailable: Redis is down.
        """
        async with self._guard("leave"):
            pipe = self._pipeline()
            _LEAVE.queue(pipe, [self._keys.room_members(room)], [user, member, ""])
            touched, found = await pipe.execute()
            if found is None:
                return False
            node, rest = found[0], found[1:]
            entry = encode_entry(MemberEntry(room, user, member))
            await self._link.client.srem(self._keys.node_entries(node.decode()), entry)
        dead = _dead(touched)
        return node not in dead and _live_count(rest, dead) == 0

    async def members(self, room: str) -> list[str]:
        """Sorted ids of the users with a live member in ``room``.

        Raises:
            Unavailable: Redis is down, or the room's data is corrupt.
        """
        async with self._guard("members"):
            pipe = self._pipeline()
            pipe.hgetall(self._keys.room_members(room))
            touched, users = await pipe.execute()
        dead = _dead(touched)
        present = []
        try:
            for user, raw in users.items():
                if any(node.encode() not in dead for node in json.loads(raw).values()):
                    present.append(user.decode())
        except (ValueError, AttributeError) as exc:
            raise Unavailable(f"presence of room {room!r} is corrupt") from exc
        present.sort()
        return present

    async def drop_node(self, node: str) -> None:
        """Forget every connection and room member ``node`` held, at once.

        The node is first marked dead (every count excludes it from then on),
        then its entries are deleted in batches, then it is forgotten.

        Raises:
            Unavailable: Redis is down (the node stays marked dead; the
                heartbeat sweep of any node finishes the job later).
        """
        self._nodes.discard(node)
        held = self._keys.node_entries(node)
        client = self._link.client
        async with self._guard("drop_node"):
            await client.zadd(self._keys.nodes, {node: 0})
        while True:  # one deadline per batch: a big node takes many round trips
            async with self._guard("drop_node"):
                batch = cast(list[bytes], await client.srandmember(held, DROP_BATCH))
                if not batch:
                    break
                pipe = client.pipeline(transaction=False)
                for raw in batch:
                    self._queue_drop(pipe, raw, node)
                pipe.srem(held, *batch)
                await pipe.execute()
        async with self._guard("drop_node"):
            await _FORGET_NODE(client, [self._keys.nodes], [node])
            await client.delete(self._keys.node_sweeper(node))

    def _queue_drop(self, pipe: Any, raw: bytes, node: str) -> None:
        try:
            entry = decode_entry(raw)
        except WireError:
            _log.warning("dropping a corrupt presence entry of node %r", node)
            return
        if isinstance(entry, ConnectionEntry):
            key = self._keys.user_connections(entry.user)
            _DROP_CONNECTION.queue(pipe, [key], [entry.connection_id, node])
            connection = self._keys.connection_node(entry.connection_id)
            _DROP_CONNECTION_NODE.queue(pipe, [connection], [node])
        else:
            key = self._keys.room_members(entry.room)
            _LEAVE.queue(pipe, [key], [entry.user, entry.member, node])

    async def _beat(self) -> None:
        """Heartbeat: refresh this store's nodes, then sweep dead ones."""
        while not self._closed:
            await asyncio.sleep(self._interval)
            try:
                await self.heartbeat()
            except Unavailable:
                pass  # Health logged it; the next beat tries again
            except Exception:
                _log.exception("presence heartbeat failed")

    async def heartbeat(self) -> list[str]:
        """One heartbeat now: refresh the kept-alive nodes and sweep the dead ones.

        Returns the nodes it swept. Called by the heartbeat task; public so a
        test or an operator command can force one.

        Raises:
            Unavailable: Redis is down.
        """
        nodes = sorted(self._nodes)
        async with self._guard("heartbeat"):
            pipe = self._pipeline()
            for node in nodes:
                _TOUCH.queue(pipe, [self._keys.nodes], [node, self._ttl_ms])
            replies = await pipe.execute()
        for node, reply in zip(nodes, replies[1:], strict=True):
            if reply[0]:
                _log.warning(
                    "node %r missed its presence deadline; entries swept meanwhile are lost", node
                )
        swept = []
        for raw in sorted(_dead(replies[-1])):
            name = raw.decode(errors="replace")
            if name in self._nodes:
                continue
            # One sweeper per dead node at a time; the claim lapses with node_ttl
            # should that sweeper die too.
            async with self._guard("heartbeat"):
                mine = await self._link.client.set(
                    self._keys.node_sweeper(name), 1, nx=True, px=self._ttl_ms
                )
            if mine:
                await self.drop_node(name)
                swept.append(name)
        return swept

    async def aclose(self) -> None:
        """Stop the heartbeat and release the shared connection. Idempotent.

        This node's entries stay (they stop counting once its deadline passes);
        call ``drop_node`` first for a clean shutdown.
        """
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await self._link.release()


def _dead(touched: list[Any]) -> set[bytes]:
    # _TOUCH reply: {lapsed, dead node...}
    return set(touched[1:])


def _live_count(nodes: list[Any], dead: set[bytes]) -> int:
    return sum(1 for node in nodes if node not in dead)
