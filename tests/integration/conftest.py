"""A real rtcs node on port 0, and real websockets clients talking to it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from rtcs import config
from rtcs.app import App
from rtcs.auth.tokens import mint
from tests.support.waiting import wait_until as wait_until  # re-exported for the tests here

TIMEOUT = 5.0
# The environment for a `python -m rtcs` child: ours, without RTCS_* settings.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("RTCS_")}


def run_cli(
    *args: str, env: dict[str, str] | None = None, pythonpath: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m rtcs ARGS`` to completion (30 s at most)."""
    extra = dict(env or {})
    if pythonpath is not None:
        extra["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, ENV.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", "rtcs", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**ENV, **extra},
    )


async def http_get(node: Node, path: str) -> tuple[int, bytes]:
    """GET ``path`` on the node's port (off the event loop): status and body."""

    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(node.http + path, timeout=TIMEOUT) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    return await asyncio.get_running_loop().run_in_executor(None, get)


class Client:
    """A thin test client: send frames, wait for the frames you expect."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self._ids = 0
        # Frames received while waiting for another one, in arrival order.
        self.pending: list[dict[str, Any]] = []

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next frame, buffered ones first."""
        if self.pending:
            return self.pending.pop(0)
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def expect(self, type_: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The first frame of ``type_`` whose ``fields`` match, buffered or not.

        Frames that do not match stay buffered, in order, for later calls.
        """

        def matches(frame: dict[str, Any]) -> bool:
            return frame["type"] == type_ and all(frame.get(k) == v for k, v in fields.items())

        for i, frame in enumerate(self.pending):
            if matches(frame):
                return self.pending.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                received: dict[str, Any] = json.loads(await self.ws.recv())
                if matches(received):
                    return received
                self.pending.append(received)

    async def request(self, frame: dict[str, Any], reply: str = "ack") -> dict[str, Any]:
        rid = self.next_id()
        await self.send({**frame, "id": rid})
        return await self.expect(reply, id=rid)

    async def subscribe(self, topic: str) -> None:
        await self.request({"type": "subscribe", "topic": topic}, "subscribed")

    async def publish(self, topic: str, data: Any) -> None:
        await self.request({"type": "publish", "topic": topic, "data": data})

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the server to close; returns the close code."""
        try:
            async with asyncio.timeout(timeout):
                async for _ in self.ws:
                    pass
        except ConnectionClosed:
            pass  # closed with an error code: the code is what we want
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code

    async def silent(self, timeout: float = 0.2) -> None:
        """Assert nothing (more) arrives within ``timeout`` (only for negative checks).

        Call it after a round trip (e.g. ping/pong) so that anything the server
        sent before has already arrived.
        """
        assert not [f for f in self.pending if f["type"] != "presence"], self.pending
        with pytest.raises(TimeoutError):
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            pytest.fail(f"unexpected frame {frame!r}")


class Node:
    def __init__(self, app: App) -> None:
        self.app = app
        # Every client connected through ``client()``: ``drop_clients`` closes them.
        self.clients: list[Client] = []

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.app.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    def token(
        self, sub: str = "alice", roles: tuple[str, ...] = (), ttl: float = 3600, **kw: Any
    ) -> str:
        return mint(self.app.settings.auth, sub, roles=roles, ttl=ttl, **kw)

    async def client(
        self,
        sub: str = "alice",
        roles: tuple[str, ...] = (),
        *,
        query: str = "",
        welcome: bool = True,
        **kw: Any,
    ) -> Client:
        """Connect with a header token (or as told) and read the welcome."""
        headers = kw.pop("additional_headers", None)
        if headers is None and sub is not None:
            headers = {"Authorization": f"Bearer {self.token(sub, roles)}"}
        ws = await connect(self.url + query, additional_headers=headers, open_timeout=TIMEOUT, **kw)
        client = Client(ws)
        self.clients.append(client)
        if welcome:
            client.welcome = await client.expect("welcome")
        return client

    async def resume(self, user: str, session: str, last_seq: int, /, **expect: Any) -> Client:
        """Connect as ``user`` resuming ``session`` after ``last_seq``; read the
        welcome (which must have the ``expect`` fields)."""
        ws = await connect(
            self.url + f"?session={session}&last_seq={last_seq}",
            additional_headers={"Authorization": f"Bearer {self.token(user)}"},
            open_timeout=TIMEOUT,
        )
        client = Client(ws)
        self.clients.append(client)
        client.welcome = await client.expect("welcome", **expect)
        return client

    async def drop_clients(self) -> None:
        """Close the sockets of every client of ``client()``, gone or not.

        A client that stopped reading (``transport.pause_reading()``) never
        sees the server's close, so its socket stays open until collected,
        with a ResourceWarning. Aborting an already closed transport does
        nothing.
        """
        for client in self.clients:
            client.ws.transport.abort()
        for client in self.clients:
            await asyncio.wait_for(client.ws.wait_closed(), TIMEOUT)


async def start_node(backends: Any = None, **overrides: Any) -> App:
    # No readiness grace before a test node's drain, no hand-over after it
    # (server.drain_grace, server.drain_handover).
    values = {
        "server.port": 0,
        "log.level": "warning",
        "server.drain_grace": 0,
        "server.drain_handover": 0,
        **overrides,
    }
    app = App(config.load(None, {}, values), backends=backends)
    await app.start()
    return app


#: Seconds a test node's stop may take in a fixture's teardown.
STOP_BOUND = 20.0


async def stop_node(node: Node, request: pytest.FixtureRequest) -> None:
    """Stop ``node``, bounded by :data:`STOP_BOUND` as ``python -m rtcs`` bounds it.

    A stop that does not finish is cancelled, and where it waited is written
    to the terminal (not captured), so a rare hang in a backend's close shows
    up in the CI log instead of stalling the run; ``rtcs.app.stop_within``
    is what bounds it for real nodes, and ``test_a_stop_that_hangs_is_given_up_at_its_bound``
    tests that.
    """
    task = asyncio.ensure_future(node.app.stop())
    done, _ = await asyncio.wait({task}, timeout=STOP_BOUND)
    if done:
        task.result()
        return
    where = io.StringIO()
    task.print_stack(file=where)
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\n{request.node.nodeid}: a node's stop did not finish in {STOP_BOUND:g} s"
                f" and was cancelled; it waited here:\n{where.getvalue()}"
            )
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


