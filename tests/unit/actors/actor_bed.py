"""A node context of real parts, recording sinks, and one interface over both bases.

The route handlers write to sessions' sinks instead of replying to the
sender, so tests wait on the sinks: on the stock simple base ``tell`` has
already run the whole cascade when it returns; on the asyncio base the sink's
event wakes the test when frames arrive.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorSystem

from rtcs import config
from rtcs.actors.context import NodeContext
from rtcs.actors.messages import Configure
from rtcs.auth.permissions import Policy
from rtcs.auth.tokens import TokenVerifier
from rtcs.backends.memory import memory_backends
from rtcs.logs import get_logger
from rtcs.metrics import Metrics
from rtcs.runtime import ask
from rtcs.runtime.directory import Directory
from rtcs.runtime.supervision import SupervisorEvent
from rtcs.sessions import ConnectionIds, Session, SessionRegistry

TIMEOUT = 2.0
NODE_ID = "node-test"
# Small, so that any delivery to more recipients runs over several turns.
FANOUT_CHUNK = 4

Journal = list[tuple[str, dict[str, Any]]]


def make_context(**overrides: Any) -> NodeContext:
    """A ``NodeContext`` built from real parts, as ``rtcs.app.App.start`` builds it."""
    settings = config.load(None, {}, {"limits.fanout_chunk": FANOUT_CHUNK, **overrides})
    return NodeContext(
        settings=settings,
        node_id=NODE_ID,
        metrics=Metrics(),
        backends=memory_backends(),
        policy=Policy.default(),
        verifier=TokenVerifier(settings.auth),
        directory=Directory(),
        sessions=SessionRegistry(settings.session.replay_buffer),
        log=get_logger("rtcs.test", node=NODE_ID),
    )


_IDS = ConnectionIds()


class RecordingSink:
    """A ``rtcs.sessions.Sink`` that keeps every frame and wakes waiting tests."""

    def __init__(self, journal: Journal) -> None:
        self.connection_id = _IDS()
        self.raw: list[bytes] = []
        self.closed_with: int | None = None
        self._journal = journal
        self._changed = asyncio.Event()

    def push(self, frame: bytes) -> bool:
        self.raw.append(frame)
        self._journal.append((self.connection_id, json.loads(frame)))
        self._changed.set()
        return True

    def push_message(self, frame: bytes) -> bool:
        return self.push(frame)

    def close(self, code: int, reason: str = "") -> None:
        self.closed_with = code

    @property
    def frames(self) -> list[dict[str, Any]]:
        """Every frame received so far, decoded."""
        return [json.loads(frame) for frame in self.raw]

    async def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """The first ``count`` frames, once they have arrived.

        Raises:
            TimeoutError: fewer than ``count`` frames within ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while len(self.raw) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.frames[:count]

    async def wait_type(self, type_: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The first frame of ``type_``, once it has arrived.

        Raises:
            TimeoutError: none within ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while True:
                for frame in self.frames:
                    if frame["type"] == type_:
                        return frame
                self._changed.clear()
                await self._changed.wait()

    def messages(self) -> list[dict[str, Any]]:
        """The ``message`` frames received so far."""
        return [frame for frame in self.frames if frame["type"] == "message"]


class RecordingHandle(RecordingSink):
    """A ``rtcs.actors.ports.ClientHandle`` that records what the actors do with it.

    ``close`` marks it closing, as the gateway's handle does; ``handled``
    counts the client frames the actor acknowledged.
    """

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.user: str | None = None
        self.handled_count = 0
        self.admitted: object = None
        self.refused: int | None = None
        # Set by a test to hold a replay; ``drain()`` releases it.
        self.write_paused = False
        self._drained = asyncio.Event()

    @property
    def closing(self) -> bool:
        return self.closed_with is not None

    async def drained(self) -> None:
        while self.write_paused:
            self._drained.clear()
            await self._drained.wait()

    def drain(self) -> None:
        """The outbox drained: a waiting replay goes on."""
        self.write_paused = False
        self._drained.set()

    def push(self, frame: bytes) -> bool:
        if self.closing:
            return False
        return super().push(frame)

    def close(self, code: int, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = code
            self._changed.set()

    def handled(self) -> None:
        self.handled_count += 1

    def admit(self, actor: object) -> None:
        self.admitted = actor

    def refuse(self, code: int) -> None:
        self.refused = code

    async def wait_closed(self, timeout: float = TIMEOUT) -> int:
        """The close code, once the actor closed the connection.

        Raises:
            TimeoutError: not closed within ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while self.closed_with is None:
                self._changed.clear()
                await self._changed.wait()
        return self.closed_with


class _Echo(Actor):
    """Answers every message with itself: a round trip through the queue."""

    def receiveMessage(self, msg: Any, sender: ActorAddress) -> None:
        self.send(sender, msg)


class ActorBed:
    """An actor system on one base with a node context and attached sessions."""

    def __init__(self, base: str, system: ActorSystem, ctx: NodeContext) -> None:
        self.base = base
        self.system = system
        self.ctx = ctx
        # Every frame pushed to any sink, in push order: (connection id, frame).
        self.journal: Journal = []
        self._echo: ActorAddress | None = None

    def start(self, actor_class: type[Actor]) -> ActorAddress:
        """Create an actor and send it ``Configure(ctx)``, as its supervisor would."""
        address = self.system.createActor(actor_class)
        self.system.tell(address, Configure(self.ctx))
        return address

    def tell(self, address: ActorAddress, message: Any) -> None:
        self.system.tell(address, message)

    async def barrier(self) -> None:
        """Return once every message told so far has been handled.

        The stock base handles a ``tell`` before returning. The asyncio base
        delivers all sends of the system from one FIFO queue
        (docs/runtime.md), so a round trip to another actor comes back after
        everything queued before it; messages *those* handlers sent may still
        be queued.
        """
        if self.base == "simple":
            return
        if self._echo is None:
            self._echo = self.system.createActor(_Echo)
        assert await ask(self.system, self._echo, "barrier", TIMEOUT) == "barrier"

    def session(self, user: str, roles: tuple[str, ...] = ()) -> tuple[Session, RecordingSink]:
        """A new session of ``user`` registered in the context and attached to a sink."""
        session = self.ctx.sessions.create(user, roles)
        sink = RecordingSink(self.journal)
        self.ctx.sessions.attach(session, sink)
        return session, sink


class EventLog:
    """A supervisor ``on_event`` hook that tests can await."""

    def __init__(self) -> None:
        self.events: list[SupervisorEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: SupervisorEvent) -> None:
        self.events.append(event)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[list[SupervisorEvent]], bool], timeout: float = TIMEOUT
    ) -> None:
        """Return once ``predicate(events)`` holds.

        Raises:
            TimeoutError: it does not hold within ``timeout``.
        """
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()
