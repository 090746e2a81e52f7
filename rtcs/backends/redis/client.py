"""The connection to Redis shared by one node's backends, and its failure rules.

One ``Link`` per node holds one redis-py asyncio client: ``Redis`` over a
``BlockingConnectionPool`` for a single server, or ``RedisCluster`` (one pool
per master) for a Cluster. The broker, the session store and the presence
store share it; the last one to close it closes the client.

Failure rules, the same for every call (docs/architecture.md, "Library
behaviour": redis-py's default retry turns one call against a frozen Redis
into 9.6 s):

- retries are pinned to none (``Retry(NoBackoff(), 0)``), on the client and on
  every connection;
- ``socket_timeout`` is the command timeout and ``socket_connect_timeout`` the
  connect timeout, so a dead Redis fails at once (connection refused) and a
  frozen one after about one command timeout;
- ``Guard`` wraps every call in a backstop deadline (command timeout plus
  connect timeout) and turns any redis, socket or timeout error into
  ``rtcs.errors.Unavailable``: no raw redis exception and no hang escapes a
  backend. ``Health`` remembers the last outcome for ``healthy()``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from rtcs.errors import Unavailable

_log = logging.getLogger("rtcs.backends.redis")

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

Client = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class Options:
    """The tunables of the Redis backends; ``redis_backends`` documents each one.

    Raises (constructor):
        ValueError: a value is out of range; the message names the option.
    """

    prefix: str = "rtcs"
    shards: int = 16
    command_timeout: float = 0.5
    connect_timeout: float = 0.5
    pool_size: int = 32
    heartbeat_interval: float = 10.0
    node_ttl: float = 30.0
    ping_interval: float = 1.0
    reconnect_backoff: float = 0.1
    reconnect_backoff_max: float = 2.0

    def __post_init__(self) -> None:
        positive = (
            "command_timeout",
            "connect_timeout",
            "heartbeat_interval",
            "node_ttl",
            "ping_interval",
            "reconnect_backoff",
            "reconnect_backoff_max",
        )
        for name in positive:
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"redis option {name} must be positive, got {value!r}")
        for name in ("shards", "pool_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"redis option {name} must be an integer >= 1, got {value!r}")
        if self.node_ttl <= self.heartbeat_interval:
            raise ValueError(
                f"redis option node_ttl ({self.node_ttl!r}) must exceed "
                f"heartbeat_interval ({self.heartbeat_interval!r})"
            )
        if self.reconnect_backoff_max < self.reconnect_backoff:
            raise ValueError("redis option reconnect_backoff_max must be >= reconnect_backoff")

    @property
    def deadline(self) -> float:
        """Seconds after which ``Guard`` gives up on a call, whatever redis-py does."""
        return self.command_timeout + self.connect_timeout


def split_url(url: str, cluster: bool | None) -> tuple[str, bool]:
    """The URL redis-py understands, and whether it names a Cluster.

    ``redis+cluster://`` and ``rediss+cluster://`` mean Cluster mode (the
    scheme is rewritten to ``redis://`` / ``rediss://``); ``cluster=True``
    forces it for a plain URL.

    Raises:
        ValueError: an unsupported scheme, or ``cluster=False`` with a cluster URL.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in CLUSTER_SCHEMES:
        if cluster is False:
            raise ValueError(f"{scheme}:// is a Cluster URL but cluster=False was given")
        return urlunsplit(parts._replace(scheme=CLUSTER_SCHEMES[scheme])), True
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"unsupported Redis URL scheme {parts.scheme!r}")
    return url, bool(cluster)


