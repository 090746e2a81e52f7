"""Connection actors: one ``WebSocketActor`` per socket, under the
``ConnectionSupervisor`` (one-for-one; connection actors are temporary).

The connection actor is a thin shell over pure cores: it decodes frames
(``protocol.codec``), applies the rate limiter (``protocol.ratelimit``) and the
permissions (``auth.permissions``), drives the connection state machine
(``protocol.states``), and forwards typed requests to the route handlers.
Replies to the client are written to the connection's bounded outbox
(``gateway.handle.ConnectionHandle``) as already-encoded bytes.
"""

from __future__ import annotations

from typing import Any

from thespian.actors import ActorExitRequest, ActorTypeDispatcher, PoisonMessage, WakeupMessage

from rtcs.actors.context import (
    ROUTE_BROADCAST,
    ROUTE_DIRECT,
    ROUTE_ROOM,
    ROUTE_TOPIC,
    NodeContext,
)
from rtcs.actors.messages import (
    AsyncDone,
    ClientText,
    IndexSession,
    OpenConnection,
    RouteDirect,
    RouteJoin,
    RouteLeave,
    RoutePresence,
    RoutePublish,
    RouteRoomBroadcast,
    RouteSubscribe,
    RouteUnsubscribe,
    RouteWideBroadcast,
    SessionMoved,
    SessionPresence,
    Shutdown,
    SocketClosed,
    StartConnection,
    Tick,
    UnindexSession,
)
from rtcs.auth.tokens import Identity
from rtcs.backends.base import SessionSnapshot
from rtcs.errors import AuthError, CloseCode, ErrorCode, ProtocolError
from rtcs.protocol import codec
from rtcs.protocol.frames import (
    Auth,
    Broadcast,
    Join,
    Leave,
    Ping,
    PresenceQuery,
    Publish,
    Send,
    Subscribe,
    Unsubscribe,
)
from rtcs.protocol.ratelimit import RateLimiter, Verdict
from rtcs.protocol.states import ConnectionStateMachine, Event, State
from rtcs.runtime.control import run_async
from rtcs.runtime.supervision import ChildSpec, Restart, Supervisor
from rtcs.sessions import Session

# How often detached sessions are checked for expiry, at most.
REAP_INTERVAL = 1.0
# Frames a client may send while its session is being restored from the
# shared store; more closes the connection with 1013.
HELD_FRAMES = 64


def release_connection(ctx: NodeContext, actor: Any, connection_id: str, user: str | None) -> None:
    """A connection is gone (closed, or its actor crashed): tidy up after it.

    Detaches its session if it still holds one (the session stays resumable
    for its TTL; taken-over sessions have moved on already), tells the room
    handler so room presence follows, and removes the connection from the
    user's presence. Safe to call twice.
    """
    session = ctx.sessions.by_connection(connection_id)
    if session is not None:
        ctx.sessions.detach(session, ctx.clock())
        if ctx.write_behind is not None:
            # Other nodes may resume it: store it, then every message it buffers.
            ctx.write_behind.save(snapshot(ctx, session), ctx.settings.session.ttl)
            session.mirror = ctx.write_behind.note
        _announce_presence(ctx, actor, session, online=False)
    if user is not None:
        ctx.background.submit(ctx.backends.presence.remove_connection, user, connection_id)


def snapshot(ctx: NodeContext, session: Session) -> SessionSnapshot:
    """The shareable state of a detached session."""
    return SessionSnapshot(
        session_id=session.id,
        user=session.user,
        subscriptions=tuple(session.subscriptions),
        rooms=tuple(session.rooms),
        seq=session.seq,
        buffer=tuple(session.buffer),
        node=ctx.node_id,
    )


