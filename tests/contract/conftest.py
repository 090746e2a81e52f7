"""Fixtures of the backend conformance suite.

Every test in this directory runs once per implementation listed in
``IMPLEMENTATIONS``. Adding a backend is one entry: a factory returning a
``Harness`` for it (and marks, e.g. ``pytest.mark.redis`` for one that needs a
redis-server).

A harness builds parts that share one backing service, the way separate nodes
share a Redis server: every ``broker()`` is a new node on the same bus, and
every ``sessions()`` / ``presence()`` sees the same data. ``advance(seconds)``
moves the time the stores expire by: a fake clock for memory, real waiting for
a server that only knows real TTLs, so expiry tests use short TTLs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import pytest

from rtcs.backends.base import (
    Backends,
    Broker,
    Envelope,
    EnvelopeKind,
    PresenceStore,
    SessionStore,
)
from rtcs.backends.memory import MemoryBroker, MemoryHub
from rtcs.backends.redis import close_backends, redis_backends
from tests.support import FakeClock, wait_until
from tests.support.redis_server import shared_cluster, shared_server

WAIT = 2.0  # seconds a test waits for an expected delivery before failing


class Harness(Protocol):
    def broker(self) -> Broker: ...
    def sessions(self) -> SessionStore: ...
    def presence(self) -> PresenceStore: ...
    async def advance(self, seconds: float) -> None: ...
    async def aclose(self) -> None: ...


class MemoryHarness:
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.hub = MemoryHub(clock=self.clock)
        self._brokers: list[Broker] = []

    def broker(self) -> Broker:
        broker = MemoryBroker(self.hub)
        self._brokers.append(broker)
        return broker

    def sessions(self) -> SessionStore:
        return self.hub.sessions

    def presence(self) -> PresenceStore:
        return self.hub.presence

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    async def aclose(self) -> None:
        for broker in self._brokers:
            await broker.close()


class RedisHarness:
    """Parts on a real redis-server or Cluster, emptied before each test.

    Every part comes from its own ``redis_backends(url)``, i.e. its own client,
    as on separate nodes. ``advance`` really waits: Redis expires keys by its
    own clock.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._nodes: list[Backends] = []

    def _node(self) -> Backends:
        backends = redis_backends(self.url)
        self._nodes.append(backends)
        return backends

    def broker(self) -> Broker:
        return self._node().broker

    def sessions(self) -> SessionStore:
        return self._node().sessions

    def presence(self) -> PresenceStore:
        return self._node().presence

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def aclose(self) -> None:
        for backends in self._nodes:
            await close_backends(backends)


@dataclass(frozen=True)
class Implementation:
    factory: Callable[[], Harness]
    marks: tuple[pytest.MarkDecorator, ...] = ()


IMPLEMENTATIONS: dict[str, Implementation] = {
    "memory": Implementation(MemoryHarness),
    "redis": Implementation(lambda: RedisHarness(shared_server().url), marks=(pytest.mark.redis,)),
    "redis-cluster": Implementation(
        lambda: RedisHarness(shared_cluster().url), marks=(pytest.mark.redis,)
    ),
}


@pytest.fixture(
    params=[pytest.param(name, marks=impl.marks) for name, impl in IMPLEMENTATIONS.items()]
)
async def impl(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    harness = IMPLEMENTATIONS[request.param].factory()
    try:
        yield harness
    finally:
        await harness.aclose()


class Inbox:
    """A ``deliver`` callback that records envelopes and lets a test await them."""

    def __init__(self) -> None:
        self.items: list[Envelope] = []
        self.threads: set[int] = set()

    def __call__(self, envelope: Envelope) -> None:
        self.threads.add(threading.get_ident())
        # Raises when called off the event loop, which the contract forbids.
        asyncio.get_running_loop()
        self.items.append(envelope)

    async def wait_for(self, count: int, timeout: float = WAIT) -> list[Envelope]:
        """Every envelope so far, once at least ``count`` arrived.

        Raises:
            AssertionError: fewer than ``count`` within ``timeout``.
        """
        await wait_until(
            lambda: len(self.items) >= count,
            timeout,
            message=lambda: f"{count} envelopes, got {len(self.items)}: {self.items!r}",
        )
        return list(self.items)


@dataclass(frozen=True)
class Node:
    id: str
    broker: Broker
    inbox: Inbox


#: What a node started by ``start_node`` listens to unless told otherwise.
DEFAULT_INTEREST: tuple[tuple[EnvelopeKind, str], ...] = (("topic", "news.>"),)


@pytest.fixture
def start_node(impl: Harness) -> Callable[..., Awaitable[Node]]:
    """Start a broker on the shared bus as node ``node_id``, recording deliveries.

    The node listens to ``interest`` (``DEFAULT_INTEREST`` by default) before
    it is returned, each listen confirmed.
    """

    async def start(
        node_id: str, interest: tuple[tuple[EnvelopeKind, str], ...] = DEFAULT_INTEREST
    ) -> Node:
        broker = impl.broker()
        inbox = Inbox()
        await broker.start(node_id, inbox)
        for kind, target in interest:
            await broker.listen(kind, target)
        return Node(node_id, broker, inbox)

    return start