class Link:
    """One node's redis-py client, shared by its backends (reference-counted)."""

    def __init__(self, url: str, options: Options, cluster: bool | None = None) -> None:
        plain_url, self.cluster = split_url(url, cluster)
        self.options = options
        common: dict[str, Any] = {
            "socket_timeout": options.command_timeout,
            "socket_connect_timeout": options.connect_timeout,
            "socket_keepalive": True,
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,  # tails are bytes
            "health_check_interval": 0,
            # RESP2: pub/sub messages are plain replies (no push handler), and
            # no maintenance-notification handshake per connection.
            "protocol": 2,
        }
        self.client: Client
        if self.cluster:
            self.client = RedisCluster.from_url(
                plain_url, max_connections=options.pool_size, **common
            )
        else:
            pool = BlockingConnectionPool.from_url(
                plain_url,
                max_connections=options.pool_size,
                timeout=options.command_timeout,  # wait for a free connection at most this
                **common,
            )
            self.client = Redis(connection_pool=pool)
        self._users = 0
        self._closed = False

    def acquire(self) -> Link:
        """Count one more user; each must call ``release`` once."""
        self._users += 1
        return self

    async def release(self) -> None:
        """One user is done; the last one closes the client."""
        self._users -= 1
        if self._users <= 0 and not self._closed:
            self._closed = True
            try:
                if isinstance(self.client, Redis):
                    # The pool was passed in, so redis-py would leave it open.
                    await self.client.aclose(close_connection_pool=True)
                else:
                    await self.client.aclose()
            except (RedisError, OSError) as exc:
                _log.debug("closing the redis client failed: %s", type(exc).__name__)

    def make_connection(self, host: str | None = None, port: int | None = None) -> Any:
        """A new connection outside the pools, for a subscriber.

        For a single server it has the pool's settings; in Cluster mode it goes
        to the master ``host:port`` with the cluster's settings.
        """
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node(host=host, port=port)
            if node is None:
                raise Unavailable(f"redis cluster node {host}:{port} is unknown")
            return node.connection_class(**node.connection_kwargs)
        pool = self.client.connection_pool
        return pool.connection_class(**pool.connection_kwargs)


class Health:
    """Whether the last Redis call of one backend succeeded; logs the changes.

    Starts healthy (nothing has failed yet). A failure after a success is
    logged at warning level, further failures at debug level, and the
    recovery at info level, so an outage logs two lines, not one per call.
    """

    __slots__ = ("healthy", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.healthy = True

    def ok(self) -> None:
        if not self.healthy:
            self.healthy = True
            _log.info("redis %s: reachable again", self.name)

    def failed(self, what: str, exc: BaseException) -> None:
        level = logging.WARNING if self.healthy else logging.DEBUG
        self.healthy = False
        _log.log(level, "redis %s %s failed: %s: %s", self.name, what, type(exc).__name__, exc)


class Guard:
    """``async with Guard(health, deadline, "what"):`` around every Redis call.

    Turns redis errors, socket errors and the backstop ``deadline`` into
    ``Unavailable`` and records the outcome in ``health``.
    """

    __slots__ = ("_health", "_timeout", "_what")

    def __init__(self, health: Health, deadline: float, what: str) -> None:
        self._health = health
        self._what = what
        self._timeout = asyncio.timeout(deadline)

    async def __aenter__(self) -> None:
        await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as expired:
            exc = expired
        if exc is None:
            self._health.ok()
        elif isinstance(exc, RedisError | OSError | TimeoutError):
            self._health.failed(self._what, exc)
            raise Unavailable(f"redis {self._what} failed") from exc


class RedisStore:
    """What every Redis store shares: its use of the link, its health, closing.

    ``what`` names the store in log lines and in the ``Unavailable`` raised
    once it is closed. Every call runs inside ``self._guard("call")``.
    """

    def __init__(self, link: Link, what: str) -> None:
        self._link = link.acquire()
        self._deadline = link.options.deadline
        self._health = Health(what)
        self._what = what
        self._closed = False

    def _guard(self, call: str) -> Guard:
        if self._closed:
            raise Unavailable(f"{self._what} store is closed")
        return Guard(self._health, self._deadline, call)

    def healthy(self) -> bool:
        """True unless closed or the last call failed."""
        return self._health.healthy and not self._closed

    async def aclose(self) -> None:
        """Release the shared connection; later calls raise ``Unavailable``. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._link.release()


class Script:
    """A Lua script run by SHA, loaded on demand (a restarted Redis forgets scripts)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Client, keys: list[str], args: list[Any]) -> Any:
        """Run on ``client``: EVALSHA, and EVAL when the server lacks the script."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # EVAL runs it and caches it under the same SHA for next time.
            return await client.eval(self.source, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: list[str], args: list[Any]) -> None:
        """Queue on a pipeline. EVAL (not EVALSHA): a pipeline cannot reload a
        missing script halfway, and the source is a few hundred bytes."""
        pipe.eval(self.source, len(keys), *keys, *args)
