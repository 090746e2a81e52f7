"""Scale-out, proved with real processes: Redis, two rtcs instances, HAProxy.

One real redis-server, two ``python -m rtcs`` processes sharing it (distinct
node ids, port 0 read from the log) and HAProxy in front, its config rendered
from conf/haproxy.cfg. Messages cross instances exactly once and in order;
sessions resume through HAProxy on the other instance; and under traffic, a
frozen Redis, a crashed Redis, a crashed instance and a drained one (with the
Python client, rtcs.client) are each survived as docs/operations.md says
("Running several instances"). Every wait has a
deadline; the measured figures are printed (``pytest -s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from websockets.asyncio.client import connect

from rtcs import config
from rtcs.auth.tokens import mint
from rtcs.client import Client as RtcsClient
from rtcs.client import Connected, Disconnected, Reconnect
from tests.integration.conftest import ENV, TIMEOUT, Client
from tests.support.processes import HaproxyProcess, RtcsProcess, temporary_directory
from tests.support.redis_server import RedisServer, command
from tests.support.waiting import wait_until

pytestmark = pytest.mark.redis

SECRET = "scale-out-test-secret-of-32-bytes!"
AUTH = config.load(None, {"RTCS_JWT_SECRET": SECRET}).auth
BREAKER_TIMEOUT = 1.0
NODE_TTL = 3.0
# Settings every instance gets, besides its node id and the Redis URL.
SETTINGS = {
    "RTCS_BACKEND_KIND": "redis",
    "RTCS_JWT_SECRET": SECRET,
    "RTCS_BREAKER_TIMEOUT": str(BREAKER_TIMEOUT),
    "RTCS_BACKEND_NODE_TTL": str(NODE_TTL),
    "RTCS_BACKEND_PRESENCE_HEARTBEAT": "1",
    "RTCS_SERVER_DRAIN_TIMEOUT": "1",
    # Attached sessions are mirrored too: they survive a killed instance.
    "RTCS_SESSION_CRASH_SAFE": "true",
}


@dataclass
class Topology:
    redis: RedisServer
    nodes: dict[str, RtcsProcess]
    haproxy: HaproxyProcess
    clients: list[Client] = field(default_factory=list)

    async def client(
        self, sub: str, url: str, query: str = "", roles: tuple[str, ...] = ()
    ) -> Client:
        """Connect ``sub`` to ``url`` (an instance or HAProxy) and read its welcome."""
        token = mint(AUTH, sub, roles=roles)
        ws = await connect(
            url + query,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=TIMEOUT,
        )
        client = Client(ws)
        self.clients.append(client)
        client.welcome = await client.expect("welcome")
        return client

    async def on(self, node: str, sub: str, roles: tuple[str, ...] = ()) -> Client:
        """Connect straight to instance ``node``."""
        client = await self.client(sub, self.nodes[node].url, roles=roles)
        assert client.welcome["server"] == node
        return client

    async def via_haproxy(self, node: str, sub: str) -> Client:
        """Connect through HAProxy with a hash key (``?session=``) that lands on ``node``.

        A client controls the key; unknown sessions just start a new one.
        """
        for i in range(40):
            query = f"?session=k-{sub}-{i}&last_seq=0"
            client = await self.client(sub, self.haproxy.url, query)
            if client.welcome["server"] == node:
                assert client.welcome["resumed"] is False
                return client
            await client.ws.close()
        raise AssertionError(f"no hash key of 40 sent {sub} to {node}")

    def session_seq(self, session_id: str) -> bytes | None:
        """The ``seq`` of a detached session as stored in Redis (None: not stored)."""
        reply = command(self.redis.port, "HGET", f"rtcs:s:{{{session_id}}}:meta", "seq")
        assert reply is None or isinstance(reply, bytes)
        return reply


@pytest.fixture
async def topology() -> AsyncIterator[Topology]:
    directory = temporary_directory("rtcs-scaleout-")
    redis = RedisServer(directory=directory)
    nodes: dict[str, RtcsProcess] = {}
    haproxy: HaproxyProcess | None = None
    topology: Topology | None = None
    try:
        redis.start()
        for name in ("rtcs-1", "rtcs-2"):
            env = {**ENV, **SETTINGS, "RTCS_SERVER_NODE_ID": name}
            nodes[name] = RtcsProcess(name, {**env, "RTCS_BACKEND_REDIS_URL": redis.url}, directory)
        await asyncio.gather(*(node.start() for node in nodes.values()))
        haproxy = HaproxyProcess({name: node.port for name, node in nodes.items()}, directory)
        await haproxy.start()
        await haproxy.wait_states({"rtcs-1": "UP", "rtcs-2": "UP"}, timeout=TIMEOUT)
        topology = Topology(redis, nodes, haproxy)
        yield topology
    finally:
        if topology is not None:
            for client in topology.clients:
                client.ws.transport.abort()
        if haproxy is not None:
            haproxy.stop()
        for node in nodes.values():
            node.terminate()  # all drain at once
        for node in nodes.values():
            node.stop()
        redis.stop()
        shutil.rmtree(directory, ignore_errors=True)


async def ping(client: Client) -> float:
    """One ``ping`` round trip, in seconds."""
    started = time.monotonic()
    await client.request({"type": "ping"}, "pong")
    return time.monotonic() - started


async def quiet(client: Client) -> None:
    """Nothing but the replies so far: a round trip, then silence."""
    await ping(client)
    await client.silent()


# -- routing across instances ---------------------------------------------------------------


async def test_publish_on_one_instance_arrives_on_the_other_once_in_order(
    topology: Topology,
) -> None:
    alice = await topology.on("rtcs-1", "alice")
    bob = await topology.via_haproxy("rtcs-2", "bob")
    await bob.subscribe("chat.>")
    ids = [alice.next_id() for _ in range(50)]
    for i, rid in enumerate(ids):  # pipelined: 50 in flight
        await alice.send({"type": "publish", "id": rid, "topic": "chat.x", "data": i})
    for rid in ids:
        await alice.expect("ack", id=rid)
    received = [await bob.expect("message", topic="chat.x") for _ in range(50)]
    assert [m["data"] for m in received] == list(range(50))
    assert [m["seq"] for m in received] == list(range(1, 51))
    assert {m["from"] for m in received} == {"alice"}
    await quiet(bob)


async def test_direct_message_to_a_user_on_the_other_instance(topology: Topology) -> None:
    alice, bob = await topology.on("rtcs-1", "alice"), await topology.on("rtcs-2", "bob")
    # Presence is written behind the welcome: wait until Redis knows bob's connection.
    key = "rtcs:u:{bob}:conns"
    await wait_until(lambda: command(topology.redis.port, "EXISTS", key) == 1)
    await alice.request({"type": "send", "to": {"user": "bob"}, "data": "hi bob"})
    message = await bob.expect("message", data="hi bob")
    assert message["from"] == "alice" and "topic" not in message and "room" not in message
    await quiet(bob)


async def test_direct_message_to_a_connection_on_the_other_instance(topology: Topology) -> None:
    alice, bob = await topology.on("rtcs-1", "alice"), await topology.on("rtcs-2", "bob")
    connection = bob.welcome["connection_id"]
    # Where a connection lives is written behind its welcome (a connection never
    # waits on the shared store): wait until Redis knows, as another node would ask.
    key = f"rtcs:c:{{{connection}}}:node"
    await wait_until(lambda: command(topology.redis.port, "EXISTS", key) == 1)
    to = {"connection": connection}
    await alice.request({"type": "send", "to": to, "data": "hi conn"})
    message = await bob.expect("message", data="hi conn")
    assert message["from"] == "alice"
    await quiet(bob)


async def test_rooms_presence_and_broadcasts_across_instances(topology: Topology) -> None:
    alice = await topology.on("rtcs-1", "alice")
    bob = await topology.on("rtcs-2", "bob")
    admin = await topology.on("rtcs-1", "root", roles=("admin",))
    await alice.request({"type": "join", "room": "lobby"}, "joined")
    joined = await bob.request({"type": "join", "room": "lobby"}, "joined")
    assert joined["members"] == ["alice", "bob"]
    await alice.expect("presence", room="lobby", event="join", user="bob")
    state = await alice.request({"type": "presence", "room": "lobby"}, "presence_state")
    assert state["members"] == ["alice", "bob"]
    user = await alice.request({"type": "presence", "user": "bob"}, "presence_state")
    assert user["online"] is True and user["connections"] == 1
    await bob.request({"type": "broadcast", "room": "lobby", "data": "room"})
    for client in (alice, bob):
        await client.expect("message", room="lobby", data="room")
    await admin.request({"type": "broadcast", "scope": "global", "data": "all"})
    for client in (alice, bob, admin):
        await client.expect("message", room="*", data="all")
    await bob.ws.close()
    await alice.expect("presence", room="lobby", event="leave", user="bob")
    for client in (alice, admin):
        await quiet(client)


async def test_a_dropped_client_resumes_through_haproxy_on_the_other_instance(
    topology: Topology,
) -> None:
    alice = await topology.on("rtcs-2", "alice")
    bob = await topology.via_haproxy("rtcs-1", "bob")
    await bob.subscribe("news")
    await alice.publish("news", 1)
    await bob.expect("message", seq=1, data=1)
    session = bob.welcome["session_id"]
    await bob.ws.close()
    for n in (2, 3, 4):  # missed while away
        await alice.publish("news", n)
    # rtcs-1 writes the detached session and what it buffers to Redis behind
    # the close: wait until all three are there.
    await wait_until(lambda: topology.session_seq(session) == b"4", TIMEOUT)
    # Stop routing to rtcs-1, so the hash key (the session id) must choose rtcs-2.
    topology.haproxy.admin("set server rtcs/rtcs-1 state maint")
    try:
        again = await topology.client("bob", topology.haproxy.url, f"?session={session}&last_seq=1")
    finally:
        topology.haproxy.admin("set server rtcs/rtcs-1 state ready")
    assert again.welcome["server"] == "rtcs-2"
    assert again.welcome["resumed"] is True and again.welcome["session_id"] == session
    assert again.welcome["replayed"] == 3
    replay = [await again.expect("message", topic="news") for _ in range(3)]
    assert [(m["seq"], m["data"]) for m in replay] == [(2, 2), (3, 3), (4, 4)]
    await alice.publish("news", 5)  # and live again, once
    await again.expect("message", seq=5, data=5)
    await quiet(again)


# -- faults under traffic --------------------------------------------------------------------


@dataclass
class Traffic:
    """A publisher on rtcs-1 to a subscriber on rtcs-2, one publish at a time."""

    publisher: Client
    replies: list[tuple[float, str, str | None]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            rid = self.publisher.next_id()
            await self.publisher.send({"type": "publish", "id": rid, "topic": "load", "data": n})
            reply = await self._reply(rid)
            self.replies.append((time.monotonic(), reply["type"], reply.get("code")))
            await asyncio.sleep(0.02)

    async def _reply(self, rid: int) -> dict[str, Any]:
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = await self.publisher.recv()
                if frame.get("id") == rid and frame["type"] in ("ack", "error"):
                    return frame


@dataclass
class Probe:
    """Pings every 20 ms and keeps each round trip."""

    client: Client
    rtts: list[tuple[float, float]] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stop.is_set():
            self.rtts.append((time.monotonic(), await ping(self.client)))
            await asyncio.sleep(0.02)

    def max_between(self, start: float, end: float) -> float:
        inside = [rtt for at, rtt in self.rtts if start <= at - rtt and at <= end]
        assert len(inside) >= 10, f"only {len(inside)} pings in the window"
        return max(inside)


@contextlib.contextmanager
def running(*tasks: Any) -> Iterator[list[asyncio.Task[None]]]:
    started = [asyncio.create_task(t.run()) for t in tasks]
    try:
        yield started
    finally:
        for t in tasks:
            t.stop.set()


async def finish(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)


@pytest.mark.parametrize("fault", ["freeze", "kill"])
async def test_a_redis_outage_is_degraded_mode_and_pings_stay_fast(
    topology: Topology, fault: str
) -> None:
    publisher = await topology.on("rtcs-1", "alice")
    subscriber = await topology.on("rtcs-2", "bob")
    watchers = [await topology.on(n, f"watch-{n}") for n in ("rtcs-1", "rtcs-2")]
    probe = Probe(await topology.on("rtcs-1", "probe"))
    await subscriber.subscribe("load")
    traffic = Traffic(publisher)
    with running(traffic, probe) as tasks:
        await wait_until(lambda: len(traffic.replies) >= 5)
        assert {kind for _, kind, _ in traffic.replies} == {"ack"}
        redis = topology.redis
        outage_start = time.monotonic()
        freeze = redis.freeze() if fault == "freeze" else contextlib.nullcontext()
        with freeze:
            if fault == "kill":
                redis.kill()
            opened = await asyncio.gather(
                *(w.expect("status", timeout=2.0, degraded=True) for w in watchers)
            )
            breaker_open = time.monotonic() - outage_start
            assert all(s["reason"] == "backend" for s in opened)
            # Publishes needing Redis: "unavailable", never an ack.
            refused = len([r for r in traffic.replies if r[2] == "unavailable"])
            await wait_until(
                lambda: len([r for r in traffic.replies if r[2] == "unavailable"]) >= refused + 5
            )
            # Past the first command timeout, every reply is a refusal.
            await wait_until(lambda: any(r[0] > outage_start + 0.6 for r in traffic.replies))
            during = [r for r in traffic.replies if r[0] > outage_start + 0.6]
            assert during and {(kind, code) for _, kind, code in during} == {
                ("error", "unavailable")
            }
            outage_end = time.monotonic()
            if fault == "kill":
                redis.restart()
        recovered_at = time.monotonic()
        closed = await asyncio.gather(
            *(w.expect("status", timeout=BREAKER_TIMEOUT + 1.0, degraded=False) for w in watchers)
        )
        recovery = time.monotonic() - recovered_at
        assert closed
        ping_max = probe.max_between(outage_start, outage_end)
        # Acks again once the breaker closed.
        acked = len([r for r in traffic.replies if r[1] == "ack"])
        await wait_until(lambda: len([r for r in traffic.replies if r[1] == "ack"]) > acked)
    await finish(tasks)
    print(
        f"\n{fault}: breaker open after {breaker_open:.3f} s, ping max {ping_max * 1000:.1f} ms"
        f" over {outage_end - outage_start:.2f} s, recovered {recovery:.3f} s after"
        f" {'SIGCONT' if fault == 'freeze' else 'restart'}"
    )
    assert breaker_open < 2.0
    assert ping_max < 0.1
    # Cross-instance delivery works again: the subscriber on rtcs-2 gets a new publish.
    await publisher.publish("load", "after")
    await subscriber.expect("message", topic="load", data="after")


async def test_a_killed_instance_is_taken_out_and_its_clients_resume_on_the_other(
    topology: Topology,
) -> None:
    carol = await topology.via_haproxy("rtcs-1", "carol")  # will resume elsewhere
    await topology.on("rtcs-1", "frank")  # will not come back
    dave = await topology.on("rtcs-2", "dave")  # on the survivor
    erin = await topology.on("rtcs-2", "erin")  # publishes
    for client in (carol, dave):
        await client.subscribe("news")
    for n in (1, 2):
        await erin.publish("news", n)
    for client in (carol, dave):
        assert [(await client.expect("message"))["data"] for _ in range(2)] == [1, 2]
    await wait_until(lambda: topology.session_seq("nothing") is None)  # Redis answers
    frank = await dave.request({"type": "presence", "user": "frank"}, "presence_state")
    assert frank["online"] is True
    session = carol.welcome["session_id"]

    killed_at = time.monotonic()
    topology.nodes["rtcs-1"].kill()
    assert await carol.closed() is not None
    for n in (3, 4, 5):  # carol misses these
        await erin.publish("news", n)
    await topology.haproxy.wait_states({"rtcs-1": "DOWN", "rtcs-2": "UP"}, timeout=TIMEOUT)
    marked_down = time.monotonic() - killed_at

    # dave saw nothing unusual: every message once, in order, no status, no close.
    got = [await dave.expect("message") for _ in range(3)]
    assert [(m["seq"], m["data"]) for m in got] == [(3, 3), (4, 4), (5, 5)]
    await quiet(dave)

    # frank's presence expires with rtcs-1's heartbeats (node_ttl).
    async def frank_online() -> bool:
        reply = await dave.request({"type": "presence", "user": "frank"}, "presence_state")
        return bool(reply["online"])

    deadline = time.monotonic() + NODE_TTL + 3.0
    while await frank_online():
        assert time.monotonic() < deadline, "frank is still online"
        await asyncio.sleep(0.1)
    expired = time.monotonic() - killed_at
    print(
        f"\nkill: rtcs-1 marked DOWN after {marked_down:.2f} s, presence gone after {expired:.2f} s"
    )

    # carol comes back through HAProxy: her key chose rtcs-1, now only rtcs-2 serves.
    again = await topology.client("carol", topology.haproxy.url, f"?session={session}&last_seq=2")
    assert again.welcome["server"] == "rtcs-2"
    await quiet(again)


async def test_a_killed_instances_clients_resume_with_exact_replay(topology: Topology) -> None:
    # session.crash_safe: attached sessions are mirrored to Redis, so a client
    # of a SIGKILLed instance resumes elsewhere with everything that instance
    # delivered (here: 3-5 were sent to carol, but she had processed only 2).
    carol = await topology.via_haproxy("rtcs-1", "carol")
    erin = await topology.on("rtcs-2", "erin")
    await carol.subscribe("news")
    for n in (1, 2, 3, 4, 5):
        await erin.publish("news", n)
    assert [(await carol.expect("message"))["data"] for _ in range(5)] == [1, 2, 3, 4, 5]
    session = carol.welcome["session_id"]
    # rtcs-1 writes the attached session behind its deliveries: all five are there.
    await wait_until(lambda: topology.session_seq(session) == b"5", TIMEOUT)
    topology.nodes["rtcs-1"].kill()
    assert await carol.closed() is not None
    await topology.haproxy.wait_states({"rtcs-1": "DOWN"}, timeout=TIMEOUT)
    again = await topology.client("carol", topology.haproxy.url, f"?session={session}&last_seq=2")
    assert again.welcome["server"] == "rtcs-2"
    assert again.welcome["resumed"] is True, again.welcome
    assert again.welcome["replayed"] == 3
    replay = [await again.expect("message", topic="news") for _ in range(3)]
    assert [(m["seq"], m["data"]) for m in replay] == [(3, 3), (4, 4), (5, 5)]
    await erin.publish("news", 6)  # and live again, once, with the next seq
    await again.expect("message", topic="news", seq=6, data=6)
    await quiet(again)


async def api_publish(node: RtcsProcess, topic: str, data: Any) -> int:
    """``POST /api/publish`` on ``node`` with a service token: the HTTP status."""
    body = json.dumps({"topic": topic, "data": data}).encode()
    token = mint(AUTH, "backend", roles=("service",))
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        head = (
            f"POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
    finally:
        writer.close()
    return int(raw.split(b" ", 2)[1])


E = TypeVar("E")


async def next_event(events: AsyncIterator[object], kind: type[E]) -> E:
    """The next event of ``kind`` (earlier ones of other kinds are skipped)."""
    while True:
        event = await asyncio.wait_for(anext(events), TIMEOUT)
        if isinstance(event, kind):
            return event


async def test_the_python_client_follows_a_draining_instance_to_the_other_one(
    topology: Topology,
) -> None:
    # The whole path a client developer relies on: rtcs.client behind HAProxy,
    # its instance drained by SIGTERM (not ready, then 1001), a backend service
    # publishing over HTTP meanwhile; the client reconnects through HAProxy to
    # the other instance, resumes, and its application sees every message once,
    # in order.
    away = asyncio.Event()  # set: the client may connect again

    async def token() -> str:
        # Called for every connection: the reconnect waits until the messages
        # "while away" were published, so they are all published before the
        # other instance claims the session (what the hand-over guarantees).
        await asyncio.wait_for(away.wait(), TIMEOUT)
        return mint(AUTH, "gina")

    away.set()
    client = RtcsClient(
        topology.haproxy.url,
        token=token,
        reconnect=Reconnect(base=0.05, cap=0.5, max_elapsed=30.0),
    )
    async with client:
        await client.subscribe("news")
        welcome = client.welcome
        assert welcome is not None
        draining = welcome.server
        (survivor,) = set(topology.nodes) - {draining}
        stream = client.messages()
        for n in (1, 2, 3):
            assert await api_publish(topology.nodes[survivor], "news", n) == 202
        assert [(await anext(stream)).data for _ in range(3)] == [1, 2, 3]

        events = client.events()
        topology.nodes[draining].terminate()  # SIGTERM: it drains
        # Served as usual during the readiness grace, then closed with 1001.
        assert await api_publish(topology.nodes[survivor], "news", 4) == 202
        away.clear()
        gone = await next_event(events, Disconnected)
        assert gone.code == 1001
        for n in range(5, 11):  # while the client is away
            assert await api_publish(topology.nodes[survivor], "news", n) == 202
        away.set()
        back = await next_event(events, Connected)
        assert back.resumed and back.session == welcome.session_id
        got = [await asyncio.wait_for(anext(stream), TIMEOUT) for _ in range(7)]
        assert [m.data for m in got] == list(range(4, 11))
        assert [m.seq for m in got] == list(range(4, 11))
        after = client.welcome
        assert after is not None and after.server == survivor
        assert await api_publish(topology.nodes[survivor], "news", 11) == 202  # and live
        live = await asyncio.wait_for(anext(stream), TIMEOUT)
        assert (live.seq, live.data) == (11, 11)
