"""Write-behind for detached sessions shared with other nodes.

While a session is detached, messages keep arriving for it; when other nodes
may resume it (a distributed backend), each buffered message must also reach
the shared ``SessionStore``. Doing that with one backend call per delivery
inside a fan-out would put I/O on the hot path, so deliveries are only
*noted* here (a list append) and written by one flush task per loop turn, in
order.

When the store answers that a session is gone (resumed on another node, or
expired there), ``on_lost(session_id)`` is called so this node forgets its
local copy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeAlias

from rtcs.backends.base import SessionSnapshot, SessionStore

_log = logging.getLogger("rtcs.backends")


@dataclass(frozen=True, slots=True)
class _Save:
    snapshot: SessionSnapshot
    ttl: float


@dataclass(frozen=True, slots=True)
class _Append:
    session_id: str
    seq: int
    tail: bytes


@dataclass(frozen=True, slots=True)
class _Delete:
    session_id: str


_Op: TypeAlias = _Save | _Append | _Delete


class SessionWriteBehind:
    """Batches ``SessionStore.append`` calls for detached sessions.

    Obligations: used on the event-loop thread only; ``close()`` before the
    loop stops (pending entries are flushed first).
    """

    def __init__(self, store: SessionStore, cap: int, on_lost: Callable[[str], None]) -> None:
        self._store = store
        self._cap = cap
        self._on_lost = on_lost
        self._pending: list[_Op] = []
        self._task: asyncio.Task[None] | None = None

    def save(self, snapshot: SessionSnapshot, ttl: float) -> None:
        """Queue storing a session that just detached (before its messages)."""
        self._queue(_Save(snapshot, ttl))

    def note(self, session_id: str, seq: int, tail: bytes) -> None:
        """Queue one delivered message of a detached session; never blocks."""
        self._queue(_Append(session_id, seq, tail))

    def delete(self, session_id: str) -> None:
        """Queue removing a stored session (it was resumed on this node)."""
        self._queue(_Delete(session_id))

    def _queue(self, op: _Op) -> None:
        self._pending.append(op)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                lost: set[str] = set()
                for op in batch:
                    try:
                        await self._apply(op, lost)
                    except Exception as exc:  # the store is down: the message stays local only
                        what = type(op).__name__.strip("_").lower()
                        _log.warning("session store %s failed: %s", what, type(exc).__name__)
                for session_id in lost:
                    self._on_lost(session_id)
        finally:
            self._task = None

    async def _apply(self, op: _Op, lost: set[str]) -> None:
        """Carry out one operation; note sessions the store no longer has in ``lost``."""
        match op:
            case _Save(snapshot, ttl):
                await self._store.save(snapshot, ttl)
                lost.discard(snapshot.session_id)
            case _Delete(session_id):
                await self._store.delete(session_id)
            case _Append(session_id, seq, tail):
                if session_id not in lost and not await self._store.append(
                    session_id, seq, tail, self._cap
                ):
                    lost.add(session_id)

    async def close(self) -> None:
        """Flush what is pending."""
        if self._task is not None:
            await asyncio.shield(self._task)


class BackgroundCalls:
    """Fire-and-forget backend calls, run in order by one task per burst.

    For updates nobody waits on (a connection joins or leaves a user's
    presence): one task per burst of calls instead of one per call, and the
    calls still run inside a real task, in the order they were submitted.
    Failures are logged, never raised.

    Obligations: used on the event-loop thread only; ``close()`` before the
    loop stops (what is pending runs first).
    """

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[..., Awaitable[object]], tuple[object, ...]]] = []
        self._task: asyncio.Task[None] | None = None

    def submit(self, call: Callable[..., Awaitable[object]], *args: object) -> None:
        """Queue ``call(*args)``; never blocks."""
        self._pending.append((call, args))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                for call, args in batch:
                    try:
                        await call(*args)
                    except Exception as exc:  # a backend hiccup must not stop the rest
                        _log.warning(
                            "background backend call %s failed: %s",
                            getattr(call, "__name__", "?"),
                            type(exc).__name__,
                        )
        finally:
            self._task = None

    async def close(self) -> None:
        """Run what is pending."""
        if self._task is not None:
            await asyncio.shield(self._task)
