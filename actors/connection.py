"""The connection actor: one ``WebSocketActor`` per socket, under the
``ConnectionSupervisor`` (``rtcs.actors.connection_supervisor``).

It is a thin shell over pure cores: it decodes frames (``protocol.codec``),
applies the rate limiter (``protocol.ratelimit``) and the permissions
(``auth.permissions``), drives the connection state machine
(``protocol.states``), carries out the resume decision (``sessions.plan_resume``)
and forwards typed requests to the route handlers. Replies to the client are
written to the connection's bounded outbox (a ``ClientHandle``) as
already-encoded bytes.

Tracing (rtcs.tracing): with tracing on, a client message (publish, send,
broadcast) sampled for tracing is an ``rtcs.receive`` span when forwarded to
its route handler, the root of the message's trace, and the request sent is
its traced variant (``rtcs.actors.routing.handler.TracedRequest``). With
tracing off, forwarding a request tests one attribute against None.

Delivery receipts (docs/protocol.md "Delivery receipts"): the session core
decides (``Session.want_receipts``, ``acknowledge``, ``redeliver``,
``resume_receipts``); this actor owns the session's one redelivery timer
(a ``_ReceiptsDue`` wakeup, armed through ``Receipts.arm``) and writes the
redeliveries, flow-controlled like the replay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from thespian.actors import (
    ActorAddress,
    ActorExitRequest,
    PoisonMessage,
    WakeupMessage,
)

from rtcs.actors.context import (
    ROUTE_BROADCAST,
    ROUTE_DIRECT,
    ROUTE_ROOM,
    ROUTE_TOPIC,
    NodeContext,
    NotConfigured,
)
from rtcs.actors.messages import (
    AuthDeadline,
    CheckDue,
    ClientText,
    IndexSession,
    RouteDirect,
    RouteJoin,
    RouteLeave,
    RoutePresence,
    RoutePublish,
    RouteRoomBroadcast,
    RouteSubscribe,
    RouteUnsubscribe,
    RouteWideBroadcast,
    SocketClosed,
    StartConnection,
)
from rtcs.actors.routing.handler import frame_attributes, traced_request
from rtcs.actors.session_events import announce_presence, mirror_attached, release_connection
from rtcs.backends.base import EnvelopeKind, SessionSnapshot
from rtcs.errors import (
    AuthError,
    BadRequest,
    CloseCode,
    Forbidden,
    InternalError,
    LimitExceeded,
    ProtocolError,
    RateLimited,
    Unavailable,
)
from rtcs.protocol import codec
from rtcs.protocol.frames import (
    Auth,
    Broadcast,
    Command,
    Join,
    Leave,
    Ping,
    PresenceQuery,
    Publish,
    Received,
    RequestId,
    Send,
    ServerFrame,
    Subscribe,
    Unsubscribe,
)
from rtcs.protocol.ratelimit import RateLimiter, Verdict
from rtcs.protocol.states import ConnectionStateMachine, Event, State
from rtcs.runtime.control import Calls
from rtcs.runtime.dispatch import Dispatcher
from rtcs.sessions import ResumePlan, ResumeVerdict, Session, plan_claimed, plan_resume
from rtcs.tracing import CONNECTION_ID, USER, trace_fields, tracing_of

if TYPE_CHECKING:
    from rtcs.actors.ports import ClientHandle
    from rtcs.auth.tokens import Identity
    from rtcs.tracing import Tracing


class WebSocketActor(Calls, Dispatcher):
    """One connection: its state machine, rate limiter, session and timers."""

    def __init__(self) -> None:
        super().__init__()
        self._ctx: NodeContext | None = None
        self._handle: ClientHandle | None = None
        self.session: Session | None = None
        self.identity: Identity | None = None
        self.machine = ConnectionStateMachine()
        self.limiter = RateLimiter(1.0, 1, 1, 1.0, 0.0)  # replaced by StartConnection
        self._check_generation = 0
        # While a replay is in progress: the seq of the last message written.
        self._replay_cursor = 0
        # On a resume with delivery receipts: messages up to last_seq awaiting a
        # receipt, written (marked redelivered) before the replay.
        self._redeliver: deque[tuple[int, bytes]] | None = None
        # Frames received while the session is restored from the shared store.
        self._held: list[ClientText] | None = None
        # While a publish's id is checked against the shared store, later
        # frames wait here, in order (``True``: already counted as handled).
        self._deduping = False
        # Created when the first frame has to wait (most connections never do).
        self._waiting: deque[tuple[ClientText, bool]] | None = None
        # When the frame being handled arrived (ClientText.received).
        self._received = 0.0
        self._last_activity = 0.0
        self._released = False
        self._tracing: Tracing | None = None  # the node's, when tracing is on

    @property
    def ctx(self) -> NodeContext:
        if self._ctx is None:
            raise NotConfigured("connection actor without StartConnection")
        return self._ctx

    @property
    def handle(self) -> ClientHandle:
        if self._handle is None:
            raise NotConfigured("connection actor without StartConnection")
        return self._handle

    # -- lifecycle -----------------------------------------------------------

    def receiveMsg_StartConnection(self, msg: StartConnection, sender: ActorAddress) -> None:
        ctx = self._ctx = msg.context
        opened = msg.open
        self._handle = opened.handle
        self._tracing = tracing_of(ctx)
        limits = ctx.settings.limits
        now = ctx.clock()
        self._last_activity = now
        self.limiter = RateLimiter(
            limits.rate,
            limits.burst,
            limits.rate_limit_close_after,
            limits.rate_limit_window,
            now,
            byte_rate=limits.byte_rate,
            byte_burst=limits.byte_burst,
        )
        self.machine.fire(Event.UPGRADED)
        if opened.identity is not None:
            self._establish(opened.identity, opened.auth.session, opened.auth.last_seq, None)
        else:
            self.wakeupAfter(ctx.settings.auth.auth_timeout, AuthDeadline())

    def receiveMsg_SocketClosed(self, msg: SocketClosed, sender: ActorAddress) -> None:
        self._release()
        self.send(self.myAddress, ActorExitRequest())

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: ActorAddress) -> None:
        # Stopped by the supervisor (node shutdown or a supervisor restart).
        handle, ctx = self._handle, self._ctx
        if handle is not None and not handle.closing:
            if ctx is not None and ctx.shutting_down:
                handle.close(CloseCode.GOING_AWAY, "server shutting down")
            else:
                handle.close(CloseCode.INTERNAL_ERROR, "restart")
        self._release()

    def _release(self) -> None:
        ctx, handle = self._ctx, self._handle
        if ctx is None or handle is None:
            return
        if self.machine.state in (State.ACTIVE, State.INACTIVE, State.AUTHENTICATING):
            self.machine.fire(Event.CLOSE)
        if self.machine.state is State.DISCONNECTING:
            self.machine.fire(Event.CLOSED)
        if not self._released:
            self._released = True
            release_connection(ctx, self, handle.connection_id, handle.user)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        payload = msg.payload
        if self._ctx is None:
            return
        if isinstance(payload, AuthDeadline):
            if self.machine.state is State.AUTHENTICATING:
                self._fail_auth("authentication timeout")
        elif isinstance(payload, CheckDue) and payload.generation == self._check_generation:
            self._check()
        elif isinstance(payload, _ReceiptsDue):
            self._redeliver_due()

    def _check(self) -> None:
        """The connection's one timer: token expiry, then inactivity."""
        ctx, identity = self.ctx, self.identity
        if identity is None or self.handle.closing:
            return
        if ctx.wall() >= identity.expires_at:
            self.handle.close(CloseCode.AUTH_FAILED, "token expired")
            return
        idle_after = ctx.settings.heartbeat.idle_after
        if self.machine.state is State.ACTIVE and ctx.clock() - self._last_activity >= idle_after:
            self.machine.fire(Event.IDLE)
        self._schedule_check()

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: ActorAddress) -> None:
        # A route handler failed on one of our requests: the client gets an
        # ``internal`` error for that request and the connection stays open.
        request = msg.poisonMessage
        request_id = getattr(request, "request_id", None)
        handle = self._handle
        if self._ctx is not None and handle is not None:
            self.ctx.log.warning(
                "route handler failed a request; answered internal",
                connection_id=handle.connection_id,
                user=handle.user,
                **trace_fields(getattr(request, "trace", None)),
            )
        self._error(request_id, InternalError("internal error"))

    # -- frames ----------------------------------------------------------------

    def receiveMsg_ClientText(self, msg: ClientText, sender: ActorAddress) -> None:
        if self._ctx is None:
            return
        if self._deduping:
            # Not counted as handled yet: the gateway's inbound bound still
            # applies to the frames waiting behind a publish.
            self._wait(msg, counted=False)
            return
        self.handle.handled()
        self._on_text(msg)

    def _wait(self, msg: ClientText, *, counted: bool) -> None:
        """Keep ``msg`` until the publish being de-duplicated is decided."""
        if self._waiting is None:
            self._waiting = deque()
        self._waiting.append((msg, counted))

    def _on_text(self, msg: ClientText) -> None:
        ctx, handle = self.ctx, self.handle
        if handle.closing:
            return
        if self._deduping:
            self._wait(msg, counted=True)
            return
        if self._held is not None:
            if len(self._held) >= ctx.settings.limits.held_frames:
                handle.close(CloseCode.TRY_AGAIN_LATER, "session restore is taking too long")
            self._held.append(msg)
            return
        state = self.machine.state
        if state is State.DISCONNECTING or state is State.DISCONNECTED:
            return
        self._received = msg.received
        metrics = ctx.metrics
        try:
            command = codec.decode(msg.text, max_depth=ctx.settings.limits.max_json_depth)
        except ProtocolError as exc:
            metrics.frame_in(None)
            # Invalid frames spend the rate limiter's error budget
            # (docs/protocol.md "Limits and close codes").
            if self.limiter.penalize(ctx.clock()) is Verdict.CLOSE:
                handle.close(CloseCode.RATE_LIMITED, "error budget exhausted")
            else:
                self._error(exc.request_id, exc)
            return
        metrics.frame_in(command.TYPE)
        now = ctx.clock()
        # The byte budget counts the frame's text as received (docs/protocol.md
        # "Limits and close codes"); a frame over either budget is refused alike.
        verdict = self.limiter.check(now, len(msg.text))
        if verdict is not Verdict.ALLOW:
            metrics.rate_limit(self.limiter.refused_by)
            if verdict is Verdict.CLOSE:
                handle.close(CloseCode.RATE_LIMITED, "rate limit exceeded")
            else:
                self._error(command.id, RateLimited("rate limit exceeded"))
            return
        self._last_activity = now
        if state is State.INACTIVE:
            self.machine.fire(Event.ACTIVITY)
            self._schedule_check()  # the timer only watched the token while inactive
        elif state is State.AUTHENTICATING and not isinstance(command, Auth):
            self._fail_auth("authentication required")
            return
        try:
            self._dispatch(command)
        except ProtocolError as exc:
            self._error(command.id, exc)

    def _dispatch(self, command: Command) -> None:
        # By the command's exact class: one lookup, not a chain of
        # isinstance checks (ping was the tenth).
        getattr(self, _HANDLERS[type(command)])(command)

    def _on_auth(self, cmd: Auth) -> None:
        ctx = self.ctx
        try:
            identity = ctx.verifier.verify(cmd.token, now=ctx.wall())
        except AuthError as exc:
            if self.machine.state is State.AUTHENTICATING:
                self._fail_auth(exc.reason)
            else:
                # A refresh with a bad token: the current token stays in force
                # until it expires.
                raise Forbidden(f"token refresh refused: {exc.reason}") from None
            return
        if self.machine.state is State.AUTHENTICATING:
            # First-frame auth: now the connection counts against the node
            # cap (and its user's crash penalty applies); rtcs.actors.admission.
            from rtcs.actors.admission import admit_authenticated

            refusal = admit_authenticated(ctx, self.handle.connection_id, identity.user)
            if refusal is not None:
                self.machine.fire(Event.AUTH_FAILED)
                self.handle.close(refusal.code, refusal.reason)
                return
            self._establish(identity, cmd.session, cmd.last_seq, cmd.id)
            return
        session = self._session()
        if identity.user != session.user:
            raise Forbidden("token refresh must keep the same subject")
        self.identity = identity
        session.roles = identity.roles
        revoked = self._revoked(session)
        self.machine.fire(Event.AUTH_OK)
        self._schedule_check()
        self._push(self._welcome_frame(session, True, 0, cmd.id), ServerFrame.WELCOME)
        self._drop(session, revoked)

    def _on_subscribe(self, cmd: Subscribe) -> None:
        ctx, session = self.ctx, self._session()
        if not ctx.policy.can_subscribe(session.roles, cmd.topic, session.user):
            raise _forbidden("subscribe", cmd.topic)
        if cmd.topic in session.subscriptions:
            # The latest subscribe of a pattern decides its receipts.
            if self._want_receipts(session, cmd):
                session.changed()
            frame = codec.encode_frame(ServerFrame.SUBSCRIBED, cmd.id, topic=cmd.topic)
            self._push(frame, ServerFrame.SUBSCRIBED)
            return
        if len(session.subscriptions) >= ctx.settings.limits.max_subscriptions:
            raise LimitExceeded("too many subscriptions")
        self._route(ROUTE_TOPIC, RouteSubscribe(session, cmd.topic, cmd.id))
        # After routing, which may refuse; the pattern needs receipts only once
        # the handler has added it to the session's subscriptions.
        self._want_receipts(session, cmd)

    def _want_receipts(self, session: Session, cmd: Subscribe) -> bool:
        """Receipts on or off for ``cmd.topic`` (docs/protocol.md "Delivery
        receipts"); True when that changed. Nothing to do for the usual
        subscribe without receipts on a session without any."""
        if not cmd.receipts and session.receipts is None:
            return False
        ctx = self.ctx
        changed = session.want_receipts(cmd.topic, cmd.receipts, ctx.sessions.receipt_counts)
        self._wire_receipts(session)
        return changed

    def _wire_receipts(self, session: Session) -> None:
        """Time the session's redeliveries with this connection's clock and timer."""
        receipts = session.receipts
        if receipts is None or receipts.arm is not None or session.sink is not self._handle:
            return
        ctx = self.ctx
        settings = ctx.settings.session
        receipts.wire(
            ctx.clock, self._arm_receipts, settings.receipt_timeout, settings.receipt_attempts
        )

    def _arm_receipts(self, delay: float) -> None:
        # Called by Session (the one timer of its receipts, Receipts.arm_in),
        # possibly while another actor delivers to it: only a wakeup is asked.
        self.wakeupAfter(max(delay, 0.0), _RECEIPTS_DUE)

    def _redeliver_due(self) -> None:
        """The receipts timer fired: redeliver what is overdue (Session.redeliver)."""
        session, handle = self.session, self._handle
        if session is None or handle is None or session.sink is not handle:
            return  # the session moved to another connection, which has its own timer
        if session.receipts is None:
            return
        done = session.redeliver(self.ctx.clock(), self._write_redelivered)
        if done.written:
            self.ctx.metrics.frame_out(ServerFrame.MESSAGE, done.written)
        if done.given_up:
            self.ctx.log.debug(
                "delivery receipts: gave up on messages without a receipt",
                connection_id=handle.connection_id,
                user=session.user,
                given_up=done.given_up,
            )

    def _write_redelivered(self, seq: int, tail: bytes) -> bool:
        """Write one redelivery now, unless the outbox is full or a replay runs."""
        handle, session = self.handle, self.session
        if handle.closing or handle.write_paused or session is None or session.holding:
            return False
        return handle.push_message(codec.with_seq_redelivered(seq, tail))

    def _on_received(self, cmd: Received) -> None:
        # A cumulative receipt; never answered (docs/protocol.md "Delivery receipts").
        session = self._session()
        if cmd.seq > session.seq:
            raise BadRequest("'seq' is ahead of the last message sent", request_id=cmd.id)
        session.acknowledge(cmd.seq)

    def _on_unsubscribe(self, cmd: Unsubscribe) -> None:
        session = self._session()
        if cmd.topic not in session.subscriptions:
            frame = codec.encode_frame(ServerFrame.UNSUBSCRIBED, cmd.id, topic=cmd.topic)
            self._push(frame, ServerFrame.UNSUBSCRIBED)
            return
        self._route(ROUTE_TOPIC, RouteUnsubscribe(session, cmd.topic, cmd.id))

    def _on_publish(self, cmd: Publish) -> None:
        ctx, session = self.ctx, self._session()
        if not ctx.policy.can_publish(session.roles, cmd.topic, session.user):
            raise _forbidden("publish to", cmd.topic)
        if cmd.id is None:
            self._route(
                ROUTE_TOPIC, RoutePublish(session, cmd.topic, cmd.data, cmd.id, self._received)
            )
            return
        # De-duplication (docs/protocol.md "publish"). The session remembers
        # the ids it used on this node, so a retry here is answered at once,
        # and a node alone needs nothing else. With other nodes, the shared
        # store says whether the id was used on any of them; later frames
        # wait meanwhile, so the client's frames keep their order.
        if self.ctx.directory.lookup(ROUTE_TOPIC) is None:
            raise Unavailable("routing is restarting, retry")  # before the id is recorded
        limits = ctx.settings.limits
        key, now = _publish_key(cmd.id), ctx.clock()
        if session.used_publish_id(key, now, limits.dedup_window):
            self._push(codec.encode_frame(ServerFrame.ACK, cmd.id, duplicate=True), ServerFrame.ACK)
            return
        if not ctx.backends.broker.distributed:
            session.note_publish_id(key, now, limits.dedup_max_ids)
            self._route(
                ROUTE_TOPIC, RoutePublish(session, cmd.topic, cmd.data, cmd.id, self._received)
            )
            return
        first = ctx.backends.sessions.first_publish(
            session.id, key, limits.dedup_window, limits.dedup_max_ids
        )
        self._deduping = True

        def checked(is_first: bool) -> None:
            self._deduped(cmd, session, is_first)

        def failed(exc: BaseException) -> None:
            self._deduped(cmd, session, None)

        self.call(first, checked, failed)

    def _deduped(self, cmd: Publish, session: Session, first: bool | None) -> None:
        """The store answered a publish's id check: route it, or ack it as a
        duplicate; then the frames that waited.

        ``first`` is None when the store failed (degraded): the publish is
        refused as ``unavailable`` when other instances share the backend,
        else routed locally without de-duplication.
        """
        self._deduping = False
        if first is not None and cmd.id is not None:
            limits = self.ctx.settings.limits
            session.note_publish_id(_publish_key(cmd.id), self.ctx.clock(), limits.dedup_max_ids)
        if not self.handle.closing:
            try:
                if first is None and self.ctx.backends.broker.distributed:
                    # Degraded, with other instances to reach: the publish
                    # needs the backend anyway; refused before any delivery,
                    # so a retry is never delivered twice (docs/protocol.md).
                    raise Unavailable("publish de-duplication unavailable, retry")
                if first is False:
                    frame = codec.encode_frame(ServerFrame.ACK, cmd.id, duplicate=True)
                    self._push(frame, ServerFrame.ACK)
                else:
                    # None: one instance alone goes on delivering locally
                    # while degraded, de-duplicated best-effort.
                    self._route(
                        ROUTE_TOPIC,
                        RoutePublish(session, cmd.topic, cmd.data, cmd.id, self._received),
                    )
            except ProtocolError as exc:
                self._error(cmd.id, exc)
        waiting = self._waiting
        while waiting and not self._deduping:
            msg, counted = waiting.popleft()
            if not counted:
                self.handle.handled()
            self._on_text(msg)

    def _on_send(self, cmd: Send) -> None:
        ctx, session = self.ctx, self._session()
        if not ctx.policy.can_direct(session.roles):
            raise _forbidden("send direct messages", None)
        self._route(
            ROUTE_DIRECT,
            RouteDirect(session, cmd.to_user, cmd.to_connection, cmd.data, cmd.id, self._received),
        )

    def _on_join(self, cmd: Join) -> None:
        ctx, session = self.ctx, self._session()
        if not ctx.policy.can_join(session.roles):
            raise _forbidden("join rooms", None)
        if not ctx.policy.can_join_room(session.roles, cmd.room, session.user):
            raise _forbidden("join room", cmd.room)
        if cmd.room not in session.rooms and len(session.rooms) >= ctx.settings.limits.max_rooms:
            raise LimitExceeded("too many rooms")
        self._route(ROUTE_ROOM, RouteJoin(session, cmd.room, cmd.id))

    def _on_leave(self, cmd: Leave) -> None:
        self._route(ROUTE_ROOM, RouteLeave(self._session(), cmd.room, cmd.id))

    def _on_broadcast(self, cmd: Broadcast) -> None:
        ctx, session = self.ctx, self._session()
        scope = cmd.kind
        if not ctx.policy.can_broadcast(session.roles, scope):
            raise _forbidden(f"send {scope} broadcasts", None)
        if cmd.room is not None:
            self._route(
                ROUTE_ROOM, RouteRoomBroadcast(session, cmd.room, cmd.data, cmd.id, self._received)
            )
        else:
            self._route(
                ROUTE_BROADCAST,
                RouteWideBroadcast(session, cmd.filter, cmd.data, cmd.id, self._received),
            )

    def _on_presence(self, cmd: PresenceQuery) -> None:
        ctx, session = self.ctx, self._session()
        if not ctx.policy.can_presence(session.roles):
            raise _forbidden("query presence", None)
        self._route(ROUTE_ROOM, RoutePresence(session, cmd.room, cmd.user, cmd.id))

    def _on_ping(self, cmd: Ping) -> None:
        self._push(codec.encode_frame(ServerFrame.PONG, cmd.id), ServerFrame.PONG)

    # -- helpers -----------------------------------------------------------------

    def _session(self) -> Session:
        session = self.session
        if session is None:  # the state machine only lets commands through once established
            raise NotConfigured("command before the session was established")
        return session

    def _route(self, name: str, request: Any) -> None:
        address = self.ctx.directory.lookup(name)
        if address is None:
            # The routing subsystem is restarting: tell the client to retry.
            raise Unavailable("routing is restarting, retry")
        if self._tracing is not None:
            self._route_traced(self._tracing, address, request)
            return
        self.send(address, request)

    def _route_traced(self, tracing: Tracing, address: ActorAddress, request: Any) -> None:
        """Forward ``request``; a client message sampled for tracing as its traced
        variant, in ``rtcs.receive``."""
        attributes: dict[str, Any] | None = frame_attributes(request)
        if attributes is None or not tracing.sample():  # not a message, or not sampled
            self.send(address, request)
            return
        attributes[CONNECTION_ID] = self.handle.connection_id
        attributes[USER] = request.session.user
        span = tracing.receive(attributes)
        try:
            self.send(address, traced_request(request, span))
        finally:
            span.end()

    def _push(self, frame: bytes, kind: ServerFrame) -> None:
        if self.handle.push(frame):
            self.ctx.metrics.frame_out(kind)

    def _error(self, request_id: RequestId, exc: ProtocolError) -> None:
        self.ctx.metrics.error(exc.code)
        self._push(codec.encode_error(request_id, exc.code, exc.message), ServerFrame.ERROR)

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
        if identity is None:
            return
        delay = identity.expires_at - ctx.wall()
        if self.machine.state is State.ACTIVE:
            idle_in = self._last_activity + ctx.settings.heartbeat.idle_after - ctx.clock()
            delay = min(delay, idle_in)
        self._check_generation += 1
        self.wakeupAfter(max(delay, 0.0), CheckDue(self._check_generation))

    # -- role downgrade (docs/protocol.md "Permissions") --------------------------------

    def _revoked(self, session: Session) -> _Revoked:
        """What the session's (new) roles no longer allow; its buffered
        messages are withheld from replay at once."""
        topics, rooms = self.ctx.policy.revoked(
            session.roles, session.user, session.subscriptions, session.rooms
        )
        if not topics and not rooms:
            return _NOTHING_REVOKED
        kept = [p for p in session.subscriptions if p not in topics]
        return _Revoked(topics, rooms, session.withhold(topics, kept, rooms))

    def _drop(self, session: Session, revoked: _Revoked) -> None:
        """Drop revoked subscriptions and rooms through the handlers' own
        unsubscribe and leave paths; each answers with a ``reason``."""
        for pattern in revoked.topics:
            self._drop_one(
                ROUTE_TOPIC,
                RouteUnsubscribe(session, pattern, None, "forbidden"),
                session.subscriptions,
                pattern,
                codec.encode_frame(ServerFrame.UNSUBSCRIBED, topic=pattern, reason="forbidden"),
                ServerFrame.UNSUBSCRIBED,
            )
        for room in revoked.rooms:
            self._drop_one(
                ROUTE_ROOM,
                RouteLeave(session, room, None, "forbidden"),
                session.rooms,
                room,
                codec.encode_frame(ServerFrame.LEFT, room=room, reason="forbidden"),
                ServerFrame.LEFT,
            )
        if revoked.topics or revoked.rooms:
            self.ctx.log.info(
                "roles no longer allow subscriptions or rooms: dropped",
                connection_id=self.handle.connection_id,
                user=session.user,
                topics=len(revoked.topics),
                rooms=len(revoked.rooms),
            )

    def _drop_one(
        self,
        name: str,
        request: RouteUnsubscribe | RouteLeave,
        held: set[str],
        target: str,
        frame: bytes,
        kind: ServerFrame,
    ) -> None:
        address = self.ctx.directory.lookup(name)
        if address is not None:
            self.send(address, request)
            return
        # The handler is restarting: it rebuilds its index from the sessions,
        # so dropping it from the session is enough.
        held.discard(target)
        self._push(frame, kind)

    # -- establishing the session (docs/protocol.md "Sessions, resume and replay") ---------

    def _establish(
        self,
        identity: Identity,
        session_id: str | None,
        last_seq: int | None,
        request_id: RequestId,
    ) -> None:
        """Authenticated: resume or create the session, welcome, replay."""
        ctx = self.ctx
        limits = ctx.settings.limits
        if len(ctx.sessions.attached_of(identity.user)) >= limits.max_connections_per_user:
            self.machine.fire(Event.AUTH_FAILED)
            self.handle.close(CloseCode.CONNECTION_LIMIT, "too many connections for this user")
            return
        revoker = ctx.revoker
        if (
            session_id is not None
            and revoker is not None
            and revoker.table.session_refused(session_id, ctx.wall())
        ):
            session_id = None  # a revoked session is never resumed: a new one starts
        shared = ctx.write_behind is not None
        plan = plan_resume(ctx.sessions, identity.user, session_id, last_seq, shared=shared)
        if plan.verdict is ResumeVerdict.CLAIM and session_id is not None and last_seq is not None:
            # Not here, but other nodes share sessions: claim it from the store.
            # Frames that arrive meanwhile are held and handled after welcome.
            self._held = []
            claimed_seq = last_seq

            def claimed(snap: SessionSnapshot | None) -> None:
                self._claimed(identity, snap, claimed_seq, request_id)

            def failed(exc: BaseException) -> None:
                self._claimed(identity, None, claimed_seq, request_id)

            self.call(ctx.backends.sessions.claim(session_id, identity.user), claimed, failed)
            return
        self._welcome(identity, plan, request_id)

    def _claimed(
        self,
        identity: Identity,
        snap: SessionSnapshot | None,
        last_seq: int,
        request_id: RequestId,
    ) -> None:
        if self.handle.closing:
            return
        ctx = self.ctx
        session: Session | None = None
        if snap is not None:
            session = ctx.sessions.restore_snapshot(snap, identity.roles, ctx.clock())
            for name in (ROUTE_TOPIC, ROUTE_ROOM):
                address = ctx.directory.lookup(name)
                if address is not None:
                    self.send(address, IndexSession(session))
            interests = _interests(session)
            broker = ctx.backends.broker
            if interests and broker.distributed:
                # This node may not have listened to these topics and rooms
                # yet: welcome only once their subscriptions are live, so
                # nothing published elsewhere from now on is missed (what
                # arrives meanwhile is buffered in the session and replayed).
                waits = [broker.listen(kind, target) for kind, target in interests]

                def live(_: object = None) -> None:
                    for kind, target in interests:
                        broker.unlisten(kind, target)
                    self._finish_claim(identity, session, last_seq, request_id)

                self.call(_all(waits), live, live)
                return
        self._finish_claim(identity, session, last_seq, request_id)

    def _finish_claim(
        self,
        identity: Identity,
        session: Session | None,
        last_seq: int,
        request_id: RequestId,
    ) -> None:
        if self.handle.closing:
            return
        # A restored session that cannot be resumed is left for the reaper.
        self._welcome(identity, plan_claimed(session, last_seq), request_id, claimed=True)
        held, self._held = self._held or [], None
        for frame in held:
            self._on_text(frame)

    def _welcome_frame(
        self, session: Session, resumed: bool, replayed: int | None, request_id: RequestId
    ) -> bytes:
        ctx = self.ctx
        return codec.encode_welcome(
            connection_id=self.handle.connection_id,
            session_id=session.id,
            user=session.user,
            roles=list(session.roles),
            heartbeat=int(ctx.settings.heartbeat.interval),
            resumed=resumed,
            replayed=replayed,
            server=ctx.node_id,
            id=request_id,
            degraded=ctx.degraded,
        )

    def _welcome(
        self, identity: Identity, plan: ResumePlan, request_id: RequestId, *, claimed: bool = False
    ) -> None:
        ctx, handle = self.ctx, self.handle
        write_behind = ctx.write_behind
        crash_safe = write_behind is not None and write_behind.crash_safe
        session = plan.session
        if plan.previous is not None and session is not None:
            # The client reconnected before its old socket was noticed gone:
            # the new connection takes the session over.
            ctx.sessions.detach(session, ctx.clock())
            plan.previous.close(CloseCode.NORMAL, "session resumed by another connection")
        if session is None:
            session = ctx.sessions.create(identity.user, identity.roles)
        elif write_behind is not None and not crash_safe:
            write_behind.delete(session.id)  # resumed here: no one else may
        session.roles = identity.roles
        # Before the session is saved (crash-safe) and replayed: what the new
        # roles no longer allow is withheld from every replay.
        revoked = self._revoked(session)
        ctx.sessions.attach(session, handle)
        # Crash-safe: stored while attached too (owned by this node; after a
        # claim, taken over from the node it came from).
        mirror_attached(ctx, session, take_over=claimed and plan.resumed)
        handle.user = identity.user
        self.session = session
        self.identity = identity
        self.machine.fire(Event.AUTH_OK)
        self._schedule_check()
        replay = plan.replay
        if revoked.withheld:
            replay = tuple(entry for entry in replay if entry[0] not in revoked.withheld)
        replayed = len(replay) if plan.resumed else None
        self._push(
            self._welcome_frame(session, plan.resumed, replayed, request_id), ServerFrame.WELCOME
        )
        redeliver: list[tuple[int, bytes]] = []
        if plan.resumed and session.receipts is not None:
            # Delivery receipts: what awaits a receipt up to last_seq goes again.
            self._wire_receipts(session)
            redeliver = session.resume_receipts(plan.last_seq, ctx.clock())
        if replay or redeliver:
            # Through the outbox at the pace the client reads (_replay_more):
            # first the redeliveries, then the replay; live messages wait in
            # the session's buffer and follow in order.
            session.holding = True
            self._redeliver = deque(redeliver) if redeliver else None
            self._replay_cursor = replay[0][0] - 1 if replay else session.seq
            self._replay_more()
        else:
            session.receipts_sent(ctx.clock())
        if plan.requested:
            ctx.metrics.resume("resumed" if plan.resumed else "expired")
        ctx.log.debug(
            "connection authenticated",
            connection_id=handle.connection_id,
            user=session.user,
            session_id=session.id,
            resumed=plan.resumed,
        )
        # Before presence: the room handler then announces only the rooms kept.
        self._drop(session, revoked)
        if plan.resumed:
            announce_presence(ctx, self, session, online=True)
        add = ctx.backends.presence.add_connection
        ctx.background.submit(add, session.user, handle.connection_id, ctx.node_id)

    # -- flow-controlled replay ----------------------------------------------------

    def _replay_more(self) -> None:
        """Write buffered messages after the cursor until the outbox is full.

        Then wait for it to drain (``ClientHandle.drained``) and go on; once
        the buffer is exhausted, live delivery resumes (``session.holding``
        off). Messages delivered meanwhile were buffered and are written here,
        after the older ones. If the buffer wrapped past the cursor (the
        client reads slower than messages arrive), the connection is closed
        4008 like any consumer that is too slow.

        With delivery receipts, the messages up to ``last_seq`` still awaiting
        a receipt (``_redeliver``) are written first, marked redelivered; once
        everything is written, what awaits a receipt starts its timeout.
        """
        session, handle = self.session, self.handle
        if session is None or not session.holding or handle.closing:
            return
        written = 0
        redeliver = self._redeliver
        while redeliver:
            if handle.write_paused:
                self.call(handle.drained(), self._replay_drained, self._replay_failed)
                break
            seq, tail = redeliver[0]
            if not handle.push_message(codec.with_seq_redelivered(seq, tail)):
                break  # closing: nothing more to write
            redeliver.popleft()
            written += 1
        if redeliver:  # waiting for the outbox to drain, or closing
            if written:
                self.ctx.metrics.frame_out(ServerFrame.MESSAGE, written)
            return
        self._redeliver = None
        entries = session.replay_after(self._replay_cursor)
        if entries is None:
            session.holding = False
            self.ctx.metrics.outbox_drop("overflow")
            handle.close(CloseCode.TOO_SLOW, "replay fell behind")
            return
        for seq, tail in entries:
            if handle.write_paused:
                self.call(handle.drained(), self._replay_drained, self._replay_failed)
                break
            if not handle.push_message(codec.with_seq(seq, tail)):
                break  # closing: nothing more to write
            self._replay_cursor = seq
            written += 1
        else:
            session.holding = False
            session.receipts_sent(self.ctx.clock())
        if written:
            self.ctx.metrics.frame_out(ServerFrame.MESSAGE, written)

    def _replay_drained(self, _: None) -> None:
        self._replay_more()

    def _replay_failed(self, exc: BaseException) -> None:
        session = self.session
        if session is not None:
            session.holding = False


