"""What only the Redis backends promise, beyond the shared contract.

Failure behaviour on a real redis-server: a frozen server (SIGSTOP) or a dead
one makes calls fail with ``Unavailable`` within about the command timeout; a
killed and restarted server is re-subscribed to on its own; garbage on a
channel is dropped; a crashed node's presence entries stop counting within the
node TTL and are then swept. Tests that freeze, kill or restart a server use
their own (module-scoped) server, never the shared one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis, RedisCluster

from rtcs.backends.base import Backends, Envelope, EnvelopeKind, SessionSnapshot
from rtcs.backends.redis import (
    RedisBroker,
    RedisPresenceStore,
    close_backends,
    redis_backends,
)
from rtcs.backends.redis.client import split_url
from rtcs.backends.redis.wire import Keys
from rtcs.errors import Unavailable
from tests.contract.conftest import Inbox
from tests.support import redis_server as servers
from tests.support.redis_server import RedisClusterServers, RedisServer, free_port
from tests.support.waiting import wait_until, wait_until_returns

pytestmark = pytest.mark.redis

# The shared server and cluster (not to be frozen or killed), as fixtures here.
redis_server = servers.redis_server
redis_cluster = servers.redis_cluster

COMMAND_TIMEOUT = 0.5  # the default; a frozen call must fail within about this
FROZEN_LIMIT = 1.0  # "about": the brief's bound, with slack for a slow machine
FAST: dict[str, Any] = {  # quick failure detection, so these tests stay short
    "ping_interval": 0.2,
    "reconnect_backoff": 0.05,
    "reconnect_backoff_max": 0.2,
}


def snap(session_id: str = "s-1") -> SessionSnapshot:
    return SessionSnapshot(session_id, "alice", ("news.*",), ("lobby",), 1, ((1, b"x"),), "n1")


def env(origin: str, tail: bytes = b"1", target: str = "news.sport") -> Envelope:
    return Envelope(origin=origin, kind="topic", target=target, tail=tail)


@pytest.fixture(scope="module")
def own_server() -> Iterator[RedisServer]:
    """A server of this module alone: tests freeze, kill and restart it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def server(own_server: RedisServer) -> RedisServer:
    if own_server._proc is None:  # a failed test left it killed
        own_server.restart()
    own_server.flush()
    return own_server


class Nodes:
    """Backends built in one test, all closed at its end."""

    def __init__(self) -> None:
        self.built: list[Backends] = []

    def __call__(self, url: str, **options: Any) -> Backends:
        backends = redis_backends(url, **options)
        self.built.append(backends)
        return backends

    async def start(
        self,
        url: str,
        node_id: str,
        *,
        interest: tuple[tuple[EnvelopeKind, str], ...] = (("topic", "news.>"),),
        **options: Any,
    ) -> tuple[RedisBroker, Inbox]:
        """A started broker listening to ``interest`` (confirmed), and its inbox."""
        broker = self(url, **options).broker
        assert isinstance(broker, RedisBroker)
        inbox = Inbox()
        await broker.start(node_id, inbox)
        for kind, target in interest:
            await broker.listen(kind, target)
        return broker, inbox


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    made = Nodes()
    yield made
    for backends in made.built:
        await close_backends(backends)


async def fails_fast(call: Awaitable[object]) -> float:
    """Await ``call``; assert it raised ``Unavailable``; return how long it took."""
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await call
    return time.monotonic() - started


# -- a frozen or dead Redis ----------------------------------------------------


async def test_a_frozen_redis_fails_every_kind_of_call_within_a_second(
    server: RedisServer, nodes: Nodes
) -> None:
    backends = nodes(server.url)
    broker = backends.broker
    await broker.start("n1", lambda envelope: None)
    await backends.sessions.save(snap(), 30)  # connections are open and pooled now
    with server.freeze():
        times = [
            await fails_fast(backends.sessions.claim("s-1", "alice")),
            await fails_fast(backends.sessions.append("s-1", 2, b"y", 10)),
            await fails_fast(backends.presence.user_connections("alice")),
            await fails_fast(backends.presence.join("lobby", "alice", "s-1", "n1")),
            await fails_fast(broker.publish(env("n1"))),
        ]
        assert not backends.sessions.healthy()
        assert not backends.presence.healthy()
        assert not broker.healthy()
    assert max(times) < FROZEN_LIMIT, times
    assert min(times) >= COMMAND_TIMEOUT * 0.9, times  # it did wait for the timeout
    # Thawed: the same clients work again, without being rebuilt.
    assert (await backends.sessions.claim("s-1", "alice")) == snap()
    assert backends.sessions.healthy()


