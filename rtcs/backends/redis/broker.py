"""The Redis broker: envelopes over (sharded) pub/sub, at most once.

Publishing. ``publish`` encodes the envelope once (``wire.encode_envelope``)
and queues it; one flush task per burst sends the queue as one pipeline of
``PUBLISH`` (single server) or ``SPUBLISH`` (Cluster: the channel's slot picks
the master) commands, so envelopes leave in ``publish`` call order, several per
round trip. Each ``publish`` returns once its pipeline was acknowledged, or
raises ``Unavailable``.

Channels (``wire.Keys``). An envelope with a target goes to shard channel
``<prefix>:bus:<crc32(target) % shards>``; ``global`` and ``filter`` envelopes
go to ``<prefix>:bus:all``. For now every node subscribes to every shard:
interest-based subscription (a node listens only to the shards of the topics,
rooms, users and connections it holds) comes with the actor wiring, which must
tell the broker when the first local interest in a target appears and the
last one goes.

Reading. One reader task per broker owns the subscriber connections: one for a
single server (``SUBSCRIBE`` to every channel), one per master in Cluster mode
(``SSUBSCRIBE`` per channel on the master owning its slot; the reader keeps one
pending read per connection). It decodes each payload, drops this node's own
echoes and undecodable payloads (logged, never raised), and calls ``deliver``
on the event loop. Idle connections are pinged every ``ping_interval``; no
reply within ``command_timeout`` (a frozen Redis), a dropped connection, or a
slot moving away (``sunsubscribe`` from the server) makes the reader close
them all, mark the broker unhealthy and re-subscribe with exponential backoff
(``reconnect_backoff`` up to ``reconnect_backoff_max``). What is published
meanwhile is lost: pub/sub is at-most-once.

Why not redis-py's ``ClusterPubSub.ssubscribe`` / ``get_sharded_message``: it
polls the per-master connections one after the other, each with the read
timeout (a message on the third master waits for two timeouts, or the loop
spins with a zero timeout), and it reconnects inside reads, so neither a
dropped nor a frozen master would show in ``healthy()``. The subscriber here
speaks ``SSUBSCRIBE`` on plain redis-py connections built from the cluster's
own node settings; publishing does use redis-py's ``spublish``.

Order. Per origin, envelopes of one channel arrive in publish order (one
server connection, one ordered stream). Across channels they also arrive in
order from a single server (one subscriber connection); in Cluster mode,
channels on different masters are different connections, so two envelopes of
different targets may in principle overtake each other; envelopes of one
target never do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import Any

from redis.asyncio import RedisCluster

from rtcs.backends.base import DeliverFn, Envelope
from rtcs.backends.redis.client import Guard, Health, Link
from rtcs.backends.redis.wire import Keys, WireError, decode_envelope, encode_envelope
from rtcs.errors import Unavailable

_log = logging.getLogger("rtcs.backends.redis")

PUBLISH_BATCH = 512  # envelopes per pipeline at most


class _Stale(Exception):
    """The subscription must be rebuilt (no pong in time, or a slot moved)."""


class _Subscriber:
    """One subscriber connection and the channels it carries."""

    def __init__(self, conn: Any, channels: list[bytes], sharded: bool) -> None:
        self.conn = conn
        self.channels = channels
        self.sharded = sharded
        self.last_seen = 0.0
        self.ping_sent: float | None = None
        # Messages that arrived between two confirmations (one SSUBSCRIBE per
        # channel lets other clients' SPUBLISH interleave): served first.
        self.early: list[Any] = []

    async def open(self) -> None:
        """Connect and subscribe; returns once every subscription is confirmed."""
        await self.conn.connect()
        if self.sharded:
            # SSUBSCRIBE takes channels of one slot only: one command each.
            for channel in self.channels:
                await self.conn.send_command("SSUBSCRIBE", channel)
        else:
            await self.conn.send_command("SUBSCRIBE", *self.channels)
        confirmed = 0
        while confirmed < len(self.channels):
            reply = await self.conn.read_response()
            kind = reply[0] if isinstance(reply, list) and reply else None
            if kind in (b"subscribe", b"ssubscribe"):
                confirmed += 1
            elif kind in (b"message", b"smessage"):
                self.early.append(reply)
            else:
                raise _Stale(f"unexpected reply to a subscription: {reply!r:.80}")
        self.last_seen = asyncio.get_running_loop().time()

    async def keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Ping when idle for ``interval``; raise ``_Stale`` when a ping went unanswered."""
        if self.ping_sent is not None:
            if now - max(self.ping_sent, self.last_seen) > timeout:
                raise _Stale(f"no reply to PING within {timeout} s")
        elif now - self.last_seen >= interval:
            self.ping_sent = now
            await self.conn.send_command("PING")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.conn.disconnect(nowait=True)


