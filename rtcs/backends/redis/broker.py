"""The Redis broker: envelopes over (sharded) pub/sub, at most once.

Publishing. ``publish`` encodes the envelope once (``wire.encode_envelope``)
and queues it; one flush task per burst sends the queue as one pipeline of
``PUBLISH`` (single server) or ``SPUBLISH`` (Cluster: the channel's slot picks
the master) commands, so envelopes leave in ``publish`` call order, several per
round trip. Each ``publish`` returns once its pipeline was acknowledged, or
raises ``Unavailable``.

Channels (``wire.Keys``). A ``topic``, ``room`` or ``presence`` envelope goes
to shard channel ``<prefix>:bus:<crc32(shard_key) % shards>`` (the shard key
is a topic's first segment, a room's name: ``base.shard_key``); ``global`` and
``filter`` envelopes go to ``<prefix>:bus:all``; an envelope published with
``node=`` (direct messages to a user's or a connection's node) goes to that
node's channel ``<prefix>:node:{<node>}``.

Interest. A node subscribes to ``bus:all`` and its own node channel from
``start``, and to a shard channel only while something local listens to a
target on it: ``listen(kind, target)`` counts the interest per channel at
once (synchronously, so a caller's bookkeeping and the broker's never
diverge) and returns an awaitable that completes when the channel's
``SUBSCRIBE``/``SSUBSCRIBE`` is confirmed by Redis (a future the reader
resolves), so a publish made after it completes is received. When the reader
is not subscribed (Redis down), or no confirmation arrives within the
deadline, it raises ``Unavailable`` and the interest stays: the reader
subscribes to the *current* interest whenever it (re)subscribes.
``unlisten`` only decrements; the reader unsubscribes channels whose count is
zero on its next turn (within half a ping interval), so a quick
unlisten/listen of one target costs no round trip. ``reset(kind)`` withdraws
all interest of one kind (a restarted route handler listens again from
scratch).

Reading. One reader task per broker owns the subscriber connections, and is
the only task writing to them: one connection for a single server, one per
master in Cluster mode, opened at (re)subscription even when no channel of
that master is wanted yet, so a new channel never needs a new connection.
It keeps one pending read per connection plus a wake-up event (set by
``listen``), sends ``SUBSCRIBE``/``UNSUBSCRIBE`` (``SSUBSCRIBE``/
``SUNSUBSCRIBE`` on the master owning the channel's slot) to bring the
subscriptions to the interest, decodes each payload, drops this node's own
echoes and undecodable payloads (logged, never raised), and calls ``deliver``
on the event loop. Idle connections are pinged every ``ping_interval`` (a
connection with no subscription answers ``PONG``, one in subscribe mode
``[pong, ""]``: both count). No reply within ``command_timeout`` (a frozen
Redis), a dropped connection, an error reply (a slot moved: ``MOVED``), or an
``unsubscribe``/``sunsubscribe`` this reader did not ask for (the server ended
the subscription: a slot moved away) makes the reader close them all, mark
the broker unhealthy, fail the pending confirmations and re-subscribe with
exponential backoff (``reconnect_backoff`` up to ``reconnect_backoff_max``).
What is published meanwhile is lost: pub/sub is at-most-once.

Why not redis-py's ``ClusterPubSub.ssubscribe`` / ``get_sharded_message``: it
polls the per-master connections one after the other, each with the read
timeout (a message on the third master waits for two timeouts, or the loop
spins with a zero timeout), and it reconnects inside reads, so neither a
dropped nor a frozen master would show in ``healthy()``. The subscriber here
speaks ``SSUBSCRIBE`` on plain redis-py connections built from the cluster's
own node settings; publishing does use redis-py's ``spublish``.

Order. Per origin, envelopes of one channel arrive in publish order (one
server connection, one ordered stream): every envelope of one topic, one room
(messages and presence), or to one node. Across channels they also arrive in
order from a single server (one subscriber connection); in Cluster mode,
channels on different masters are different connections, so two envelopes of
different channels may in principle overtake each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Iterable
from typing import Any

from redis.asyncio import RedisCluster

from rtcs.backends.base import DeliverFn, Envelope, EnvelopeKind
from rtcs.backends.redis.client import Guard, Health, Link
from rtcs.backends.redis.wire import Keys, WireError, decode_envelope, encode_envelope
from rtcs.errors import Unavailable

_log = logging.getLogger("rtcs.backends.redis")

PUBLISH_BATCH = 512  # envelopes per pipeline at most
DRAIN_BATCH = 1024  # buffered replies handled per reader turn at most

Waiters = list["asyncio.Future[None]"]


class _Stale(Exception):
    """The subscription must be rebuilt (no pong in time, or a slot moved)."""


def _resolve(waiters: Iterable[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


def _fail(waiters: Iterable[asyncio.Future[None]], why: str) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_exception(Unavailable(why))


class _Subscriber:
    """One subscriber connection and the channels it carries.

    ``channels``: subscribed, or asked for, and not unsubscribed since.
    ``live``: of those, the ones whose latest subscribe was confirmed.
    ``confirming``: per channel, one entry per subscribe command sent and not
    yet confirmed (Redis confirms in order), holding who waits for it.
    ``leaving``: per channel, unsubscribe commands sent and not yet answered,
    so our own unsubscribes are not taken for the server ending one.
    """

    def __init__(self, conn: Any, address: tuple[str, int] | None, sharded: bool) -> None:
        self.conn = conn
        self.address = address
        self.sharded = sharded
        self.channels: set[bytes] = set()
        self.live: set[bytes] = set()
        self.confirming: dict[bytes, deque[Waiters]] = {}
        self.leaving: dict[bytes, int] = {}
        self.last_seen = 0.0
        self.ping_sent: float | None = None
        # Messages that arrived between two confirmations (one SSUBSCRIBE per
        # channel lets other clients' SPUBLISH interleave): served first.
        self.early: list[Any] = []

    async def open(self, channels: list[bytes]) -> None:
        """Connect and subscribe; returns once every subscription is confirmed."""
        await self.conn.connect()
        await self.add(channels, {})
        while self.confirming:
            reply = await self.conn.read_response()
            kind = reply[0] if isinstance(reply, list) and reply else None
            if kind in (b"subscribe", b"ssubscribe"):
                self.confirmed(reply[1])
            elif kind in (b"message", b"smessage"):
                self.early.append(reply)
            else:
                raise _Stale(f"unexpected reply to a subscription: {reply!r:.80}")
        self.last_seen = asyncio.get_running_loop().time()

    async def add(self, channels: list[bytes], waiters: dict[bytes, Waiters]) -> None:
        """Subscribe to ``channels``; their ``waiters`` wait for the confirmation."""
        if not channels:
            return
        for channel in channels:
            self.channels.add(channel)
            self.confirming.setdefault(channel, deque()).append(waiters.pop(channel, []))
        if self.sharded:
            # SSUBSCRIBE takes channels of one slot only: one command each.
            packed = self.conn.pack_commands([("SSUBSCRIBE", c) for c in channels])
            await self.conn.send_packed_command(packed)
        else:
            await self.conn.send_command("SUBSCRIBE", *channels)

    async def drop(self, channels: list[bytes]) -> None:
        """Unsubscribe from ``channels``."""
        if not channels:
            return
        for channel in channels:
            self.channels.discard(channel)
            self.live.discard(channel)
            self.leaving[channel] = self.leaving.get(channel, 0) + 1
        if self.sharded:
            packed = self.conn.pack_commands([("SUNSUBSCRIBE", c) for c in channels])
            await self.conn.send_packed_command(packed)
        else:
            await self.conn.send_command("UNSUBSCRIBE", *channels)

    def confirmed(self, channel: bytes) -> None:
        """Redis confirmed the oldest pending subscribe of ``channel``."""
        pending = self.confirming.get(channel)
        if not pending:
            return  # not ours to count: harmless
        waiters = pending.popleft()
        if not pending:
            del self.confirming[channel]
            if channel in self.channels:
                self.live.add(channel)
        _resolve(waiters)

    def ended(self, channel: bytes) -> bool:
        """An unsubscribe reply for ``channel``: True when we asked for it."""
        sent = self.leaving.get(channel, 0)
        if sent <= 0:
            return False
        if sent == 1:
            del self.leaving[channel]
        else:
            self.leaving[channel] = sent - 1
        return True

    def fail(self, why: str) -> None:
        """Fail everyone waiting on a confirmation from this connection."""
        for pending in self.confirming.values():
            for waiters in pending:
                _fail(waiters, why)
        self.confirming.clear()

    async def keepalive(self, now: float, interval: float, timeout: float) -> None:
        """Ping when idle for ``interval``; raise ``_Stale`` when a ping went unanswered."""
        if self.ping_sent is not None:
            if now - max(self.ping_sent, self.last_seen) > timeout:
                raise _Stale(f"no reply to PING within {timeout} s")
        elif now - self.last_seen >= interval:
            self.ping_sent = now
            await self.conn.send_command("PING")

    async def close(self) -> None:
        self.fail("the subscriber connection closed")
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
        # Interest: listen counts per (kind, target), and what they add up to
        # per channel; the channels every node keeps (bus:all, its node channel).
        self._targets: dict[tuple[EnvelopeKind, str], int] = {}
        self._wanted: dict[bytes, int] = {}
        self._fixed: tuple[bytes, ...] = ()
        self._waiters: dict[bytes, Waiters] = {}  # listens the reader has not sent yet
        self._dirty = False  # the interest changed since the reader last looked
        self._wake = asyncio.Event()
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
        self._fixed = (self._keys.global_channel, self._keys.node_channel(node_id))
        try:
            self._subscribers = await self._subscribe(refresh=False)
        except BaseException:
            self._node, self._deliver, self._fixed = "", None, ()
            raise
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"rtcs-redis-broker-{node_id}"
        )

    async def publish(self, envelope: Envelope, node: str | None = None) -> None:
        """Send ``envelope`` to the nodes listening for it (to ``node`` only, when
        given), at most once, in call order.

        Raises:
            Unavailable: not started, closed, or Redis is down.
            ValueError: a field is too long for the wire format.
        """
        if self._deliver is None or self._closed:
            raise Unavailable("broker is not running")
        payload = encode_envelope(envelope)
        channel = self._keys.channel(envelope) if node is None else self._keys.node_channel(node)
        loop = asyncio.get_running_loop()
        sent: asyncio.Future[None] = loop.create_future()
        self._outbox.append((channel, payload, sent))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush())
        await sent

    # -- interest ------------------------------------------------------------

    def listen(self, kind: EnvelopeKind, target: str) -> Awaitable[None]:
        """Count interest in ``kind``/``target`` now; await the result for it to be live.

        Raises (when awaited):
            Unavailable: not subscribed now (Redis down, not started, closed),
                or the subscription was not confirmed within the deadline; the
                interest stays recorded either way.
        """
        key = (kind, target)
        self._targets[key] = self._targets.get(key, 0) + 1
        channels = self._keys.interest(kind, target)
        for channel in channels:
            self._wanted[channel] = self._wanted.get(channel, 0) + 1
        return self._confirm(channels)

    def unlisten(self, kind: EnvelopeKind, target: str) -> None:
        """Withdraw one ``listen``; the reader unsubscribes unused channels lazily."""
        key = (kind, target)
        count = self._targets.get(key, 0)
        if count <= 0:
            return
        if count == 1:
            del self._targets[key]
        else:
            self._targets[key] = count - 1
        self._release(self._keys.interest(kind, target), 1)

    def reset(self, kind: EnvelopeKind) -> None:
        """Withdraw every interest of ``kind``."""
        for key in [key for key in self._targets if key[0] == kind]:
            self._release(self._keys.interest(*key), self._targets.pop(key))

    def _release(self, channels: tuple[bytes, ...], count: int) -> None:
        for channel in channels:
            left = self._wanted.get(channel, 0) - count
            if left > 0:
                self._wanted[channel] = left
            else:
                self._wanted.pop(channel, None)
        self._dirty = True  # no wake-up: unsubscribing can wait for the next turn

    def _desired(self) -> set[bytes]:
        return {*self._wanted, *self._fixed}

    async def _confirm(self, channels: tuple[bytes, ...]) -> None:
        if self._closed or self._deliver is None or not self._subscribed:
            raise Unavailable("broker is not subscribed; it will subscribe when Redis is back")
        loop = asyncio.get_running_loop()
        live = set().union(*(sub.live for sub in self._subscribers))
        waiting: Waiters = []
        for channel in channels:
            if channel not in live:
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.setdefault(channel, []).append(waiter)
                waiting.append(waiter)
        if not waiting:
            return
        self._dirty = True
        self._wake.set()
        try:
            async with asyncio.timeout(self._options.deadline):
                await asyncio.gather(*waiting)
        except TimeoutError as exc:
            raise Unavailable("redis did not confirm the subscription in time") from exc
        finally:
            for waiter in waiting:
                waiter.cancel()  # no-op once done

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
        self._fail_waiters()
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
        """Open the subscriber connections on the current interest.

        Raises:
            Unavailable: Redis cannot be reached or refused a subscription.
        """
        client = self._link.client
        subscribers: list[_Subscriber] = []
        groups: dict[_Subscriber, list[bytes]] = {}
        try:
            async with Guard(self._subscribe_health, self._options.deadline, "subscribe"):
                if isinstance(client, RedisCluster):
                    await client.initialize()
                    if refresh:  # a master may have moved or failed over
                        await client.nodes_manager.initialize()
                    # One connection per master from the start, wanted or not.
                    for node in client.get_primaries():
                        address = (node.host, int(node.port))
                        conn = self._link.make_connection(*address)
                        subscribers.append(_Subscriber(conn, address, sharded=True))
                else:
                    conn = self._link.make_connection()
                    subscribers.append(_Subscriber(conn, None, sharded=False))
                for channel in sorted(self._desired()):
                    groups.setdefault(self._owner(channel, subscribers), []).append(channel)
                await asyncio.gather(*(s.open(groups.get(s, [])) for s in subscribers))
        except BaseException as exc:
            await _close_all(subscribers)
            if isinstance(exc, _Stale):
                raise Unavailable(f"redis subscribe failed: {exc}") from exc
            raise
        self._subscribed = True
        self._dirty = True  # interest may have changed while subscribing
        self._publish_health.ok()  # Redis answers again: publishing may go on
        return subscribers

    def _owner(self, channel: bytes, subscribers: list[_Subscriber]) -> _Subscriber:
        """The subscriber whose server carries ``channel`` (its slot's master)."""
        client = self._link.client
        if not isinstance(client, RedisCluster):
            return subscribers[0]
        node = client.get_node_from_key(channel.decode())
        if node is not None:
            address = (node.host, int(node.port))
            for sub in subscribers:
                if sub.address == address:
                    return sub
        raise _Stale(f"no subscriber connection serves channel {channel!r}")

    async def _reconcile(self, subscribers: list[_Subscriber]) -> None:
        """Bring the subscriptions to the interest: subscribe, unsubscribe, answer waiters."""
        self._dirty = False
        desired = self._desired()
        adds: dict[_Subscriber, list[bytes]] = {}
        for channel in desired:
            sub = self._owner(channel, subscribers)
            if channel not in sub.channels:
                adds.setdefault(sub, []).append(channel)
                continue
            waiters = self._waiters.pop(channel, None)
            if waiters:
                pending = sub.confirming.get(channel)
                if pending:
                    pending[-1].extend(waiters)  # the latest subscribe answers them
                else:
                    _resolve(waiters)
        drops = {sub: [c for c in sub.channels if c not in desired] for sub in subscribers}
        for sub, channels in drops.items():
            await sub.drop(channels)
        for sub, channels in adds.items():
            await sub.add(channels, self._waiters)
        # Listens that came in while sending: the next turn handles them;
        # waiters of interest withdrawn meanwhile have nothing left to wait for.
        desired = self._desired()
        for channel in list(self._waiters):
            if channel in desired:
                self._dirty = True
            else:
                _resolve(self._waiters.pop(channel))

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
                self._fail_waiters()
                backoff = options.reconnect_backoff
                while not self._subscribers:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, options.reconnect_backoff_max)
                    with contextlib.suppress(Unavailable):
                        self._subscribers = await self._subscribe(refresh=True)
        finally:
            self._subscribed = False
            await _close_all(self._subscribers)
            self._fail_waiters()

    def _fail_waiters(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for pending in waiters.values():
            _fail(pending, "the broker lost its subscription")

    async def _serve(self, subscribers: list[_Subscriber]) -> None:
        """Read and dispatch until a connection fails; never returns normally.

        One pending read per connection and the wake-up event are awaited
        together; every command to the connections is sent from here.
        """
        options = self._options
        tick = min(options.ping_interval, options.command_timeout) / 2
        loop = asyncio.get_running_loop()
        wake = self._wake
        for sub in subscribers:
            early, sub.early = sub.early, []
            for reply in early:
                self._handle(sub, reply)
        reads: dict[_Subscriber, asyncio.Future[Any]] = {}
        woken: asyncio.Future[Any] | None = None
        try:
            for sub in subscribers:
                reads[sub] = asyncio.ensure_future(sub.conn.read_response(timeout=math.inf))
            while True:
                if self._dirty:
                    wake.clear()
                    await self._reconcile(subscribers)
                if woken is None or woken.done():
                    woken = asyncio.ensure_future(wake.wait())
                done, _ = await asyncio.wait(
                    [woken, *reads.values()], timeout=tick, return_when=asyncio.FIRST_COMPLETED
                )
                now = loop.time()
                for sub in subscribers:
                    if reads[sub] in done:
                        reply = reads[sub].result()
                        sub.last_seen = now
                        self._handle(sub, reply)
                        await self._drain(sub)
                        reads[sub] = asyncio.ensure_future(sub.conn.read_response(timeout=math.inf))
                    await sub.keepalive(now, options.ping_interval, options.command_timeout)
        finally:
            pending = [*reads.values(), *([woken] if woken is not None else [])]
            for future in pending:
                future.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _drain(self, sub: _Subscriber) -> None:
        """Handle the replies already received on ``sub`` before waiting again.

        One reply per turn of the wait above would fall behind under load (a
        busy event loop turns slowly): what is buffered is handled now, at
        most ``DRAIN_BATCH`` replies, each read bounded by the command timeout.
        """
        timeout = self._options.command_timeout
        for _ in range(DRAIN_BATCH):
            if not await sub.conn.can_read():
                return
            reply = await sub.conn.read_response(timeout=timeout)
            if reply is None:  # a partial reply did not complete in time
                return
            self._handle(sub, reply)

    def _handle(self, sub: _Subscriber, reply: Any) -> None:
        kind = reply[0] if isinstance(reply, list) and reply else None
        if kind in (b"message", b"smessage") and len(reply) == 3:
            self._receive(reply[2])
        elif kind == b"pong" or reply == b"PONG":  # in subscribe mode, or not
            sub.ping_sent = None
        elif kind in (b"subscribe", b"ssubscribe"):
            sub.confirmed(reply[1])
        elif kind in (b"sunsubscribe", b"unsubscribe"):
            if not sub.ended(reply[1]):
                raise _Stale(f"the server ended the subscription to {reply[1]!r}")
        else:
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