async def test_a_frozen_cluster_master_fails_calls_on_its_slots_within_a_second(
    redis_cluster: RedisClusterServers, nodes: Nodes
) -> None:
    backends = nodes(redis_cluster.url)
    await backends.sessions.save(snap(), 30)
    probe = RedisCluster.from_url(split_url(redis_cluster.url, None)[0])
    try:
        await probe.initialize()
        meta, _ = Keys("rtcs", 16).session("s-1")
        owner = probe.get_node_from_key(meta) or pytest.fail("no owner")
    finally:
        await probe.aclose()
    master = next(n for n in redis_cluster.nodes if n.port == int(owner.port))
    with master.freeze():
        elapsed = await fails_fast(backends.sessions.claim("s-1", "alice"))
    assert elapsed < FROZEN_LIMIT
    assert (await backends.sessions.claim("s-1", "alice")) == snap()


async def test_a_dead_redis_fails_at_once(nodes: Nodes) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    backends = nodes(url)
    assert await fails_fast(backends.sessions.count()) < COMMAND_TIMEOUT
    assert await fails_fast(backends.presence.members("lobby")) < COMMAND_TIMEOUT
    assert await fails_fast(backends.broker.start("n1", lambda envelope: None)) < COMMAND_TIMEOUT
    assert not backends.broker.healthy()


async def test_a_frozen_subscription_turns_unhealthy_and_recovers(
    server: RedisServer, nodes: Nodes
) -> None:
    a, _ = await nodes.start(server.url, "a", **FAST)
    b, inbox = await nodes.start(server.url, "b", **FAST)
    with server.freeze():
        await wait_until(lambda: not b.healthy(), 3.0)
    await wait_until(b.healthy, 5.0)
    await a.publish(env("a", b"after"))
    assert await inbox.wait_for(1) == [env("a", b"after")]


async def test_the_reader_resubscribes_after_redis_restarts(
    server: RedisServer, nodes: Nodes
) -> None:
    a, _ = await nodes.start(server.url, "a", **FAST)
    b, inbox = await nodes.start(server.url, "b", **FAST)
    await a.publish(env("a", b"before"))
    await inbox.wait_for(1)

    server.kill()
    await wait_until(lambda: not b.healthy(), 3.0)
    with pytest.raises(Unavailable):
        await a.publish(env("a", b"lost"))
    server.restart()
    await wait_until(b.healthy, 5.0)

    await a.publish(env("a", b"after"))
    assert await inbox.wait_for(2) == [env("a", b"before"), env("a", b"after")]
    assert b._reader is not None and not b._reader.done()  # the same reader task


# -- interest: shards, node channels, re-subscription -----------------------------


def other_shard_topic(keys: Keys, than: str) -> str:
    """A topic whose shard differs from topic ``than``'s."""
    taken = keys.channel(env("x", target=than))
    return next(
        topic
        for topic in (f"t{i}.x" for i in range(1000))
        if keys.channel(env("x", target=topic)) != taken
    )


def subscribed(broker: RedisBroker) -> set[bytes]:
    return set().union(*(sub.channels for sub in broker._subscribers))


@pytest.mark.parametrize("mode", ["redis", "redis-cluster"])
async def test_a_node_gets_no_traffic_of_shards_it_does_not_listen_to(
    mode: str, redis_server: RedisServer, redis_cluster: RedisClusterServers, nodes: Nodes
) -> None:
    url = redis_server.url if mode == "redis" else redis_cluster.url
    keys = Keys("rtcs", 16)
    elsewhere = other_shard_topic(keys, "news.x")
    a, _ = await nodes.start(url, "a", interest=())
    b, inbox = await nodes.start(url, "b", interest=(("topic", "news.>"),), **FAST)
    assert subscribed(b) == {
        keys.global_channel,
        keys.node_channel("b"),
        keys.channel(env("x", target="news.x")),
    }
    await a.publish(env("a", b"not for b", target=elsewhere))
    await a.publish(env("a", b"for b", target="news.x"))
    # Same origin, and one connection (or the marker's channel after the
    # other's publish was acknowledged): had b received the first, it would be first.
    assert await inbox.wait_for(1) == [env("a", b"for b", target="news.x")]
    # The last unlisten unsubscribes (lazily); our own unsubscribe is no failure.
    reader = b._reader
    b.unlisten("topic", "news.>")
    await wait_until(lambda: subscribed(b) == {keys.global_channel, keys.node_channel("b")})
    await a.publish(env("a", b"late", target="news.x"))
    await a.publish(Envelope("a", "global", "", b"marker"))
    await inbox.wait_for(2)
    assert [e.tail for e in inbox.items] == [b"for b", b"marker"]
    assert b.healthy() and reader is not None and b._reader is reader and not reader.done()


