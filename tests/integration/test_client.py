"""The Python client (``rtcs.client``) against a real node on port 0, over real sockets.

Connections are dropped from the server's side (``ConnectionHandle.abort``:
the TCP connection ends without a close frame, as a network failure looks to
the client) or closed by the server's own machinery (token expiry,
revocation). A few edge cases the node does not produce on demand (a replay
that overlaps what the client holds, a lost ack, a request never answered)
are played by a scripted WebSocket server, also over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from websockets.asyncio.server import ServerConnection, serve

from rtcs.backends.base import Backends
from rtcs.backends.memory import MemoryBroker, MemoryPresenceStore, MemorySessionStore
from rtcs.client import (
    Ack,
    AuthFailed,
    BadRequest,
    BadTopic,
    Client,
    ClientClosed,
    Connected,
    ConnectionLost,
    Disconnected,
    Event,
    Forbidden,
    GaveUp,
    Joined,
    Left,
    Message,
    Offline,
    PresenceChanged,
    Reconnect,
    ReconnectFailed,
    Reconnecting,
    RequestTimeout,
    RoomPresence,
    RtcsError,
    SessionLost,
    Status,
    Stopped,
    Subscribed,
    TokenRefreshed,
    TokenRefreshFailed,
    TokenSource,
    TooLarge,
    Unavailable,
    Unsubscribed,
    UserPresence,
)
from rtcs.client._tokens import token_expiry
from rtcs.errors import Unavailable as BackendDown
from rtcs.gateway.handle import ConnectionHandle
from tests.integration.conftest import TIMEOUT, Node, wait_until

E = TypeVar("E", bound=Event)
NodeFactory = Callable[..., Awaitable[Node]]

#: Reconnect at once (tiny jittered waits): the tests wait on events, not on backoff.
FAST = Reconnect(base=0.01, cap=0.05)


class EventLog:
    """Every event of one client, collected as they come."""

    def __init__(self, client: Client) -> None:
        self.events: list[Event] = []
        self.task = asyncio.create_task(self._collect(client))

    async def _collect(self, client: Client) -> None:
        async for event in client.events():
            self.events.append(event)

    def of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def wait_for(self, kind: type[E], count: int = 1) -> E:
        """The ``count``-th event of ``kind``, once it came."""
        await wait_until(
            lambda: len(self.of(kind)) >= count,
            message=lambda: f"{count} {kind.__name__} event(s) in {self.events}",
        )
        return self.of(kind)[count - 1]

    async def ended(self) -> list[type[Event]]:
        """The kinds of all events, once the stream ended."""
        await asyncio.wait_for(self.task, TIMEOUT)
        return [type(event) for event in self.events]


MakeClient = Callable[..., Awaitable[tuple[Client, EventLog]]]


@pytest.fixture
async def clients() -> AsyncIterator[MakeClient]:
    """Make clients (connected, unless ``connect=False``); all closed at teardown."""
    made: list[tuple[Client, EventLog]] = []

    async def make(
        url: str, token: TokenSource, *, connect: bool = True, **options: Any
    ) -> tuple[Client, EventLog]:
        client = Client(url, token, **options)
        log = EventLog(client)
        made.append((client, log))
        if connect:
            await client.connect()
        return client, log

    yield make
    for client, log in made:
        await client.close()
        await asyncio.wait_for(log.task, TIMEOUT)


def server_side(node: Node, client: Client) -> ConnectionHandle:
    """The node's handle of ``client``'s current connection."""
    gateway = node.app.gateway
    assert gateway is not None
    (handle,) = [h for h in gateway.handles if h.connection_id == client.connection_id]
    return handle


async def next_message(inbox: AsyncIterator[Message]) -> Message:
    return await asyncio.wait_for(anext(inbox), TIMEOUT)


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    yield port


# ------------------------------------------------------------ every request


async def test_every_request_round_trips(node: Node, clients: MakeClient) -> None:
    alice, alice_log = await clients(node.url, node.token("alice", ("admin",)))
    bob, bob_log = await clients(node.url, node.token("bob"))
    inbox = bob.messages()

    assert await bob.subscribe("chat.>") == Subscribed("chat.>")
    assert await alice.publish("chat.general", {"text": "hi"}) == Ack(duplicate=False)
    message = await next_message(inbox)
    assert (message.seq, message.topic, message.room, message.sender, message.data) == (
        1,
        "chat.general",
        None,
        "alice",
        {"text": "hi"},
    )
    assert isinstance(message.ts, int) and message.ts > 0

    assert await alice.send("psst", user="bob") == Ack()
    assert bob.connection_id is not None
    await alice.send("to that socket", connection=bob.connection_id)
    direct = [await next_message(inbox), await next_message(inbox)]
    assert [(m.seq, m.data, m.sender, m.is_direct) for m in direct] == [
        (2, "psst", "alice", True),
        (3, "to that socket", "alice", True),
    ]

    assert await bob.join("lobby") == Joined("lobby", ("bob",))
    joined = await alice.join("lobby")
    assert sorted(joined.members) == ["alice", "bob"]
    assert await bob_log.wait_for(PresenceChanged) == PresenceChanged("lobby", "alice", "join")
    await alice.broadcast({"n": 1}, room="lobby")
    await alice.broadcast("everyone", scope="global")
    await alice.broadcast("filtered", users=["bob"])
    rooms = [await next_message(inbox) for _ in range(3)]
    assert [(m.seq, m.room, m.data, m.sender) for m in rooms] == [
        (4, "lobby", {"n": 1}, "alice"),
        (5, "*", "everyone", "alice"),
        (6, "*", "filtered", "alice"),
    ]

    room = await bob.presence(room="lobby")
    assert isinstance(room, RoomPresence) and sorted(room.members) == ["alice", "bob"]
    assert await bob.presence(user="alice") == UserPresence("alice", online=True, connections=1)
    assert (await alice.ping()).rtt >= 0

    assert await alice.leave("lobby") == Left("lobby")
    assert await bob_log.wait_for(PresenceChanged, 2) == PresenceChanged("lobby", "alice", "leave")
    assert await bob.unsubscribe("chat.>") == Unsubscribed("chat.>")
    await bob.subscribe("news")
    await alice.publish("chat.general", "not for bob any more")
    await alice.publish("news", "for bob")
    assert (await next_message(inbox)).data == "for bob"  # chat.general was not delivered

    welcome = await alice.auth()  # a token refresh on the open connection
    assert (welcome.session_id, welcome.connection_id) == (alice.session_id, alice.connection_id)
    assert welcome.resumed
    assert bob.subscriptions == frozenset({"news"})
    assert (bob.rooms, alice.rooms) == (frozenset({"lobby"}), frozenset())
    assert bob.last_seq == 7

    # Closing: the stream ends, requests refuse, the events end with Stopped.
    await bob.close()
    assert [m async for m in inbox] == []
    with pytest.raises(ClientClosed):
        await bob.ping()
    assert await bob_log.ended() == [
        Connected,
        PresenceChanged,
        PresenceChanged,
        Disconnected,
        Stopped,
    ]
    assert bob_log.events[-1] == Stopped(None)
    assert not alice_log.of(Disconnected)


async def test_errors_are_typed_and_the_connection_stays(node: Node, clients: MakeClient) -> None:
    carol, log = await clients(node.url, node.token("carol"))
    connection = carol.connection_id
    with pytest.raises(Forbidden) as forbidden:
        await carol.publish("system.alert", 1)
    assert isinstance(forbidden.value, RtcsError) and forbidden.value.code == "forbidden"
    assert "system.alert" in forbidden.value.message
    with pytest.raises(BadTopic) as bad_topic:
        await carol.subscribe("a..b")
    assert bad_topic.value.code == "bad_topic"
    with pytest.raises(BadTopic):
        await carol.publish("chat.*", 1)
    with pytest.raises(Offline):
        await carol.send("hello?", user="nobody")
    with pytest.raises(BadRequest):
        await carol.join("no spaces")
    with pytest.raises(Forbidden):
        await carol.broadcast("hear me", scope="global")
    with pytest.raises(TooLarge):  # refused before sending: the server would close 1009
        await carol.publish("chat.big", "x" * 70_000)
    with pytest.raises(ValueError, match="exactly one"):
        await carol.send("to whom?")
    with pytest.raises(ValueError, match="not valid JSON"):
        await carol.publish("chat.nan", float("nan"))
    await carol.ping()
    assert carol.connection_id == connection
    assert not log.of(Disconnected)


# ------------------------------------------------------- drops and resumes


async def test_a_dropped_connection_resumes_and_every_message_arrives_once_in_order(
    node: Node, clients: MakeClient
) -> None:
    sub, sub_log = await clients(node.url, node.token("sub"), reconnect=FAST)
    pub, pub_log = await clients(node.url, node.token("pub"), reconnect=FAST)
    await sub.subscribe("feed")
    total = 300
    sub_dropped, pub_dropped = asyncio.Event(), asyncio.Event()

    async def publish_all() -> None:
        for i in range(total):
            if i == 100:
                await sub_dropped.wait()  # the next ones go while the subscriber is away
            if i == 200:
                await pub_dropped.wait()
            await pub.publish("feed", i)

    publisher = asyncio.create_task(publish_all())
    got: list[Message] = []
    async with asyncio.timeout(15):
        async for message in sub.messages():
            got.append(message)
            if len(got) == 50:
                server_side(node, sub).abort()
                sub_dropped.set()
            elif len(got) == 150:
                server_side(node, pub).abort()
                pub_dropped.set()
            elif len(got) == 250:
                server_side(node, sub).abort()
            elif len(got) == total:
                break
    await asyncio.wait_for(publisher, TIMEOUT)

    assert [m.data for m in got] == list(range(total))
    assert [m.seq for m in got] == list(range(1, total + 1))
    assert [e.code for e in sub_log.of(Disconnected)] == [1006, 1006]
    assert [e.resumed for e in sub_log.of(Connected)] == [False, True, True]
    assert {e.session for e in sub_log.of(Connected)} == {sub.session_id}
    assert [e.resumed for e in pub_log.of(Connected)] == [False, True]
    assert not sub_log.of(SessionLost) and not pub_log.of(SessionLost)
    assert sub.last_seq == total


async def test_a_lost_session_is_said_and_the_client_subscribes_and_joins_again(
    node_factory: NodeFactory, clients: MakeClient
) -> None:
    node = await node_factory(**{"session.ttl": 0.2, "session.reap_interval": 0.05})
    ctx = node.app.ctx
    assert ctx is not None
    # The reconnect waits for this gate (its token), so the session expires first.
    gate = asyncio.Event()
    gate.set()

    async def token() -> str:
        await gate.wait()
        return node.token("bob")

    bob, log = await clients(node.url, token, reconnect=FAST)
    ann, _ = await clients(node.url, node.token("ann"))
    await bob.subscribe("news")
    await bob.join("lobby")
    await ann.join("lobby")
    inbox = bob.messages()
    await ann.publish("news", "before")
    assert (await next_message(inbox)).seq == 1
    old = bob.session_id
    assert old is not None

    gate.clear()
    server_side(node, bob).abort()
    await wait_until(lambda: ctx.sessions.get(old) is None)
    await ann.publish("news", "lost with the session")
    gate.set()

    lost = await log.wait_for(SessionLost)
    assert (lost.previous, lost.last_seq) == (old, 1)
    assert lost.session == bob.session_id != old
    await bob.ping()  # served once the subscriptions and rooms are back
    await ann.publish("news", "after")
    await ann.broadcast("room again", room="lobby")
    after = [await next_message(inbox), await next_message(inbox)]
    assert [(m.seq, m.data, m.topic, m.room) for m in after] == [
        (1, "after", "news", None),
        (2, "room again", None, "lobby"),
    ]
    assert [e.resumed for e in log.of(Connected)] == [False, False]
    assert log.events.index(lost) < log.events.index(log.of(Connected)[1])
    assert (bob.subscriptions, bob.rooms) == (frozenset({"news"}), frozenset({"lobby"}))


async def test_the_client_gives_up_after_max_attempts(
    closed_port: int, clients: MakeClient
) -> None:
    policy = Reconnect(base=0.01, cap=0.02, max_attempts=3)
    client, log = await clients(
        f"ws://127.0.0.1:{closed_port}/ws", "any", connect=False, reconnect=policy
    )
    with pytest.raises(ReconnectFailed) as info:
        await client.connect()
    assert (info.value.code, info.value.attempts) == ("gave_up", 3)
    assert await log.ended() == [Reconnecting, Reconnecting, GaveUp, Stopped]
    assert [e.attempt for e in log.of(Reconnecting)] == [2, 3]
    assert log.of(GaveUp)[0].attempts == 3
    assert log.events[-1] == Stopped(info.value)
    with pytest.raises(ReconnectFailed):
        await client.ping()
    with pytest.raises(ReconnectFailed):
        await anext(client.messages())


async def test_after_a_drop_the_client_gives_up_and_messages_raises(
    node_factory: NodeFactory, clients: MakeClient
) -> None:
    node = await node_factory(**{"server.drain_grace": 0})
    policy = Reconnect(base=0.01, cap=0.02, max_attempts=2)
    client, log = await clients(node.url, node.token("eve"), reconnect=policy)
    await node.app.stop()  # closes every client with 1001, then nothing listens
    with pytest.raises(ReconnectFailed):
        async with asyncio.timeout(TIMEOUT):
            async for _ in client.messages():
                pass
    assert await log.ended() == [
        Connected,
        Disconnected,
        Reconnecting,
        Reconnecting,
        GaveUp,
        Stopped,
    ]
    assert log.of(Disconnected)[0].code == 1001


# ------------------------------------------------------------ tokens and 4001


async def test_a_refused_token_stops_without_reconnecting(node: Node, clients: MakeClient) -> None:
    client, log = await clients(node.url, "not-a-jwt", connect=False, reconnect=FAST)
    with pytest.raises(AuthFailed) as info:
        await client.connect()
    assert (info.value.code, info.value.close_code) == ("auth_failed", 401)
    assert await log.ended() == [Stopped]


async def test_an_expired_static_token_ends_with_4001_and_no_reconnect(
    node: Node, clients: MakeClient
) -> None:
    client, log = await clients(node.url, node.token("fred", ttl=1), reconnect=FAST)
    with pytest.raises(AuthFailed) as info:
        async with asyncio.timeout(TIMEOUT):
            async for _ in client.messages():
                pass
    assert info.value.close_code == 4001
    assert await log.ended() == [Connected, Disconnected, Stopped]
    assert log.of(Disconnected)[0] == Disconnected(4001, "token expired")


async def test_a_revoked_user_is_not_reconnected_even_with_a_token_callable(
    node: Node, clients: MakeClient
) -> None:
    calls = 0

    def token() -> str:
        nonlocal calls
        calls += 1
        return node.token("gina")

    client, log = await clients(node.url, token, reconnect=FAST)
    await revoke(node, {"user": "gina"})
    assert await log.ended() == [Connected, Disconnected, Stopped]
    assert log.of(Disconnected)[0] == Disconnected(4001, "revoked")
    assert isinstance(client.closed, AuthFailed)
    assert calls == 1


async def test_a_4001_of_an_expired_token_reconnects_with_a_fresh_one(
    node: Node, clients: MakeClient
) -> None:
    # As if the refresh had not got through in time: the server closes with
    # 4001, and a token callable may still give a valid token.
    client, log = await clients(node.url, lambda: node.token("hugo"), reconnect=FAST)
    await client.subscribe("t")
    server_side(node, client).close(4001, "token expired")
    connected = await log.wait_for(Connected, 2)
    assert connected.resumed
    assert log.of(Disconnected) == [Disconnected(4001, "token expired")]
    await client.ping()


async def test_a_token_callable_keeps_the_connection_past_the_first_exp(
    node: Node, clients: MakeClient
) -> None:
    expiries: list[float] = []

    def token() -> str:
        fresh = node.token("ida", ttl=1)
        exp = token_expiry(fresh)
        assert exp is not None
        expiries.append(exp)
        return fresh

    client, log = await clients(node.url, token)
    connection = client.connection_id
    await log.wait_for(TokenRefreshed, 2)
    # Each refresh comes after three quarters of the token's life: the second
    # lies past the first token's exp.
    assert time.time() > expiries[0]
    await client.ping()
    assert client.connection_id == connection
    assert not log.of(Disconnected) and not log.of(TokenRefreshFailed)
    assert [e.expires_at for e in log.of(TokenRefreshed)] == expiries[1:3]


# ---------------------------------------------------------- degraded mode


class FlakyPresence(MemoryPresenceStore):
    """A presence store that can be switched off, like a Redis that went away."""

    down = False

    def healthy(self) -> bool:
        return not self.down

    async def join(self, room: str, user: str, member: str, node: str) -> bool:
        if self.down:
            raise BackendDown("presence store down")
        return await super().join(room, user, member, node)


class FlakySessions(MemorySessionStore):
    """A session store down together with the presence store (the breaker's probe)."""

    def __init__(self, presence: FlakyPresence) -> None:
        super().__init__()
        self.presence = presence

    async def count(self) -> int:
        if self.presence.down:
            raise BackendDown("session store down")
        return await super().count()


async def test_degraded_mode_arrives_as_status_events(
    node_factory: NodeFactory, clients: MakeClient
) -> None:
    presence = FlakyPresence()
    node = await node_factory(
        Backends(MemoryBroker(), FlakySessions(presence), presence),
        **{"breaker.failure_threshold": 2, "breaker.timeout": 0.2},
    )
    alice, log = await clients(node.url, node.token("alice"))
    presence.down = True
    for _ in range(2):  # failure_threshold failed calls open the breaker
        with pytest.raises(Unavailable):
            await alice.join("r")
    assert await log.wait_for(Status) == Status(degraded=True, reason="backend")
    assert alice.degraded
    late, late_log = await clients(node.url, node.token("bob"))  # welcomed as degraded
    assert (await late_log.wait_for(Connected)).degraded
    assert await late_log.wait_for(Status) == Status(degraded=True)
    presence.down = False
    assert await log.wait_for(Status, 2) == Status(degraded=False)
    assert not alice.degraded
    await late_log.wait_for(Status, 2)
    assert not late.degraded


async def revoke(node: Node, payload: dict[str, Any]) -> None:
    """``POST /admin/revoke`` as an admin."""
    request = urllib.request.Request(
        node.http + "/admin/revoke",
        data=json.dumps(payload).encode(),
        headers={"Authorization": f"Bearer {node.token('ops', ('admin',))}"},
        method="POST",
    )

    def post() -> int:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            status: int = response.status
            return status

    assert await asyncio.get_running_loop().run_in_executor(None, post) == 200


# ------------------------------------------ edge cases, from a scripted server

Script = Callable[[ServerConnection], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted(*scripts: Script) -> AsyncIterator[str]:
    """A WebSocket server playing ``scripts`` in order, one per connection; its URL."""
    queue = list(scripts)

    async def handler(ws: ServerConnection) -> None:
        await queue.pop(0)(ws)

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"


async def welcome(ws: ServerConnection, session: str, resumed: bool = False) -> None:
    frame = {"type": "welcome", "connection_id": "c-1", "session_id": session, "user": "u"}
    await ws.send(json.dumps({**frame, "roles": [], "heartbeat": 25, "resumed": resumed}))


async def message(ws: ServerConnection, seq: int) -> None:
    await ws.send(json.dumps({"type": "message", "seq": seq, "topic": "t", "data": seq}))


async def expect(ws: ServerConnection, type_: str) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
    assert frame["type"] == type_, frame
    return frame


def query(ws: ServerConnection) -> dict[str, list[str]]:
    assert ws.request is not None
    return urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path).query)


