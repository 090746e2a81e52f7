"""In-memory broker: the embedded single-node default, and simulated nodes.

Without a hub there is no other node to reach: ``distributed`` is False and
``publish`` does nothing, because local delivery never goes through a broker.

Several brokers sharing one ``MemoryHub`` act as nodes of one cluster inside a
process: each envelope reaches every other started broker, asynchronously
(``loop.call_soon``) and in publish order, never the origin. Tests use this to
run several nodes without Redis.

Interest costs nothing in memory, so the memory broker ignores it: ``listen``
completes at once and every node gets every envelope (a broker may deliver
more than was asked for). ``publish(envelope, node=...)`` does reach that node
only, as a Redis node channel would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from rtcs.backends.base import DeliverFn, Envelope, EnvelopeKind
from rtcs.backends.memory.presence import MemoryPresenceStore
from rtcs.backends.memory.revocations import MemoryRevocationStore
from rtcs.backends.memory.sessions import MemorySessionStore
from rtcs.errors import Unavailable


class MemoryHub:
    """What simulated nodes in one process share: the bus, sessions and presence.

    A hub is the in-process stand-in for a Redis server: brokers attached to it
    reach each other, and ``memory_backends(hub)`` hands every node the same
    ``sessions`` and ``presence`` stores.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._brokers: dict[str, MemoryBroker] = {}
        self.sessions = MemorySessionStore(clock)
        self.presence = MemoryPresenceStore()
        self.revocations = MemoryRevocationStore()

    def attach(self, node_id: str, broker: MemoryBroker) -> None:
        """Register ``broker`` as node ``node_id``.

        Raises:
            ValueError: another broker already uses ``node_id`` (node ids must be
                unique, or echo suppression by origin would drop real traffic).
        """
        if node_id in self._brokers:
            raise ValueError(f"node id {node_id!r} is already attached to this hub")
        self._brokers[node_id] = broker

    def detach(self, node_id: str) -> None:
        """Unregister node ``node_id``; nothing happens when it is not attached."""
        self._brokers.pop(node_id, None)

    def nodes(self) -> list[str]:
        """Ids of the attached nodes, sorted."""
        return sorted(self._brokers)

    def fan_out(self, envelope: Envelope, node: str | None = None) -> None:
        """Schedule ``envelope`` for every attached broker except its origin
        (for broker ``node`` only, when given)."""
        if node is not None:
            broker = self._brokers.get(node)
            if broker is not None and node != envelope.origin:
                broker._schedule(envelope)
            return
        for node_id, broker in self._brokers.items():
            if node_id != envelope.origin:
                broker._schedule(envelope)


class MemoryBroker:
    """A ``Broker`` kept in process memory (see the module docstring)."""

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.distributed = hub is not None
        self._hub = hub
        self._node_id = ""
        self._deliver: DeliverFn | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self, node_id: str, deliver: DeliverFn) -> None:
        """Attach as ``node_id``; ``deliver`` runs on the current event loop.

        Raises:
            RuntimeError: already started or closed.
            ValueError: the hub already has a node called ``node_id``.
        """
        if self._deliver is not None or self._closed:
            raise RuntimeError("a broker can be started only once")
        if self._hub is not None:
            self._hub.attach(node_id, self)
        self._node_id = node_id
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()

    async def publish(self, envelope: Envelope, node: str | None = None) -> None:
        """Hand ``envelope`` to every other node of the hub (to ``node`` only,
        when given; none without a hub).

        Raises:
            Unavailable: the broker is not started or is closed.
        """
        if self._deliver is None or self._closed:
            raise Unavailable("broker is not running")
        if self._hub is not None:
            self._hub.fan_out(envelope, node)

    def listen(self, kind: EnvelopeKind, target: str) -> Awaitable[None]:
        """Live at once: this broker delivers everything.

        Raises (when awaited):
            Unavailable: the broker is not started or is closed.
        """
        return _live(self._deliver is not None and not self._closed)

    def unlisten(self, kind: EnvelopeKind, target: str) -> None:
        """Nothing to withdraw."""

    def reset(self, kind: EnvelopeKind) -> None:
        """Nothing to withdraw."""

    async def close(self) -> None:
        """Detach from the hub; envelopes already scheduled are dropped."""
        if self._closed:
            return
        self._closed = True
        if self._hub is not None and self._deliver is not None:
            self._hub.detach(self._node_id)

    def healthy(self) -> bool:
        """True between ``start`` and ``close``."""
        return self._deliver is not None and not self._closed

    def _schedule(self, envelope: Envelope) -> None:
        loop = self._loop
        if loop is None:
            return
        # call_soon keeps publish order (FIFO) and never runs the receiver
        # inside the publisher's call stack, as a network broker would not.
        if loop is _running_loop():
            loop.call_soon(self._receive, envelope)
        else:
            loop.call_soon_threadsafe(self._receive, envelope)

    def _receive(self, envelope: Envelope) -> None:
        # Closed in the meantime: drop, as pub/sub is at-most-once. Own echoes
        # are dropped too, by the same rule a networked broker follows.
        if self._closed or self._deliver is None or envelope.origin == self._node_id:
            return
        self._deliver(envelope)


async def _live(running: bool) -> None:
    if not running:
        raise Unavailable("broker is not running")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        # Published from outside any loop (a plain thread): the receiver's loop
        # must be woken thread-safely.
        return None