async def test_a_subscriber_connection_with_no_channel_answers_pings(
    redis_cluster: RedisClusterServers, nodes: Nodes
) -> None:
    # A node id whose node channel lives with bus:all: the other masters'
    # connections carry no subscription at all (they answer PING with PONG).
    probe = RedisCluster.from_url(split_url(redis_cluster.url, None)[0])
    keys = Keys("rtcs", 16)
    try:
        await probe.initialize()
        home = probe.get_node_from_key(keys.global_channel.decode())
        assert home is not None
        node_id = next(
            f"n-{i}"
            for i in range(10_000)
            if probe.get_node_from_key(keys.node_channel(f"n-{i}").decode()) == home
        )
    finally:
        await probe.aclose()
    b, _ = await nodes.start(redis_cluster.url, node_id, interest=(), **FAST)
    assert len(b._subscribers) == len(redis_cluster.nodes)
    idle = [sub for sub in b._subscribers if not sub.channels]
    assert idle
    since = time.monotonic()
    loop_since = asyncio.get_running_loop().time()
    await wait_until(lambda: all(sub.last_seen > loop_since + 0.5 for sub in idle), 3.0)
    assert time.monotonic() - since >= 0.5
    assert b.healthy()


async def test_listen_while_redis_is_down_is_unavailable_and_resubscribed_later(
    server: RedisServer, nodes: Nodes
) -> None:
    keys = Keys("rtcs", 16)
    elsewhere = other_shard_topic(keys, "news.x")
    a, _ = await nodes.start(server.url, "a", interest=(), **FAST)
    b, inbox = await nodes.start(server.url, "b", interest=(("topic", "news.>"),), **FAST)
    server.kill()
    await wait_until(lambda: not b.healthy(), 3.0)
    with pytest.raises(Unavailable):
        await b.listen("topic", elsewhere)  # recorded all the same
    b.unlisten("topic", "news.>")  # withdrawn while down: not re-subscribed
    server.restart()
    await wait_until(b.healthy, 5.0)
    assert keys.channel(env("x", target=elsewhere)) in subscribed(b)
    assert keys.channel(env("x", target="news.x")) not in subscribed(b)
    await a.publish(env("a", b"after", target=elsewhere))
    assert await inbox.wait_for(1) == [env("a", b"after", target=elsewhere)]


async def test_direct_envelopes_use_the_node_channel_across_a_restart(
    server: RedisServer, nodes: Nodes
) -> None:
    a, _ = await nodes.start(server.url, "a", interest=(), **FAST)
    b, inbox = await nodes.start(server.url, "b", interest=(), **FAST)
    server.kill()
    await wait_until(lambda: not b.healthy(), 3.0)
    server.restart()
    await wait_until(b.healthy, 5.0)
    sent = Envelope("a", "user", "alice", b"hi")
    await a.publish(sent, "b")
    assert await inbox.wait_for(1) == [sent]


# -- garbage on a channel --------------------------------------------------------