async def test_a_request_without_reply_times_out(clients: MakeClient) -> None:
    async def silent(ws: ServerConnection) -> None:
        await welcome(ws, "s-1")
        async for _ in ws:  # reads, never answers
            pass

    async with scripted(silent) as url:
        client, log = await clients(url, "t", request_timeout=0.2)
        with pytest.raises(RequestTimeout) as info:
            await client.ping()
        assert info.value.code == "timeout"
        with pytest.raises(RequestTimeout, match="publish"):
            await client.publish("t", 1, timeout=0.05)
        assert client.connected and not log.of(Disconnected)
        await client.close()


async def test_an_overlapping_replay_is_delivered_once_and_a_lost_ack_is_resent(
    clients: MakeClient,
) -> None:
    published: list[dict[str, Any]] = []
    sent = asyncio.Event()

    async def first(ws: ServerConnection) -> None:
        await welcome(ws, "s-1")
        for seq in (1, 2, 3):
            await message(ws, seq)
        published.append(await expect(ws, "publish"))
        await expect(ws, "send")
        sent.set()
        ws.transport.abort()  # neither is answered: the connection just drops

    async def second(ws: ServerConnection) -> None:
        assert query(ws) == {"session": ["s-1"], "last_seq": ["3"]}
        await welcome(ws, "s-1", resumed=True)
        for seq in (2, 3, 4, 5):  # overlaps what the client holds
            await message(ws, seq)
        again = await expect(ws, "publish")
        published.append(again)
        await ws.send(json.dumps({"type": "ack", "id": again["id"], "duplicate": True}))
        await ws.wait_closed()

    async with scripted(first, second) as url:
        client, log = await clients(url, "t", reconnect=FAST)
        inbox = client.messages()
        assert [(await next_message(inbox)).seq for _ in range(3)] == [1, 2, 3]
        publish = asyncio.create_task(client.publish("t", "once"))
        direct = asyncio.create_task(client.send("maybe", user="v"))
        await asyncio.wait_for(sent.wait(), TIMEOUT)
        with pytest.raises(ConnectionLost):  # at most once: not resent
            await asyncio.wait_for(direct, TIMEOUT)
        assert await asyncio.wait_for(publish, TIMEOUT) == Ack(duplicate=True)
        assert [(await next_message(inbox)).seq for _ in range(2)] == [4, 5]
        assert published[0]["id"] == published[1]["id"]  # the same id: de-duplicated
        assert [e.resumed for e in log.of(Connected)] == [False, True]
        await client.close()


