"""Write-behind for sessions shared with other nodes.

While a session is detached, messages keep arriving for it; when other nodes
may resume it (a distributed backend), each buffered message must also reach
the shared ``SessionStore``. With ``session.crash_safe`` the same holds for
attached sessions (their record also moves its expiry on, so it outlives a
crash of this node by the session TTL). Doing that with one backend call per
delivery inside a fan-out would put I/O on the hot path, so deliveries are
only *noted* here (a list append) and written by one flush task per loop
turn, in order; with ``crash_safe`` each run of consecutive notes is one
``SessionStore.mirror`` call.

A ``save`` replaces the whole record, in queue order: the snapshot must be
taken when it is queued (it then holds exactly the notes queued before it).

What the store answers is reported back, never raised:

- ``on_lost(session_id)``: a detached session's record is gone (resumed on
  another node, or expired there): forget the local copy.
- ``on_moved(session_id)``: the record belongs to another node (the client
  resumed there); the local copy, attached or not, must go and never be
  saved again from here.
- ``on_absent(session_id)``: an attached (crash-safe) session's record
  vanished (e.g. Redis restarted empty): save it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeAlias

from rtcs.backends.base import SessionSnapshot, SessionStore

_log = logging.getLogger("rtcs.backends")


@dataclass(frozen=True, slots=True)
class _Save:
    snapshot: SessionSnapshot
    ttl: float
    take_over: bool


@dataclass(frozen=True, slots=True)
class _Append:
    session_id: str
    seq: int
    tail: bytes
    attached: bool  # crash-safe notes of an attached session move its expiry


@dataclass(frozen=True, slots=True)
class _Delete:
    session_id: str


@dataclass(frozen=True, slots=True)
class _Touch:
    session_ids: tuple[str, ...]


_Op: TypeAlias = _Save | _Append | _Delete | _Touch


def _ignore(session_id: str) -> None:
    pass


class SessionWriteBehind:
    """Batches writes of shared sessions to the ``SessionStore``, in order.

    ``node`` is this node's id (the owner written into records), ``ttl`` the
    session TTL that attached notes and touches move the expiry to, and
    ``crash_safe`` says whether attached sessions are mirrored (notes are then
    written with ``mirror``, owner-checked; otherwise detached notes are
    ``append``ed one by one, as before crash-safe sessions existed).

    Obligations: used on the event-loop thread only; ``close()`` before the
    loop stops (pending entries are flushed first).
    """

    def __init__(
        self,
        store: SessionStore,
        cap: int,
        on_lost: Callable[[str], None],
        *,
        node: str = "",
        ttl: float = 120.0,
        crash_safe: bool = False,
        on_moved: Callable[[str], None] | None = None,
        on_absent: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._cap = cap
        self._on_lost = on_lost
        self._on_moved = on_moved or on_lost
        self._on_absent = on_absent or _ignore
        self.node = node
        self.ttl = ttl
        self.crash_safe = crash_safe
        self._clock = clock
        self._pending: deque[_Op] = deque()
        self._task: asyncio.Task[None] | None = None
        # session id -> when its record was last written (crash-safe only):
        # idle attached sessions are touched before they could expire.
        self._written: dict[str, float] = {}

    def save(self, snapshot: SessionSnapshot, ttl: float, *, take_over: bool = False) -> None:
        """Queue storing a session (detached, or attached and crash-safe).

        Take ``snapshot`` at the moment this is called: the save replaces the
        whole record after the notes queued before it, and before those queued
        after it, so a later snapshot would duplicate the latter.
        """
        self._queue(_Save(snapshot, ttl, take_over))

    def note(self, session_id: str, seq: int, tail: bytes) -> None:
        """Queue one delivered message of a detached session; never blocks."""
        self._queue(_Append(session_id, seq, tail, False))

    def note_attached(self, session_id: str, seq: int, tail: bytes) -> None:
        """Queue one delivered message of an attached crash-safe session; never blocks."""
        self._queue(_Append(session_id, seq, tail, True))

    def delete(self, session_id: str) -> None:
        """Queue removing a stored session (it was resumed on this node)."""
        self._queue(_Delete(session_id))

    def keep_alive(self, session_ids: Iterable[str], within: float) -> None:
        """Queue a ``touch`` of the sessions not written for ``within`` seconds.

        ``session_ids`` are all the attached crash-safe sessions of this node;
        what is remembered of others is dropped.
        """
        now = self._clock()
        written = self._written
        kept: dict[str, float] = {}
        due: list[str] = []
        for session_id in session_ids:
            at = written.get(session_id)
            if at is None or now - at >= within:
                due.append(session_id)
                at = now  # touched now; if it fails, the next round tries again
            kept[session_id] = at
        self._written = kept
        if due:
            self._queue(_Touch(tuple(due)))

    def _drop_notes(self, session_id: str) -> None:
        """Drop the session's pending notes, up to its next pending save."""
        kept: deque[_Op] = deque()
        dropping = False
        for op in self._pending:
            if isinstance(op, _Save) and op.snapshot.session_id == session_id:
                dropping = True  # from here on, the notes follow that save
            if not dropping and isinstance(op, _Append) and op.session_id == session_id:
                continue
            kept.append(op)
        self._pending = kept

    def _queue(self, op: _Op) -> None:
        self._pending.append(op)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        try:
            while self._pending:
                # Everything not yet applied stays in _pending (save() may drop from it).
                run = self._take_run()
                try:
                    await self._apply(run)
                except Exception as exc:  # the store is down: the messages stay local only
                    what = type(run[0]).__name__.strip("_").lower()
                    _log.warning("session store %s failed: %s", what, type(exc).__name__)
        finally:
            self._task = None

    def _take_run(self) -> list[_Op]:
        """The next operation, or the run of consecutive notes written as one batch."""
        pending = self._pending
        first = pending.popleft()
        run = [first]
        if self.crash_safe and isinstance(first, _Append):
            while (
                pending and isinstance(op := pending[0], _Append) and op.attached == first.attached
            ):
                run.append(pending.popleft())
        return run

    async def _apply(self, run: list[_Op]) -> None:
        """Carry out one operation or one batch of notes; report what the store said."""
        store, first = self._store, run[0]
        match first:
            case _Save(snapshot, ttl, take_over):
                if await store.save(snapshot, ttl, take_over=take_over):
                    self._wrote((snapshot.session_id,))
                else:
                    self._on_moved(snapshot.session_id)
            case _Delete(session_id):
                await store.delete(session_id)
            case _Touch(session_ids):
                absent, moved = await store.touch(self.node, self.ttl, session_ids)
                self._report(absent, moved, attached=True)
            case _Append(session_id, seq, tail, attached) if not self.crash_safe:
                if not await store.append(session_id, seq, tail, self._cap):
                    self._on_lost(session_id)
                    # Its next notes would fail too, up to its next save.
                    self._drop_notes(session_id)
            case _Append(_, _, _, attached):
                entries = [
                    (op.session_id, op.seq, op.tail) for op in run if isinstance(op, _Append)
                ]
                moves = self.ttl if attached else None
                absent, moved = await store.mirror(self.node, moves, self._cap, entries)
                if attached:
                    self._wrote({entry[0] for entry in entries} - absent - moved)
                self._report(absent, moved, attached=attached)

    def _wrote(self, session_ids: Iterable[str]) -> None:
        if self.crash_safe:
            now = self._clock()
            for session_id in session_ids:
                self._written[session_id] = now

    def _report(self, absent: set[str], moved: set[str], *, attached: bool) -> None:
        for session_id in moved:
            self._written.pop(session_id, None)
            self._on_moved(session_id)
        for session_id in absent:
            if attached:
                self._on_absent(session_id)
            else:
                self._on_lost(session_id)

    async def flush(self) -> None:
        """Wait until everything queued so far is written (or failed)."""
        while self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Flush what is pending."""
        await self.flush()


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