class ConnectionSupervisor(Supervisor):
    """Starts one temporary ``WebSocketActor`` per accepted socket.

    Enforces the per-node connection limit (4031), closes a crashed
    connection's socket with 1011 (its session stays resumable), and expires
    detached sessions whose TTL ran out.
    """

    def __init__(self) -> None:
        super().__init__()
        self._handles: dict[str, Any] = {}
        self._reaping = False

    @property
    def ctx(self) -> NodeContext:
        return self.context

    def on_started(self) -> None:
        if not self._reaping:
            self._reaping = True
            self.wakeupAfter(min(REAP_INTERVAL, self.ctx.settings.session.ttl), Tick("reap"))

    def receiveMsg_OpenConnection(self, msg: OpenConnection, sender: Any) -> None:
        ctx = self.ctx
        handle = msg.handle
        if ctx.shutting_down:
            handle.opened.set_result(int(CloseCode.GOING_AWAY))
            return
        if len(self._handles) >= ctx.settings.limits.max_connections_per_node:
            handle.opened.set_result(int(CloseCode.CONNECTION_LIMIT))
            return
        name = handle.connection_id
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
        handle.actor = address
        if not handle.opened.done():
            handle.opened.set_result(None)

    def on_child_exited(self, name: str) -> None:
        self._handles.pop(name, None)

    def on_child_crashed(self, name: str, reason: str) -> None:
        handle = self._handles.pop(name, None)
        if handle is None:
            return
        ctx = self.ctx
        ctx.log.error("connection actor crashed", connection_id=name, reason=reason)
        release_connection(ctx, self, name, handle.user)
        handle.close(CloseCode.INTERNAL_ERROR, "internal error")

    def receiveMsg_Shutdown(self, msg: Shutdown, sender: Any) -> None:
        self.ctx.shutting_down = True
        for handle in list(self._handles.values()):
            handle.close(msg.code, msg.reason)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if not isinstance(msg.payload, Tick) or msg.payload.kind != "reap":
            return
        ctx = self.ctx
        ttl = ctx.settings.session.ttl
        # A shared session store expires its copies by itself (its TTL).
        for session in ctx.sessions.expired(ctx.clock(), ttl):
            self._forget(session)
        self.wakeupAfter(min(REAP_INTERVAL, ttl), Tick("reap"))

    def receiveMsg_SessionMoved(self, msg: SessionMoved, sender: Any) -> None:
        session = self.ctx.sessions.get(msg.session_id)
        if session is not None and session.sink is None:
            self._forget(session)

    def _forget(self, session: Session) -> None:
        ctx = self.ctx
        ctx.sessions.remove(session)
        for name in (ROUTE_TOPIC, ROUTE_ROOM):
            address = ctx.directory.lookup(name)
            if address is not None:
                self.send(address, UnindexSession(session))


def _announce_presence(ctx: NodeContext, actor: Any, session: Session, *, online: bool) -> None:
    """Tell the room handler that a session went online/offline (room presence)."""
    if not session.rooms:
        return
    address = ctx.directory.lookup(ROUTE_ROOM)
    if address is not None:
        actor.send(address, SessionPresence(session, online))