@pytest.mark.parametrize("mode", ["redis", "redis-cluster"])
async def test_garbage_on_a_channel_is_dropped_and_reading_goes_on(
    mode: str,
    redis_server: RedisServer,
    redis_cluster: RedisClusterServers,
    nodes: Nodes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = redis_server.url if mode == "redis" else redis_cluster.url
    a, _ = await nodes.start(url, "a")
    b, inbox = await nodes.start(url, "b")
    sent = env("a", b"good")
    channel = Keys("rtcs", 16).channel(sent)
    garbage = [b"", b"\x01", b"\x09\x00\x00\x01a", b"\x01\x00\x00\x05abc", b"\xff" * 64]
    plain_url, cluster = split_url(url, None)
    raw: Redis | RedisCluster = (
        RedisCluster.from_url(plain_url) if cluster else Redis.from_url(plain_url)
    )
    try:
        for payload in garbage:
            if cluster:
                await raw.spublish(channel, payload)
            else:
                await raw.publish(channel, payload)
    finally:
        await raw.aclose()
    await a.publish(sent)
    assert await inbox.wait_for(1) == [sent]
    assert b.dropped == len(garbage)
    assert b.healthy()
    assert "undecodable broker payload" in caplog.text


async def test_a_deliver_callback_that_raises_does_not_stop_the_reader(
    server: RedisServer, nodes: Nodes
) -> None:
    a, _ = await nodes.start(server.url, "a")
    b = nodes(server.url).broker
    seen: list[Envelope] = []

    def deliver(envelope: Envelope) -> None:
        seen.append(envelope)
        if envelope.tail == b"boom":
            raise RuntimeError("a bug downstream")

    await b.start("b", deliver)
    await b.listen("topic", "news.sport")
    await a.publish(env("a", b"boom"))
    await a.publish(env("a", b"fine"))
    await wait_until(lambda: len(seen) == 2)
    assert b.healthy()


# -- presence liveness -----------------------------------------------------------


async def test_a_crashed_nodes_users_drop_out_within_the_node_ttl_and_are_swept(
    server: RedisServer, nodes: Nodes
) -> None:
    quick = {"heartbeat_interval": 0.1, "node_ttl": 0.4}
    crashed = nodes(server.url, **quick).presence
    assert isinstance(crashed, RedisPresenceStore)
    survivor = nodes(server.url, **quick).presence
    await crashed.add_connection("alice", "c-1", "crashed")
    await crashed.join("lobby", "alice", "s-1", "crashed")
    await survivor.add_connection("bob", "c-2", "alive")
    await survivor.join("lobby", "bob", "s-2", "alive")
    assert await survivor.user_connections("alice") == 1
    assert await survivor.members("lobby") == ["alice", "bob"]

    await crashed.aclose()  # the heartbeat stops, the entries stay: a crash
    started = time.monotonic()
    await wait_until_returns(lambda: survivor.user_connections("alice"), 0, 2.0)
    assert time.monotonic() - started < 0.4 + 0.2
    assert await survivor.members("lobby") == ["bob"]
    # The survivor's heartbeat sweeps the dead node's entries for good.
    probe = Redis.from_url(server.url)
    try:
        # Forgetting the node is the sweep's last step.
        await wait_until_returns(lambda: probe.zrange("rtcs:nodes", 0, -1), [b"alive"], 2.0)
        assert await probe.exists("rtcs:n:{crashed}:held") == 0
        assert await probe.hkeys("rtcs:u:{alice}:conns") == []
        assert await probe.hkeys("rtcs:r:{lobby}:members") == [b"bob"]
    finally:
        await probe.aclose()
    # The survivor kept itself alive well past the TTL.
    assert await survivor.user_connections("bob") == 1
    # alice joining again (on a live node) is a fresh join.
    assert await survivor.join("lobby", "alice", "s-3", "alive") is True


async def test_a_heartbeat_keeps_a_quiet_node_alive(server: RedisServer, nodes: Nodes) -> None:
    presence = nodes(server.url, heartbeat_interval=0.1, node_ttl=0.3).presence
    await presence.add_connection("alice", "c-1", "n1")
    probe = Redis.from_url(server.url)
    try:
        first = await probe.zscore("rtcs:nodes", "n1")
        await wait_until_returns(lambda: _later(probe.zscore("rtcs:nodes", "n1"), first), True, 2.0)
    finally:
        await probe.aclose()
    assert await presence.user_connections("alice") == 1


async def _later(score: Awaitable[float | None], first: float | None) -> bool:
    value = await score
    return value is not None and first is not None and value > first + 250


# -- configuration ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"shards": 0},
        {"command_timeout": 0},
        {"pool_size": 0},
        {"heartbeat_interval": 10, "node_ttl": 5},
        {"prefix": "a{b}"},
        {"prefix": ""},
    ],
)
def test_bad_options_are_refused_by_name(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        redis_backends("redis://127.0.0.1:1/0", **options)


def test_cluster_mode_follows_the_url_or_the_flag() -> None:
    assert split_url("redis+cluster://h:7000", None) == ("redis://h:7000", True)
    assert split_url("rediss+cluster://h:7000", None) == ("rediss://h:7000", True)
    assert split_url("redis://h:6379/0", None) == ("redis://h:6379/0", False)
    assert split_url("redis://h:7000", True) == ("redis://h:7000", True)
    with pytest.raises(ValueError):
        split_url("redis+cluster://h:7000", False)
    with pytest.raises(ValueError):
        split_url("http://h:80", None)


async def test_a_cluster_url_builds_a_cluster_client(nodes: Nodes) -> None:
    backends = nodes("redis+cluster://127.0.0.1:1")
    assert isinstance(backends.broker, RedisBroker)
    assert backends.broker._link.cluster is True
    assert isinstance(backends.broker._link.client, RedisCluster)


async def test_first_publish_keys_expire_with_the_window_on_the_sessions_slot(
    redis_server: RedisServer,
) -> None:
    backends = redis_backends(redis_server.url)
    client = Redis.from_url(redis_server.url)
    try:
        store = backends.sessions
        assert await store.first_publish("s-ttl", "p-1", 30.0, 10)
        assert await store.first_publish("s-ttl", "x" * 100_000, 30.0, 10)
        keys = Keys("rtcs", 16)
        key = keys.publishes("s-ttl")
        assert 29_000 < await client.pttl(key) <= 30_000
        members = await client.zrange(key, 0, -1)
        assert members[0] == b"p-1" and len(members[1]) == 65  # the huge id as a digest
        # A Cluster slot is picked by the hash tag: the session id, as its record.
        assert key == "rtcs:s:{s-ttl}:pub" and keys.session("s-ttl")[0] == "rtcs:s:{s-ttl}:meta"
    finally:
        await client.aclose()
        await close_backends(backends)