async def test_a_lost_ack_fails_when_the_session_is_lost(clients: MakeClient) -> None:
    async def first(ws: ServerConnection) -> None:
        await welcome(ws, "s-1")
        subscribe = await expect(ws, "subscribe")
        await ws.send(json.dumps({"type": "subscribed", "id": subscribe["id"], "topic": "t"}))
        await message(ws, 1)
        await expect(ws, "publish")
        ws.transport.abort()

    async def second(ws: ServerConnection) -> None:
        assert query(ws) == {"session": ["s-1"], "last_seq": ["1"]}
        await welcome(ws, "s-2", resumed=False)
        subscribe = await expect(ws, "subscribe")  # what the lost session had
        assert subscribe["topic"] == "t"
        await ws.send(json.dumps({"type": "subscribed", "id": subscribe["id"], "topic": "t"}))
        await message(ws, 1)  # the new session counts from 1 again
        await ws.wait_closed()

    async with scripted(first, second) as url:
        client, log = await clients(url, "t", reconnect=FAST)
        await client.subscribe("t")
        inbox = client.messages()
        assert (await next_message(inbox)).seq == 1
        with pytest.raises(ConnectionLost, match="may or may not have been delivered"):
            await client.publish("t", "unknown fate")
        assert (await next_message(inbox)).seq == 1
        assert await log.wait_for(SessionLost) == SessionLost("s-1", "s-2", 1)
        assert client.session_id == "s-2"
        await client.close()