@pytest.fixture
async def node_factory(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., Any]]:
    nodes: list[Node] = []

    async def make(backends: Any = None, **overrides: Any) -> Node:
        node = Node(await start_node(backends, **overrides))
        nodes.append(node)
        return node

    yield make
    try:
        for node in nodes:
            await stop_node(node, request)
    finally:
        for node in nodes:
            await node.drop_clients()


@pytest.fixture
async def node(node_factory: Callable[..., Awaitable[Node]]) -> Node:
    return await node_factory()


def metric(node: Node, name: str, **labels: str) -> float:
    """The current value of one metric sample of the node."""
    value = node.app.metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


async def wait_detached(node: Node, session_id: str) -> None:
    """Wait until ``node`` has seen the socket of ``session_id`` close (publishers
    must not race the detach)."""
    ctx = node.app.ctx
    assert ctx is not None

    def detached() -> bool:
        session = ctx.sessions.get(session_id)
        return session is not None and session.sink is None

    await wait_until(detached, message=f"session {session_id} detached from its socket")


async def detach(node: Node, client: Client) -> str:
    """Close ``client``'s socket; its session id once ``node`` has detached it."""
    session: str = client.welcome["session_id"]
    await client.ws.close()
    await wait_detached(node, session)
    return session


#: What two nodes in this process can share: a memory hub, a real redis-server,
#: a real Redis Cluster (``start_pair``).
SHARED_BACKENDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", marks=pytest.mark.redis),
]


async def start_pair(
    kind: str, node_factory: Callable[..., Awaitable[Node]], **settings: Any
) -> tuple[Node, Node]:
    """Two nodes ("node-a", "node-b") sharing the backend ``kind``."""
    from rtcs.backends.memory import MemoryHub, memory_backends
    from tests.support.redis_server import shared_cluster, shared_server

    if kind == "memory":
        hub = MemoryHub()
        a = await node_factory(memory_backends(hub), **settings, **{"server.node_id": "node-a"})
        b = await node_factory(memory_backends(hub), **settings, **{"server.node_id": "node-b"})
        return a, b
    url = shared_server().url if kind == "redis" else shared_cluster().url
    shared = {"backend.kind": "redis", "backend.redis_url": url, **settings}
    a = await node_factory(None, **shared, **{"server.node_id": "node-a"})
    b = await node_factory(None, **shared, **{"server.node_id": "node-b"})
    return a, b
