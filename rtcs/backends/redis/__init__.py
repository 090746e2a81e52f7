"""Redis backends (``backend.kind = "redis"``): scale-out across nodes.

``redis_backends(url, ...)`` builds one node's broker, session store and
presence store on one shared redis-py asyncio client (hiredis parser). Every
call fails with ``rtcs.errors.Unavailable`` within about the command timeout
when Redis is down or frozen (``client`` module docstring).

Modules:

- ``wire``      pure: the envelope encoding, channel and key names
- ``client``    the shared connection, timeouts, error mapping, Lua scripts
- ``broker``    ``RedisBroker``: (sharded) pub/sub, one reader task
- ``sessions``  ``RedisSessionStore``: one hash + one list per session, Lua
- ``presence``  ``RedisPresenceStore``: per-user and per-room hashes, node
                liveness by heartbeat

``redis`` is imported only under this package.
"""

from __future__ import annotations

from rtcs.backends.base import Backends
from rtcs.backends.redis.broker import RedisBroker
from rtcs.backends.redis.client import Link, Options
from rtcs.backends.redis.presence import RedisPresenceStore
from rtcs.backends.redis.revocations import RedisRevocationStore
from rtcs.backends.redis.sessions import RedisSessionStore
from rtcs.backends.redis.wire import Keys

__all__ = [
    "RedisBroker",
    "RedisPresenceStore",
    "RedisSessionStore",
    "close_backends",
    "redis_backends",
]


def redis_backends(
    url: str,
    *,
    prefix: str = "rtcs",
    shards: int = 16,
    command_timeout: float = 0.5,
    connect_timeout: float = 0.5,
    pool_size: int = 32,
    heartbeat_interval: float = 10.0,
    node_ttl: float = 30.0,
    cluster: bool | None = None,
    ping_interval: float = 1.0,
    reconnect_backoff: float = 0.1,
    reconnect_backoff_max: float = 2.0,
) -> Backends:
    """Build one node's Redis backends; nothing connects until first use.

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://`` for TLS,
            ``unix://`` for a socket; ``redis+cluster://host:port`` (or
            ``rediss+cluster://``) names one seed node of a Redis Cluster.
        prefix: first part of every key and channel name, so deployments can
            share a Redis; no braces (they would become the Cluster hash tag).
        shards: number of pub/sub channels topics and rooms hash onto
            (``crc32(shard_key) % shards``: a topic's first segment, a room's
            name); a node subscribes only to those it listens to.
            ``global``/``filter`` use one more channel, direct messages each
            node's own channel.
        command_timeout: seconds a command may take (socket timeout); a call
            against a frozen Redis fails after about this long.
        connect_timeout: seconds to establish a connection.
        pool_size: connections per server (per master in Cluster mode); a call
            waits up to ``command_timeout`` for a free one.
        heartbeat_interval: seconds between presence heartbeats of this node.
        node_ttl: seconds after its last heartbeat that a silent node's
            connections and room members stop counting (must exceed
            ``heartbeat_interval``).
        cluster: Cluster mode. None (default) decides from the URL scheme
            (``redis+cluster://`` / ``rediss+cluster://``); True forces it for
            a plain ``redis://`` seed URL. Cluster mode uses sharded pub/sub
            (``SPUBLISH``/``SSUBSCRIBE``).
        ping_interval: seconds of silence after which the subscriber pings
            Redis; no answer within ``command_timeout`` means re-subscribing.
        reconnect_backoff: first pause, in seconds, before re-subscribing;
            doubled per failed attempt up to ``reconnect_backoff_max``.
        reconnect_backoff_max: the longest pause between re-subscribe attempts.

    Close the parts with ``close_backends`` (or ``broker.close()`` and the
    stores' ``aclose()``); the shared client closes with the last one.

    Raises:
        ValueError: an option is out of range or the URL is not a Redis URL;
            the message names it.
    """
    options = Options(
        prefix=prefix,
        shards=shards,
        command_timeout=command_timeout,
        connect_timeout=connect_timeout,
        pool_size=pool_size,
        heartbeat_interval=heartbeat_interval,
        node_ttl=node_ttl,
        ping_interval=ping_interval,
        reconnect_backoff=reconnect_backoff,
        reconnect_backoff_max=reconnect_backoff_max,
    )
    keys = Keys(prefix, shards)
    link = Link(url, options, cluster)
    return Backends(
        broker=RedisBroker(link, keys),
        sessions=RedisSessionStore(link, keys),
        presence=RedisPresenceStore(link, keys),
        revocations=RedisRevocationStore(link, keys),
    )


async def close_backends(backends: Backends) -> None:
    """Close what ``redis_backends`` built: the broker, then both stores.

    Presence entries of this node are not removed (call
    ``backends.presence.drop_node(node)`` first for a clean shutdown).
    """
    await backends.broker.close()
    for store in (backends.sessions, backends.presence, backends.revocations):
        if isinstance(store, RedisSessionStore | RedisPresenceStore | RedisRevocationStore):
            await store.aclose()