class WebSocketActor(ActorTypeDispatcher):
    """One connection: its state machine, rate limiter, session and timers."""

    def __init__(self) -> None:
        super().__init__()
        self.ctx: NodeContext | None = None
        self.handle: Any = None
        self.session: Session | None = None
        self.identity: Identity | None = None
        self.machine = ConnectionStateMachine()
        self.limiter: RateLimiter | None = None
        self._check_generation = 0
        # Frames received while the session is restored from the shared store.
        self._held: list[ClientText] | None = None
        self._last_activity = 0.0
        self._released = False

    # -- lifecycle -----------------------------------------------------------

    def receiveMsg_StartConnection(self, msg: StartConnection, sender: Any) -> None:
        ctx = self.ctx = msg.context
        opened: OpenConnection = msg.open
        self.handle = opened.handle
        limits = ctx.settings.limits
        now = ctx.clock()
        self._last_activity = now
        self.limiter = RateLimiter(
            limits.rate, limits.burst, limits.rate_limit_close_after, limits.rate_limit_window, now
        )
        self.machine.fire(Event.UPGRADED)
        if opened.identity is not None:
            self._establish(opened.identity, opened.auth.session, opened.auth.last_seq, None)
        else:
            self.wakeupAfter(ctx.settings.auth.auth_timeout, Tick("auth"))

    def receiveMsg_SocketClosed(self, msg: SocketClosed, sender: Any) -> None:
        self._release()
        self.send(self.myAddress, ActorExitRequest())

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: Any) -> None:
        # Stopped by the supervisor (node shutdown or a supervisor restart).
        if self.handle is not None and not self.handle.closing:
            code = (
                CloseCode.GOING_AWAY
                if self.ctx and self.ctx.shutting_down
                else CloseCode.INTERNAL_ERROR
            )
            self.handle.close(
                code, "server shutting down" if code == CloseCode.GOING_AWAY else "restart"
            )
        self._release()

    def _release(self) -> None:
        ctx = self.ctx
        if ctx is None or self.handle is None:
            return
        if self.machine.state in (State.ACTIVE, State.INACTIVE, State.AUTHENTICATING):
            self.machine.fire(Event.CLOSE)
        if self.machine.state is State.DISCONNECTING:
            self.machine.fire(Event.CLOSED)
        if not self._released:
            self._released = True
            release_connection(ctx, self, self.handle.connection_id, self.handle.user)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        tick = msg.payload
        if not isinstance(tick, Tick) or self.ctx is None:
            return
        if tick.kind == "auth":
            if self.machine.state is State.AUTHENTICATING:
                self._fail_auth("authentication timeout")
        elif tick.kind == "check" and tick.generation == self._check_generation:
            self._check()

    def _check(self) -> None:
        """The connection's one timer: token expiry, then inactivity."""
        ctx, identity = self.ctx, self.identity
        if ctx is None or identity is None or self.handle.closing:
            return
        if ctx.wall() >= identity.expires_at:
            self.handle.close(CloseCode.AUTH_FAILED, "token expired")
            return
        idle_after = ctx.settings.heartbeat.idle_after
        if self.machine.state is State.ACTIVE and ctx.clock() - self._last_activity >= idle_after:
            self.machine.fire(Event.IDLE)
        self._schedule_check()

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: Any) -> None:
        # A route handler failed on one of our requests: the client gets an
        # ``internal`` error for that request and the connection stays open.
        request_id = getattr(msg.poisonMessage, "request_id", None)
        self._error(request_id, ErrorCode.INTERNAL, "internal error")

    # -- frames ----------------------------------------------------------------

    def receiveMsg_ClientText(self, msg: ClientText, sender: Any) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        self.handle.handled(ctx.settings.limits.inbound_queue // 2)
        self._on_text(msg)

    def _on_text(self, msg: ClientText) -> None:
        ctx = self.ctx
        assert ctx is not None
        if self.handle.closing:
            return
        if self._held is not None:
            if len(self._held) >= HELD_FRAMES:
                self.handle.close(CloseCode.TRY_AGAIN_LATER, "session restore is taking too long")
            self._held.append(msg)
            return
        state = self.machine.state
        if state is State.DISCONNECTING or state is State.DISCONNECTED:
            return
        metrics = ctx.metrics
        try:
            command = codec.decode(msg.text, max_depth=ctx.settings.limits.max_json_depth)
        except ProtocolError as exc:
            metrics.frame_in("invalid")
            self._error(exc.request_id, exc.code, exc.message)
            return
        kind = type(command)
        metrics.frame_in(_FRAME_TYPES.get(kind, "invalid"))
        now = ctx.clock()
        verdict = self.limiter.check(now)  # type: ignore[union-attr]
        if verdict is not Verdict.ALLOW:
            metrics.rate_limited.inc()
            if verdict is Verdict.CLOSE:
                self.handle.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
            else:
                self._error(command.id, ErrorCode.RATE_LIMITED, "rate limit exceeded")
            return
        self._last_activity = now
        if state is State.INACTIVE:
            self.machine.fire(Event.ACTIVITY)
            self._schedule_check()  # the timer only watched the token while inactive
        elif state is State.AUTHENTICATING and kind is not Auth:
            self._fail_auth("authentication required")
            return
        try:
            getattr(self, _HANDLERS[kind])(command)
        except ProtocolError as exc:
            self._error(command.id, exc.code, exc.message)

    def _on_auth(self, cmd: Auth) -> None:
        ctx = self.ctx
        assert ctx is not None
        try:
            identity = ctx.verifier.verify(cmd.token, now=ctx.wall())
        except AuthError as exc:
            if self.machine.state is State.AUTHENTICATING:
                self._fail_auth(exc.reason)
            else:
                # A refresh with a bad token: the current token stays in force
                # until it expires.
                self._error(cmd.id, ErrorCode.FORBIDDEN, f"token refresh refused: {exc.reason}")
            return
        if self.machine.state is State.AUTHENTICATING:
            self._establish(identity, cmd.session, cmd.last_seq, cmd.id)
            return
        session = self.session
        assert session is not None
        if identity.user != session.user:
            self._error(cmd.id, ErrorCode.FORBIDDEN, "token refresh must keep the same subject")
            return
        self.identity = identity
        session.roles = identity.roles
        self.machine.fire(Event.AUTH_OK)
        self._schedule_check()
        self._push(
            codec.encode_welcome(
                connection_id=self.handle.connection_id,
                session_id=session.id,
                user=session.user,
                roles=list(session.roles),
                heartbeat=int(ctx.settings.heartbeat.interval),
                resumed=True,
                replayed=0,
                server=ctx.node_id,
                id=cmd.id,
            ),
            "welcome",
        )

    def _on_subscribe(self, cmd: Subscribe) -> None:
        ctx, session = self._active()
        if not ctx.policy.can_subscribe(session.roles, cmd.topic):
            raise _forbidden("subscribe", cmd.topic)
        if cmd.topic in session.subscriptions:
            self._push(codec.encode_frame("subscribed", cmd.id, topic=cmd.topic), "subscribed")
            return
        if len(session.subscriptions) >= ctx.settings.limits.max_subscriptions:
            self._error(cmd.id, ErrorCode.LIMIT, "too many subscriptions")
            return
        self._route(ROUTE_TOPIC, RouteSubscribe(session, cmd.topic, cmd.id))

    def _on_unsubscribe(self, cmd: Unsubscribe) -> None:
        _, session = self._active()
        if cmd.topic not in session.subscriptions:
            self._push(codec.encode_frame("unsubscribed", cmd.id, topic=cmd.topic), "unsubscribed")
            return
        self._route(ROUTE_TOPIC, RouteUnsubscribe(session, cmd.topic, cmd.id))

    def _on_publish(self, cmd: Publish) -> None:
        ctx, session = self._active()
        if not ctx.policy.can_publish(session.roles, cmd.topic):
            raise _forbidden("publish to", cmd.topic)
        self._route(ROUTE_TOPIC, RoutePublish(session, cmd.topic, cmd.data, cmd.id))

    def _on_send(self, cmd: Send) -> None:
        ctx, session = self._active()
        if not ctx.policy.can_direct(session.roles):
            raise _forbidden("send direct messages", None)
        self._route(
            ROUTE_DIRECT, RouteDirect(session, cmd.to_user, cmd.to_connection, cmd.data, cmd.id)
        )

    def _on_join(self, cmd: Join) -> None:
        ctx, session = self._active()
        if not ctx.policy.can_join(session.roles):
            raise _forbidden("join rooms", None)
        if cmd.room not in session.rooms and len(session.rooms) >= ctx.settings.limits.max_rooms:
            self._error(cmd.id, ErrorCode.LIMIT, "too many rooms")
            return
        self._route(ROUTE_ROOM, RouteJoin(session, cmd.room, cmd.id))

    def _on_leave(self, cmd: Leave) -> None:
        _, session = self._active()
        self._route(ROUTE_ROOM, RouteLeave(session, cmd.room, cmd.id))

    def _on_broadcast(self, cmd: Broadcast) -> None:
        ctx, session = self._active()
        scope = cmd.kind
        if not ctx.policy.can_broadcast(session.roles, scope):
            raise _forbidden(f"send {scope} broadcasts", None)
        if cmd.room is not None:
            self._route(ROUTE_ROOM, RouteRoomBroadcast(session, cmd.room, cmd.data, cmd.id))
        else:
            self._route(ROUTE_BROADCAST, RouteWideBroadcast(session, cmd.filter, cmd.data, cmd.id))

    def _on_presence(self, cmd: PresenceQuery) -> None:
        ctx, session = self._active()
        if not ctx.policy.can_presence(session.roles):
            raise _forbidden("query presence", None)
        self._route(ROUTE_ROOM, RoutePresence(session, cmd.room, cmd.user, cmd.id))

    def _on_ping(self, cmd: Ping) -> None:
        self._push(codec.encode_frame("pong", cmd.id), "pong")

    # -- helpers -----------------------------------------------------------------

    def _active(self) -> tuple[NodeContext, Session]:
        assert self.ctx is not None and self.session is not None
        return self.ctx, self.session

    def _route(self, name: str, request: Any) -> None:
        address = self.ctx.directory.lookup(name)  # type: ignore[union-attr]
        if address is None:
            # The routing subsystem is restarting: tell the client to retry.
            self._error(request.request_id, ErrorCode.UNAVAILABLE, "routing is restarting, retry")
            return
        self.send(address, request)

    def _push(self, frame: bytes, kind: str) -> None:
        if self.handle.push(frame):
            self.ctx.metrics.frame_out(kind)  # type: ignore[union-attr]

    def _error(self, request_id: Any, code: ErrorCode, message: str) -> None:
        self.ctx.metrics.error(code)  # type: ignore[union-attr]
        self._push(codec.encode_error(request_id, code, message), "error")

    def _fail_auth(self, reason: str) -> None:
        if self.machine.can(Event.AUTH_FAILED):
            self.machine.fire(Event.AUTH_FAILED)
        self.handle.close(CloseCode.AUTH_FAILED, reason[:120])

    def _schedule_check(self) -> None:
        """Arm the one timer for the earlier of token expiry and going idle.

        Activity does not touch the timer (a frame costs nothing extra): when
        it fires early, it re-arms for the new idle deadline. A new generation
        voids the previous timer (after a token refresh).
        """
        ctx, identity = self.ctx, self.identity
        assert ctx is not None and identity is not None
        delay = identity.expires_at - ctx.wall()
        if self.machine.state is State.ACTIVE:
            idle_in = self._last_activity + ctx.settings.heartbeat.idle_after - ctx.clock()
            delay = min(delay, idle_in)
        self._check_generation += 1
        self.wakeupAfter(max(delay, 0.0), Tick("check", self._check_generation))

    def _establish(
        self, identity: Identity, session_id: str | None, last_seq: int | None, request_id: Any
    ) -> None:
        """Authenticated: resume or create the session, welcome, replay."""
        ctx = self.ctx
        assert ctx is not None
        limits = ctx.settings.limits
        if len(ctx.sessions.attached_of(identity.user)) >= limits.max_connections_per_user:
            self.machine.fire(Event.AUTH_FAILED)
            self.handle.close(CloseCode.CONNECTION_LIMIT, "too many connections for this user")
            return
        wants_resume = session_id is not None and last_seq is not None
        shared = ctx.write_behind is not None
        if wants_resume and shared and ctx.sessions.get(session_id or "") is None:
            # Not here, but other nodes share sessions: claim it from the store.
            # Frames that arrive meanwhile are held and handled after welcome.
            self._held = []
            store = ctx.backends.sessions
            run_async(
                self,
                store.claim(session_id or "", identity.user),
                lambda result: AsyncDone("claimed", result, (identity, last_seq, request_id)),
            )
            return
        session, replay = self._resume_local(identity, session_id, last_seq)
        self._welcome(identity, session, replay, wants_resume, request_id)

    def receiveMsg_AsyncDone(self, msg: AsyncDone, sender: Any) -> None:
        if msg.tag != "claimed" or self.ctx is None or self.handle.closing:
            return
        identity, last_seq, request_id = msg.state
        ctx = self.ctx
        session: Session | None = None
        replay: list[tuple[int, bytes]] = []
        snap = msg.result if isinstance(msg.result, SessionSnapshot) else None
        if snap is not None:
            session = ctx.sessions.restore(
                snap.session_id,
                snap.user,
                identity.roles,
                seq=snap.seq,
                buffer=snap.buffer,
                subscriptions=snap.subscriptions,
                rooms=snap.rooms,
                now=ctx.clock(),
            )
            for name in (ROUTE_TOPIC, ROUTE_ROOM):
                address = ctx.directory.lookup(name)
                if address is not None:
                    self.send(address, IndexSession(session))
            found = session.replay_after(last_seq)
            if found is None:
                session = None  # restored for nobody: the reaper expires it
            else:
                replay = found
        self._welcome(identity, session, replay, True, request_id)
        held, self._held = self._held or [], None
        for frame in held:
            self._on_text(frame)

    def _welcome(
        self,
        identity: Identity,
        session: Session | None,
        replay: list[tuple[int, bytes]],
        wanted_resume: bool,
        request_id: Any,
    ) -> None:
        ctx = self.ctx
        assert ctx is not None
        handle = self.handle
        resumed = session is not None
        if session is None:
            session = ctx.sessions.create(identity.user, identity.roles)
        elif ctx.write_behind is not None:
            ctx.write_behind.delete(session.id)  # resumed here: no one else may
        session.roles = identity.roles
        ctx.sessions.attach(session, handle)
        handle.user = identity.user
        self.session = session
        self.identity = identity
        self.machine.fire(Event.AUTH_OK)
        self._schedule_check()
        welcome = codec.encode_welcome(
            connection_id=handle.connection_id,
            session_id=session.id,
            user=session.user,
            roles=list(session.roles),
            heartbeat=int(ctx.settings.heartbeat.interval),
            resumed=resumed,
            replayed=len(replay) if resumed else None,
            server=ctx.node_id,
            id=request_id,
        )
        self._push(welcome, "welcome")
        for seq, tail in replay:
            handle.push(codec.with_seq(seq, tail))
        if replay:
            ctx.metrics.frame_out("message", len(replay))
        if wanted_resume:
            ctx.metrics.resume("resumed" if resumed else "expired")
        ctx.log.debug(
            "connection authenticated",
            connection_id=handle.connection_id,
            user=session.user,
            session_id=session.id,
            resumed=resumed,
        )
        if resumed:
            _announce_presence(ctx, self, session, online=True)
        add = ctx.backends.presence.add_connection
        ctx.background.submit(add, session.user, handle.connection_id, ctx.node_id)

    def _resume_local(
        self, identity: Identity, session_id: str | None, last_seq: int | None
    ) -> tuple[Session | None, list[tuple[int, bytes]]]:
        """The local session to resume and the messages to replay, or (None, [])."""
        if session_id is None or last_seq is None:
            return None, []
        ctx = self.ctx
        assert ctx is not None
        session = ctx.sessions.get(session_id)
        if session is None or session.user != identity.user:
            return None, []
        replay = session.replay_after(last_seq)
        if replay is None:
            return None, []
        if session.sink is not None:
            # The client reconnected before its old socket was noticed gone:
            # the new connection takes the session over.
            old = session.sink
            ctx.sessions.detach(session, ctx.clock())
            old.close(CloseCode.NORMAL, "session resumed by another connection")
        return session, replay


def _forbidden(action: str, topic: str | None) -> ProtocolError:
    from rtcs.errors import Forbidden

    return Forbidden(f"not allowed to {action} {topic}" if topic else f"not allowed to {action}")


# Which method handles which command (looked up by name, so a subclass or a
# patched method takes effect).
_HANDLERS: dict[type, str] = {
    Subscribe: "_on_subscribe",
    Unsubscribe: "_on_unsubscribe",
    Publish: "_on_publish",
    Send: "_on_send",
    Join: "_on_join",
    Leave: "_on_leave",
    Broadcast: "_on_broadcast",
    PresenceQuery: "_on_presence",
    Ping: "_on_ping",
    Auth: "_on_auth",
}

_FRAME_TYPES: dict[type, str] = {
    Auth: "auth",
    Subscribe: "subscribe",
    Unsubscribe: "unsubscribe",
    Publish: "publish",
    Send: "send",
    Join: "join",
    Leave: "leave",
    Broadcast: "broadcast",
    PresenceQuery: "presence",
    Ping: "ping",
}
