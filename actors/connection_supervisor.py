"""The ``ConnectionSupervisor``: one temporary ``WebSocketActor`` per accepted socket.

It admits or refuses each new connection (1001 while shutting down; a
handshake-token connection is counted against the node cap here, 4031, and
refused with 4029 while its user serves a crash penalty: see
``rtcs.actors.admission``), closes a crashed connection's socket with 1011
(its session stays resumable) and records the crash, and expires detached
sessions whose TTL ran out. Connection actors are temporary children: their
crashes never count toward this supervisor's restart intensity.

On shutdown (``Drain``) it closes its connections in batches spread over the
time it is given (:func:`drain_plan`), so that their clients do not all
reconnect elsewhere at the same moment; a node with few connections closes
them at once.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from thespian.actors import ActorAddress, WakeupMessage

from rtcs.actors.admission import admission_of
from rtcs.actors.connection import WebSocketActor
from rtcs.actors.context import ROUTE_ROOM, ROUTE_TOPIC, NodeSupervisor
from rtcs.actors.messages import (
    BackendStatus,
    Drain,
    DrainDue,
    OpenConnection,
    ReapDue,
    SessionAbsent,
    SessionMoved,
    Shutdown,
    StartConnection,
    UnindexSession,
)
from rtcs.actors.session_events import release_connection, snapshot
from rtcs.errors import CloseCode
from rtcs.protocol import codec
from rtcs.protocol.frames import ServerFrame
from rtcs.runtime.supervision import ChildSpec, Restart

if TYPE_CHECKING:
    from rtcs.actors.ports import ClientHandle
    from rtcs.sessions import Session


#: The share of ``server.drain_timeout`` over which a shutdown spreads its
#: closes; the rest gives the last ones time for their close handshake.
DRAIN_SPREAD = 0.8
#: A drain closes at least this many connections per second: a few hundred
#: go within a few seconds whatever the drain timeout (no storm to avoid).
DRAIN_MIN_RATE = 100.0
#: Seconds between two batches of a drain, at least.
DRAIN_TICK = 0.05


def drain_plan(count: int, within: float) -> tuple[int, float]:
    """How to close ``count`` connections: ``(batch, interval)``.

    The first batch of ``batch`` connections is closed at once and one more
    every ``interval`` seconds, evenly, so that the last one goes out at
    most ``within`` seconds after the first; but at least ``DRAIN_MIN_RATE``
    connections per second, and batches at least ``DRAIN_TICK`` apart.
    ``interval`` is 0 when everything goes at once. Pure.
    """
    if count <= 0:
        return 0, 0.0
    duration = min(max(within, 0.0), count / DRAIN_MIN_RATE)
    intervals = int(duration / DRAIN_TICK)
    if intervals < 1:
        return count, 0.0
    return math.ceil(count / (intervals + 1)), duration / intervals


@dataclass(frozen=True, slots=True)
class _Draining:
    """A shutdown in progress: the connections still to close, and how."""

    handles: deque[ClientHandle]
    batch: int
    interval: float
    code: int
    reason: str


class ConnectionSupervisor(NodeSupervisor):
    """Starts, watches and reaps the node's connection actors."""

    def __init__(self) -> None:
        super().__init__()
        self._handles: dict[str, ClientHandle] = {}
        self._reaping = False
        self._draining: _Draining | None = None

    def on_started(self) -> None:
        if not self._reaping:
            self._reaping = True
            self._schedule_reap()

    def _schedule_reap(self) -> None:
        session = self.ctx.settings.session
        self.wakeupAfter(min(session.reap_interval, session.ttl), ReapDue())

    def receiveMsg_OpenConnection(self, msg: OpenConnection, sender: ActorAddress) -> None:
        ctx = self.ctx
        handle = msg.handle
        if ctx.shutting_down:
            handle.refuse(CloseCode.GOING_AWAY)
            return
        name = handle.connection_id
        if msg.identity is not None:
            # Pending sockets (no token yet) are capped by the gateway and
            # counted against the node cap when their first-frame auth succeeds.
            refusal = admission_of(ctx).authenticate(name, msg.identity.user, ctx.clock())
            if refusal is not None:
                handle.refuse(refusal.code)
                return
        self._handles[name] = handle
        address = self.start_child(
            ChildSpec(
                name,
                WebSocketActor,
                Restart.TEMPORARY,
                init=StartConnection(ctx, msg),
                register=False,
            )
        )
        handle.admit(address)

    def on_child_exited(self, name: str) -> None:
        self._handles.pop(name, None)

    def on_child_crashed(self, name: str, reason: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is None:
            return
        ctx = self.ctx
        ctx.log.error("connection actor crashed", connection_id=name, reason=reason)
        if admission_of(ctx).crashed(name, handle.user, ctx.clock()):
            ctx.log.warning(
                "crash penalty",
                user=handle.user,
                seconds=ctx.settings.limits.crash_penalty,
            )
        release_connection(ctx, self, name, handle.user)
        handle.close(CloseCode.INTERNAL_ERROR, "internal error")

    def receiveMsg_Shutdown(self, msg: Shutdown, sender: ActorAddress) -> None:
        self.ctx.shutting_down = True
        self._draining = None
        for handle in list(self._handles.values()):
            handle.close(msg.code, msg.reason)

    def receiveMsg_Drain(self, msg: Drain, sender: ActorAddress) -> None:
        ctx = self.ctx
        ctx.shutting_down = True  # new connections are refused (1001) from now on
        handles = deque(self._handles.values())
        batch, interval = drain_plan(len(handles), msg.within)
        ctx.log.info(
            "closing connections", connections=len(handles), batch=batch, interval=interval
        )
        self._draining = _Draining(handles, batch, interval, msg.code, msg.reason)
        self._drain_batch()

    def _drain_batch(self) -> None:
        """Close the next batch of the drain; the next one after its interval."""
        draining = self._draining
        if draining is None:
            return
        handles, closed = draining.handles, 0
        while handles and closed < draining.batch:
            handle = handles.popleft()
            if handle.closing:  # closed meanwhile, by its client or by rtcs
                continue
            handle.close(draining.code, draining.reason)
            closed += 1
        if handles:
            self.wakeupAfter(draining.interval, DrainDue())
        else:
            self._draining = None

    def receiveMsg_BackendStatus(self, msg: BackendStatus, sender: ActorAddress) -> None:
        # Only established connections: nothing may precede ``welcome``, and
        # ``welcome`` itself says ``degraded``.
        frame = codec.encode_status(msg.degraded)
        sent = sum(1 for h in self._handles.values() if h.user is not None and h.push(frame))
        if sent:
            self.ctx.metrics.frame_out(ServerFrame.STATUS, sent)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        if isinstance(msg.payload, DrainDue):
            self._drain_batch()
            return
        if not isinstance(msg.payload, ReapDue):
            return
        ctx = self.ctx
        # A shared session store expires its copies by itself (its TTL).
        for session in ctx.sessions.expired(ctx.clock(), ctx.settings.session.ttl):
            self._forget(session)
        # Detached sessions past limits.max_detached_* go early, oldest first.
        from rtcs.backends.detached import evict_detached

        for session in evict_detached(ctx):
            self._forget(session)
        write_behind = ctx.write_behind
        if write_behind is not None and write_behind.crash_safe:
            # Attached sessions' records must not expire while they stay idle.
            mirrored = [s.id for s in ctx.sessions.attached() if s.mirror is not None]
            write_behind.keep_alive(mirrored, ctx.settings.session.ttl / 3)
        self._schedule_reap()

    def receiveMsg_SessionMoved(self, msg: SessionMoved, sender: ActorAddress) -> None:
        ctx = self.ctx
        session = ctx.sessions.get(msg.session_id)
        if session is None:
            return
        sink = session.sink
        if sink is None:
            self._forget(session)
            return
        write_behind = ctx.write_behind
        if msg.owned_elsewhere and write_behind is not None and write_behind.crash_safe:
            # The client resumed on another node before this one noticed its
            # old socket was gone (docs/protocol.md "Sessions, resume and
            # replay"): close it, and forget the session here, so that no
            # later detach saves a stale copy over the new owner's.
            ctx.log.info(
                "session resumed elsewhere", session_id=session.id, connection_id=sink.connection_id
            )
            self._forget(session)
            sink.close(CloseCode.NORMAL, "session resumed elsewhere")

    def receiveMsg_SessionAbsent(self, msg: SessionAbsent, sender: ActorAddress) -> None:
        ctx = self.ctx
        session = ctx.sessions.get(msg.session_id)
        write_behind = ctx.write_behind
        if session is None or session.sink is None or session.mirror is None:
            return
        if write_behind is not None and write_behind.crash_safe:
            write_behind.save(snapshot(ctx, session), ctx.settings.session.ttl)

    def _forget(self, session: Session) -> None:
        ctx = self.ctx
        ctx.sessions.remove(session)
        for name in (ROUTE_TOPIC, ROUTE_ROOM):
            address = ctx.directory.lookup(name)
            if address is not None:
                self.send(address, UnindexSession(session))