@dataclass(frozen=True, slots=True)
class _Revoked:
    """Subscriptions and rooms the new roles no longer allow, and the ``seq``
    of the buffered messages withheld for them."""

    topics: list[str]
    rooms: list[str]
    withheld: set[int]


_NOTHING_REVOKED = _Revoked([], [], set())


@dataclass(frozen=True, slots=True)
class _ReceiptsDue:
    """Wakeup payload: the session's delivery-receipts timer (one per session)."""


_RECEIPTS_DUE = _ReceiptsDue()


def _interests(session: Session) -> list[tuple[EnvelopeKind, str]]:
    """What a session needs this node's broker to listen to (its topics and rooms)."""
    found: list[tuple[EnvelopeKind, str]] = [("topic", p) for p in session.subscriptions]
    found += [("room", room) for room in session.rooms]
    return found


async def _all(waits: list[Awaitable[None]]) -> None:
    """Await every subscription; the first failure is raised after all settled."""
    results = await asyncio.gather(*waits, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _publish_key(request_id: str | int) -> str:
    """The de-duplication key of a publish ``id``: ``7`` and ``"7"`` differ."""
    return f"i:{request_id}" if isinstance(request_id, int) else f"s:{request_id}"


def _forbidden(action: str, topic: str | None) -> Forbidden:
    return Forbidden(f"not allowed to {action} {topic}" if topic else f"not allowed to {action}")


#: The name of the handler of each client command type (``WebSocketActor._dispatch``;
#: a name, so a handler replaced on the class is the one that runs).
_HANDLERS: dict[type[Any], str] = {
    Auth: "_on_auth",
    Subscribe: "_on_subscribe",
    Unsubscribe: "_on_unsubscribe",
    Publish: "_on_publish",
    Send: "_on_send",
    Join: "_on_join",
    Leave: "_on_leave",
    Broadcast: "_on_broadcast",
    PresenceQuery: "_on_presence",
    Ping: "_on_ping",
    Received: "_on_received",
}
assert set(_HANDLERS) == set(get_args(Command)), "a client command without a handler"
