"""A real rtcs node on port 0, and real websockets clients talking to it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from rtcs import config
from rtcs.app import App
from rtcs.auth.tokens import mint

TIMEOUT = 5.0


class Client:
    """A thin test client: send frames, wait for the frames you expect."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self._ids = 0

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        return json.loads(raw)

    async def expect(self, type_: str, timeout: float = TIMEOUT, **fields: Any) -> dict[str, Any]:
        """The next frame of ``type_`` (skipping presence events), checked against fields."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] != type_ and frame["type"] == "presence" and type_ != "presence":
                continue
            assert frame["type"] == type_, frame
            for key, value in fields.items():
                assert frame.get(key) == value, (key, frame)
            return frame

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
        except Exception:
            pass
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code

    async def silent(self, timeout: float = 0.2) -> None:
        """Assert nothing arrives within ``timeout`` (only for negative checks)."""
        with pytest.raises(TimeoutError):
            frame = await asyncio.wait_for(self.ws.recv(), timeout)
            pytest.fail(f"unexpected frame {frame}")


class Node:
    def __init__(self, app: App) -> None:
        self.app = app

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.app.port}/ws"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    def token(self, sub: str = "alice", roles: tuple[str, ...] = (), ttl: float = 3600, **kw: Any) -> str:
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
        if welcome:
            client.welcome = await client.expect("welcome")
        return client


async def start_node(**overrides: Any) -> App:
    values = {"server.port": 0, "log.level": "warning", **overrides}
    app = App(config.load(None, {}, values))
    await app.start()
    return app


@pytest.fixture
async def node_factory() -> AsyncIterator[Callable[..., Any]]:
    apps: list[App] = []
    clients: list[Client] = []

    async def make(**overrides: Any) -> Node:
        app = await start_node(**overrides)
        apps.append(app)
        return Node(app)

    yield make
    for client in clients:
        await client.ws.close()
    for app in apps:
        await app.stop()


@pytest.fixture
async def node(node_factory: Callable[..., Any]) -> Node:
    return await node_factory()
