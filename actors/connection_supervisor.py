"""The ``ConnectionSupervisor``: one temporary ``WebSocketActor`` per accepted socket.

It admits or refuses each new connection (per-node limit 4031, 1001 while
shutting down), closes a crashed connection's socket with 1011 (its session
stays resumable), and expires detached sessions whose TTL ran out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from thespian.actors import ActorAddress, WakeupMessage

from rtcs.actors.connection import WebSocketActor
from rtcs.actors.context import ROUTE_ROOM, ROUTE_TOPIC, NodeSupervisor
from rtcs.actors.messages import (
    BackendStatus,
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


class ConnectionSupervisor(NodeSupervisor):
    """Starts, watches and reaps the node's connection actors."""

    def __init__(self) -> None:
        super().__init__()
        self._handles: dict[str, ClientHandle] = {}
        self._reaping = False

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
        if self._instance_total() >= ctx.settings.limits.max_connections_per_node:
            handle.refuse(CloseCode.CONNECTION_LIMIT)
            return
        name = handle.connection_id
        self._handles[name] = handle
        self._counted()
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

    def _instance_total(self) -> int:
        """Open connections of the whole instance: every worker (rtcs.workers)."""
        counter = self.ctx.instance
        return len(self._handles) if counter is None else counter.total()

    def _counted(self) -> None:
        counter = self.ctx.instance
        if counter is not None:
            counter.set(len(self._handles))

    def on_child_exited(self, name: str) -> None:
        if self._handles.pop(name, None) is not None:
            self._counted()

    def on_child_crashed(self, name: str, reason: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is None:
            return
        self._counted()
        ctx = self.ctx
        ctx.log.error("connection actor crashed", connection_id=name, reason=reason)
        release_connection(ctx, self, name, handle.user)
        handle.close(CloseCode.INTERNAL_ERROR, "internal error")

    def receiveMsg_Shutdown(self, msg: Shutdown, sender: ActorAddress) -> None:
        self.ctx.shutting_down = True
        for handle in list(self._handles.values()):
            handle.close(msg.code, msg.reason)

    def receiveMsg_BackendStatus(self, msg: BackendStatus, sender: ActorAddress) -> None:
        # Only established connections: nothing may precede ``welcome``, and
        # ``welcome`` itself says ``degraded``.
        frame = codec.encode_status(msg.degraded)
        sent = sum(1 for h in self._handles.values() if h.user is not None and h.push(frame))
        if sent:
            self.ctx.metrics.frame_out(ServerFrame.STATUS, sent)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        if not isinstance(msg.payload, ReapDue):
            return
        ctx = self.ctx
        # A shared session store expires its copies by itself (its TTL).
        for session in ctx.sessions.expired(ctx.clock(), ctx.settings.session.ttl):
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