class RedisBroker:
    """A ``Broker`` on Redis pub/sub (see the module docstring)."""

    distributed = True

    def __init__(self, link: Link, keys: Keys) -> None:
        self._link = link.acquire()
        self._keys = keys
        self._options = link.options
        self._sharded = link.cluster
        self._node = ""
        self._deliver: DeliverFn | None = None
        self._closed = False
        self._subscribed = False
        self._publish_health = Health("broker publish")
        self._subscribe_health = Health("broker subscriber")
        self._reader: asyncio.Task[None] | None = None
        self._subscribers: list[_Subscriber] = []  # the reader's live connections
        self._outbox: list[tuple[bytes, bytes, asyncio.Future[None]]] = []
        self._inflight: list[tuple[bytes, bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.dropped = 0  # undecodable payloads seen (each logged, sparsely)

    async def start(self, node_id: str, deliver: DeliverFn) -> None:
        """Subscribe as node ``node_id``; returns once the subscription is live.

        Raises:
            RuntimeError: already started or closed.
            Unavailable: Redis cannot be reached (the broker stays unstarted).
        """
        if self._deliver is not None or self._closed:
            raise RuntimeError("a broker can be started only once")
        self._node, self._deliver = node_id, deliver
        try:
            self._subscribers = await self._subscribe(refresh=False)
        except BaseException:
            self._node, self._deliver = "", None
            raise
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"rtcs-redis-broker-{node_id}"
        )

    async def publish(self, envelope: Envelope) -> None:
        """Send ``envelope`` to every other node (at most once), in call order.

        Raises:
            Unavailable: not started, closed, or Redis is down.
            ValueError: a field is too long for the wire format.
        """
        if self._deliver is None or self._closed:
            raise Unavailable("broker is not running")
        payload = encode_envelope(envelope)
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[None] = loop.create_future()
        self._outbox.append((self._keys.channel(envelope), payload, sent))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        await sent

    async def _flush(self) -> None:
        client = self._link.client
        try:
            while self._outbox and not self._closed:
                batch = self._inflight = self._outbox[:PUBLISH_BATCH]
                del self._outbox[:PUBLISH_BATCH]
                failure: BaseException | None = None
                try:
                    async with Guard(self._publish_health, self._options.deadline, "publish"):
                        pipe = client.pipeline(transaction=False)
                        for channel, payload, _ in batch:
                            if self._sharded:
                                pipe.spublish(channel, payload)
                            else:
                                pipe.publish(channel, payload)
                        await pipe.execute()
                except Unavailable as exc:
                    failure = exc
                except Exception as exc:  # a bug: fail the callers, keep the broker
                    _log.exception("broker publish failed unexpectedly")
                    failure = exc
                for _, _, sent in batch:
                    if sent.done():
                        continue  # the caller gave up (cancelled)
                    if failure is None:
                        sent.set_result(None)
                    else:
                        sent.set_exception(Unavailable("redis publish failed"))
                self._inflight = []
        finally:
            self._flusher = None
            self._fail_outbox()

    def _fail_outbox(self) -> None:
        # Closed: whatever is queued or was in flight when the flusher was
        # cancelled fails, so no publish() waits forever.
        if not self._closed:
            return
        pending = self._inflight + self._outbox
        self._inflight, self._outbox = [], []
        for _, _, sent in pending:
            if not sent.done():
                sent.set_exception(Unavailable("broker is closed"))

    async def close(self) -> None:
        """Stop the reader and release the connection; nothing is delivered afterwards.

        Publishes still queued fail with ``Unavailable``. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._subscribed = False
        for task in (self._reader, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # The reader may have been cancelled before it ever ran: close here too.
        await _close_all(self._subscribers)
        self._subscribers = []
        self._fail_outbox()
        await self._link.release()

    def healthy(self) -> bool:
        """True while started, not closed, subscribed, and the last publish went out."""
        return (
            self._deliver is not None
            and not self._closed
            and self._subscribed
            and self._publish_health.healthy
        )

    # -- subscription -------------------------------------------------------

    async def _subscribe(self, refresh: bool) -> list[_Subscriber]:
        """Open the subscriber connections; raises ``Unavailable`` when it cannot."""
        client = self._link.client
        channels = list(self._keys.all_channels())
        subscribers: list[_Subscriber] = []
        try:
            async with Guard(self._subscribe_health, self._options.deadline, "subscribe"):
                if isinstance(client, RedisCluster):
                    await client.initialize()
                    if refresh:  # a master may have moved or failed over
                        await client.nodes_manager.initialize()
                    groups: dict[tuple[str, int], list[bytes]] = {}
                    for channel in channels:
                        node = client.get_node_from_key(channel.decode())
                        if node is None:
                            raise Unavailable(f"no master serves channel {channel!r}")
                        groups.setdefault((node.host, int(node.port)), []).append(channel)
                    for (host, port), group in groups.items():
                        conn = self._link.make_connection(host, port)
                        subscribers.append(_Subscriber(conn, group, sharded=True))
                else:
                    conn = self._link.make_connection()
                    subscribers.append(_Subscriber(conn, channels, sharded=False))
                await asyncio.gather(*(s.open() for s in subscribers))
        except BaseException as exc:
            await _close_all(subscribers)
            if isinstance(exc, _Stale):
                raise Unavailable(f"redis subscribe failed: {exc}") from exc
            raise
        self._subscribed = True
        self._publish_health.ok()  # Redis answers again: publishing may go on
        return subscribers

    async def _read(self) -> None:
        """The reader task: serve, and re-subscribe with backoff when that fails."""
        options = self._options
        try:
            while True:
                try:
                    await self._serve(self._subscribers)
                except Exception as exc:  # _Stale, or any redis/socket error
                    self._subscribed = False
                    self._subscribe_health.failed("read", exc)
                await _close_all(self._subscribers)
                self._subscribers = []
                backoff = options.reconnect_backoff
                while not self._subscribers:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, options.reconnect_backoff_max)
                    with contextlib.suppress(Unavailable):
                        self._subscribers = await self._subscribe(refresh=True)
        finally:
            self._subscribed = False
            await _close_all(self._subscribers)

    async def _serve(self, subscribers: list[_Subscriber]) -> None:
        """Read and dispatch until a connection fails; never returns normally."""
        options = self._options
        tick = min(options.ping_interval, options.command_timeout) / 2
        loop = asyncio.get_running_loop()
        for sub in subscribers:
            early, sub.early = sub.early, []
            for reply in early:
                self._handle(sub, reply)
        if len(subscribers) == 1:
            (sub,) = subscribers
            while True:
                reply = await sub.conn.read_response(timeout=tick, disconnect_on_error=True)
                now = loop.time()
                if reply is not None:
                    sub.last_seen = now
                    self._handle(sub, reply)
                await sub.keepalive(now, options.ping_interval, options.command_timeout)
        # Several masters: one pending read per connection, awaited together.
        reads: dict[_Subscriber, asyncio.Future[Any]] = {}
        try:
            for sub in subscribers:
                reads[sub] = asyncio.ensure_future(sub.conn.read_response(timeout=math.inf))
            while True:
                done, _ = await asyncio.wait(
                    reads.values(), timeout=tick, return_when=asyncio.FIRST_COMPLETED
                )
                now = loop.time()
                for sub in subscribers:
                    if reads[sub] in done:
                        reply = reads[sub].result()
                        sub.last_seen = now
                        self._handle(sub, reply)
                        reads[sub] = asyncio.ensure_future(sub.conn.read_response(timeout=math.inf))
                    await sub.keepalive(now, options.ping_interval, options.command_timeout)
        finally:
            for read in reads.values():
                read.cancel()
            await asyncio.gather(*reads.values(), return_exceptions=True)

    def _handle(self, sub: _Subscriber, reply: Any) -> None:
        kind = reply[0] if isinstance(reply, list) and reply else None
        if kind in (b"message", b"smessage") and len(reply) == 3:
            self._receive(reply[2])
        elif kind == b"pong":
            sub.ping_sent = None
        elif kind in (b"sunsubscribe", b"unsubscribe"):
            raise _Stale(f"the server ended the subscription to {reply[1]!r}")
        elif kind not in (b"subscribe", b"ssubscribe"):
            _log.debug("ignoring an unexpected pub/sub reply of type %r", kind)

    def _receive(self, payload: Any) -> None:
        deliver = self._deliver
        if self._closed or deliver is None:
            return
        try:
            envelope = decode_envelope(payload)
        except (WireError, TypeError) as exc:
            self.dropped += 1
            if self.dropped & (self.dropped - 1) == 0:  # the 1st, 2nd, 4th, 8th...
                _log.warning(
                    "dropped an undecodable broker payload (%d bytes, %d so far): %s",
                    len(payload) if isinstance(payload, bytes) else -1,
                    self.dropped,
                    exc,
                )
            return
        if envelope.origin == self._node:
            return  # our own echo
        try:
            deliver(envelope)
        except Exception:
            _log.exception("broker deliver callback failed; envelope dropped")


async def _close_all(subscribers: list[_Subscriber]) -> None:
    for sub in subscribers:
        await sub.close()
