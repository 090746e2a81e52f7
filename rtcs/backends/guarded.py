"""The shared backend behind a circuit breaker.

``guard(backends, breaker, clock)`` wraps a node's broker, session store and
presence store so that every call first asks the breaker: while it is open,
calls fail at once with ``Unavailable`` and nothing waits on a dead backend;
an ``Unavailable`` from the backend counts as a failure, anything else that
returns as a success. Errors that are the caller's fault (``ValueError``) pass
through and count for nothing.

The wrappers keep the protocols of ``rtcs.backends.base`` exactly, so the
actors cannot tell a guarded backend from a bare one. ``probe()`` is one cheap
call (the stored-session count) through the breaker that also fails while the
broker is not subscribed: a node runs it periodically, so an idle node notices
an outage and an open breaker closes without client traffic, but only once
messages from other nodes flow again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from rtcs.backends.base import (
    Backends,
    Broker,
    DeliverFn,
    Envelope,
    EnvelopeKind,
    PresenceStore,
    SessionSnapshot,
    SessionStore,
)
from rtcs.backends.breaker import CircuitBreaker
from rtcs.errors import Unavailable

T = TypeVar("T")

__all__ = ["Guard", "guard"]


class Guard:
    """Runs backend calls through one breaker."""

    __slots__ = ("breaker", "clock")

    def __init__(self, breaker: CircuitBreaker, clock: Callable[[], float]) -> None:
        self.breaker = breaker
        self.clock = clock

    async def run(self, call: Awaitable[T]) -> T:
        """Await ``call`` if the breaker allows it; record the outcome.

        Raises:
            Unavailable: the breaker is open, or the backend failed.
        """
        breaker = self.breaker
        if not breaker.allow(self.clock()):
            close = getattr(call, "close", None)
            if close is not None:
                close()  # never started: no "never awaited" warning
            raise Unavailable("backend unavailable (circuit open)")
        try:
            result = await call
        except Unavailable:
            breaker.failed(self.clock())
            raise
        breaker.succeeded()
        return result


class GuardedBroker:
    """A ``Broker`` whose ``publish`` and ``listen`` go through the breaker.

    ``listen`` records the interest in the inner broker whatever the breaker
    says (the broker subscribes once the backend is back); only waiting for
    the subscription to be live is refused while the breaker is open.
    """

    def __init__(self, inner: Broker, guard: Guard) -> None:
        self._inner = inner
        self._guard = guard
        self.distributed = inner.distributed

    async def start(self, node_id: str, deliver: DeliverFn) -> None:
        await self._inner.start(node_id, deliver)

    async def publish(self, envelope: Envelope, node: str | None = None) -> None:
        await self._guard.run(self._inner.publish(envelope, node))

    def listen(self, kind: EnvelopeKind, target: str) -> Awaitable[None]:
        return self._guard.run(self._inner.listen(kind, target))

    def unlisten(self, kind: EnvelopeKind, target: str) -> None:
        self._inner.unlisten(kind, target)

    def reset(self, kind: EnvelopeKind) -> None:
        self._inner.reset(kind)

    async def close(self) -> None:
        await self._inner.close()

    def healthy(self) -> bool:
        return self._inner.healthy()


class GuardedSessionStore:
    """A ``SessionStore`` whose every call goes through the breaker."""

    def __init__(self, inner: SessionStore, guard: Guard) -> None:
        self._inner = inner
        self._run = guard.run

    async def save(self, snapshot: SessionSnapshot, ttl: float, *, take_over: bool = False) -> bool:
        return await self._run(self._inner.save(snapshot, ttl, take_over=take_over))

    async def claim(self, session_id: str, user: str) -> SessionSnapshot | None:
        return await self._run(self._inner.claim(session_id, user))

    async def append(self, session_id: str, seq: int, tail: bytes, cap: int) -> bool:
        return await self._run(self._inner.append(session_id, seq, tail, cap))

    async def mirror(
        self, node: str, ttl: float | None, cap: int, entries: Sequence[tuple[str, int, bytes]]
    ) -> tuple[set[str], set[str]]:
        return await self._run(self._inner.mirror(node, ttl, cap, entries))

    async def touch(
        self, node: str, ttl: float, session_ids: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        return await self._run(self._inner.touch(node, ttl, session_ids))

    async def delete(self, session_id: str) -> None:
        await self._run(self._inner.delete(session_id))

    async def first_publish(
        self, session_id: str, publish_id: str, window: float, cap: int
    ) -> bool:
        return await self._run(self._inner.first_publish(session_id, publish_id, window, cap))

    async def count(self) -> int:
        return await self._run(self._inner.count())

    def healthy(self) -> bool:
        return self._inner.healthy()


class GuardedPresenceStore:
    """A ``PresenceStore`` whose every call goes through the breaker."""

    def __init__(self, inner: PresenceStore, guard: Guard) -> None:
        self._inner = inner
        self._run = guard.run

    async def add_connection(self, user: str, connection_id: str, node: str) -> int:
        return await self._run(self._inner.add_connection(user, connection_id, node))

    async def remove_connection(self, user: str, connection_id: str) -> int:
        return await self._run(self._inner.remove_connection(user, connection_id))

    async def user_connections(self, user: str) -> int:
        return await self._run(self._inner.user_connections(user))

    async def user_nodes(self, user: str) -> list[str]:
        return await self._run(self._inner.user_nodes(user))

    async def connection_node(self, connection_id: str) -> str | None:
        return await self._run(self._inner.connection_node(connection_id))

    async def join(self, room: str, user: str, member: str, node: str) -> bool:
        return await self._run(self._inner.join(room, user, member, node))

    async def leave(self, room: str, user: str, member: str) -> bool:
        return await self._run(self._inner.leave(room, user, member))

    async def members(self, room: str) -> list[str]:
        return await self._run(self._inner.members(room))

    async def drop_node(self, node: str) -> None:
        await self._run(self._inner.drop_node(node))

    def healthy(self) -> bool:
        return self._inner.healthy()


def guard(
    backends: Backends, breaker: CircuitBreaker, clock: Callable[[], float]
) -> tuple[Backends, Callable[[], Awaitable[object]]]:
    """``backends`` behind ``breaker``, and the probe to run while it is open."""
    g = Guard(breaker, clock)
    sessions = GuardedSessionStore(backends.sessions, g)
    guarded = Backends(
        broker=GuardedBroker(backends.broker, g),
        sessions=sessions,
        presence=GuardedPresenceStore(backends.presence, g),
        # Rare calls on their own schedule (rtcs.revocations.Revoker): not
        # behind the breaker, their failures are logged and retried.
        revocations=backends.revocations,
    )

    async def probe() -> None:
        async def check() -> None:
            await backends.sessions.count()
            if backends.broker.distributed and not backends.broker.healthy():
                raise Unavailable("broker not subscribed")

        await g.run(check())

    return guarded, probe
