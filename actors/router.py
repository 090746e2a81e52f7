"""The message router: a supervisor (all-for-one by default) of route handlers.

Each route handler owns one kind of routing and its index:

- ``TopicHandler``: subscribe/unsubscribe/publish over a ``TopicIndex``;
- ``DirectHandler``: direct messages to a user's connections or one connection;
- ``RoomHandler``: rooms, room broadcasts and presence;
- ``BroadcastHandler``: global and filtered broadcasts.

Handlers keep no state that cannot be rebuilt: on every (re)start they rebuild
their indexes from the node's ``SessionRegistry``, so a router restart never
loses the subscriptions or rooms of live sessions.

Fan-out encodes a message once (``codec.message_tail``) and hands the same
bytes to every recipient session, which splices in its own ``seq``; no actor
message and no JSON encode per recipient. Fan-outs larger than
``limits.fanout_chunk`` recipients are delivered over several handler turns so
the event loop keeps answering pings; later publishes queue behind them, which
keeps per-publisher order.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Literal

from thespian.actors import ActorTypeDispatcher, WakeupMessage

from rtcs.actors.context import NodeContext
from rtcs.actors.messages import (
    AsyncDone,
    Configure,
    FanoutContinue,
    IndexSession,
    RemoteEnvelope,
    RouteDirect,
    RouteJoin,
    RouteLeave,
    RoutePresence,
    RoutePublish,
    RouteRoomBroadcast,
    RouteSubscribe,
    RouteUnsubscribe,
    RouteWideBroadcast,
    ServerPublish,
    SessionPresence,
    UnindexSession,
)
from rtcs.backends.base import Envelope
from rtcs.errors import ErrorCode, ProtocolError, Unavailable
from rtcs.protocol import codec
from rtcs.protocol.topics import TopicIndex
from rtcs.runtime.control import run_async
from rtcs.runtime.supervision import Supervisor
from rtcs.sessions import Session


def _ignore_failure(failure: BaseException | None) -> None:
    """Server publishes have no one to ack; broker failures are counted already."""


class MessageRouter(Supervisor):
    """Supervises the route handlers; the strategy comes from configuration."""


class _Job:
    """A fan-out in progress: recipients left, the tail, and what to do after."""

    __slots__ = ("done", "pos", "recipients", "tail")

    def __init__(self, recipients: list[Session], tail: bytes, done: Callable[[], None] | None):
        self.recipients = recipients
        self.tail = tail
        self.pos = 0
        self.done = done


class RouteHandler(ActorTypeDispatcher):
    """Shared plumbing: configuration, replies, async backend calls, fan-out."""

    def __init__(self) -> None:
        super().__init__()
        self.ctx: NodeContext | None = None
        self._jobs: deque[_Job] = deque()
        self._continuing = False

    def receiveMsg_Configure(self, msg: Configure, sender: Any) -> None:
        self.ctx = msg.context
        self.rebuild()

    def rebuild(self) -> None:
        """Rebuild this handler's index from the session registry."""

    # -- replies -------------------------------------------------------------

    def reply(self, session: Session, frame: bytes, kind: str) -> None:
        sink = session.sink
        if sink is not None and sink.push(frame):
            self.ctx.metrics.frame_out(kind)  # type: ignore[union-attr]

    def ack(self, session: Session, request_id: Any) -> None:
        self.reply(session, codec.encode_ack(request_id), "ack")

    def error(
        self, session: Session, request_id: Any, exc: ProtocolError | ErrorCode, message: str = ""
    ) -> None:
        code = exc if isinstance(exc, ErrorCode) else exc.code
        text = message or (exc.message if isinstance(exc, ProtocolError) else code.value)
        self.ctx.metrics.error(code)  # type: ignore[union-attr]
        self.reply(session, codec.encode_error(request_id, code, text), "error")

    def presence_failed(self, result: Any, session: Session, request_id: Any) -> bool:
        """Answer ``unavailable`` when a presence backend call failed."""
        if isinstance(result, BaseException):
            self.ctx.log.warning("presence backend failed", error=type(result).__name__)  # type: ignore[union-attr]
            self.error(session, request_id, Unavailable("presence unavailable"))
            return True
        return False

    def now_ms(self) -> int:
        return int(self.ctx.wall() * 1000)  # type: ignore[union-attr]

    # -- async backend calls --------------------------------------------------------

    def call(self, awaitable: Awaitable[Any], tag: str, state: Any = None) -> None:
        """Run a backend coroutine; its result comes back as ``AsyncDone``."""
        run_async(self, awaitable, lambda result: AsyncDone(tag, result, state))

    def receiveMsg_AsyncDone(self, msg: AsyncDone, sender: Any) -> None:
        getattr(self, "done_" + msg.tag)(msg.result, msg.state)

    # -- fan-out -------------------------------------------------------------------------

    def fanout(
        self,
        recipients: Collection[Session],
        tail: bytes,
        done: Callable[[], None] | None,
    ) -> None:
        """Deliver ``tail`` to every recipient, in chunks when there are many.

        ``recipients`` may be a live index set: it is only iterated now, or
        copied when the delivery has to continue over later turns.
        """
        chunk = self.ctx.settings.limits.fanout_chunk  # type: ignore[union-attr]
        if not self._jobs and len(recipients) <= chunk:
            for session in recipients:
                session.deliver(tail)
            if done is not None:
                done()
            return
        self._jobs.append(_Job(list(recipients), tail, done))
        self._run_jobs()

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: Any) -> None:
        if isinstance(msg.payload, FanoutContinue):
            self._continuing = False
            self._run_jobs()

    def _run_jobs(self) -> None:
        budget = self.ctx.settings.limits.fanout_chunk  # type: ignore[union-attr]
        jobs = self._jobs
        while jobs and budget > 0:
            job = jobs[0]
            end = min(job.pos + budget, len(job.recipients))
            tail = job.tail
            for session in job.recipients[job.pos : end]:
                session.deliver(tail)
            budget -= end - job.pos
            job.pos = end
            if job.pos >= len(job.recipients):
                jobs.popleft()
                if job.done is not None:
                    job.done()
        if jobs and not self._continuing:
            # Continue on a later loop iteration, after the loop has polled
            # the sockets (pings, reads): a timer, not a message, since queued
            # messages may run in the same turn.
            self._continuing = True
            self.wakeupAfter(0, FanoutContinue())

    def route(
        self,
        kind: str,
        recipients: Collection[Session],
        tail: bytes,
        envelope: Callable[[], Envelope],
        session: Session,
        request_id: Any,
        started: float,
    ) -> None:
        """Deliver a client's message locally, then to other nodes, then ack it."""
        ctx = self.ctx
        assert ctx is not None
        ctx.metrics.delivered(kind, len(recipients))
        then = self.finish(session, request_id)

        def routed() -> None:
            ctx.metrics.routed(kind, time.perf_counter() - started)
            self.publish_remote(envelope, then)

        self.fanout(recipients, tail, routed)

    def deliver_remote(self, kind: str, recipients: Collection[Session], tail: bytes) -> None:
        """Deliver a message that came from another node (no ack, no broker)."""
        self.ctx.metrics.delivered(kind, len(recipients))  # type: ignore[union-attr]
        self.fanout(recipients, tail, None)

    # -- cross-node ----------------------------------------------------------------------

    def publish_remote(
        self, envelope: Callable[[], Envelope], then: Callable[[BaseException | None], None]
    ) -> None:
        """Hand a message to the broker for other nodes, then call ``then``.

        Local delivery never goes through the broker; with no other node to
        reach (``broker.distributed`` is False) ``then`` runs at once and the
        envelope is never built.
        """
        broker = self.ctx.backends.broker  # type: ignore[union-attr]
        if not broker.distributed:
            then(None)
            return
        self.call(broker.publish(envelope()), "remote", then)

    def done_remote(self, result: Any, then: Callable[[BaseException | None], None]) -> None:
        if isinstance(result, BaseException):
            self.ctx.metrics.broker_errors.inc()  # type: ignore[union-attr]
            then(result)
        else:
            then(None)

    def finish(self, session: Session, request_id: Any) -> Callable[[BaseException | None], None]:
        """The continuation that acks a request once it has been routed."""

        def then(failure: BaseException | None) -> None:
            if failure is None:
                self.ack(session, request_id)
            else:
                self.error(session, request_id, Unavailable("broker unavailable"))

        return then


class TopicHandler(RouteHandler):
    """Topic subscriptions and publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.index: TopicIndex[Session] = TopicIndex()

    def rebuild(self) -> None:
        self.index = TopicIndex()
        for session in self.ctx.sessions:  # type: ignore[union-attr]
            for pattern in session.subscriptions:
                self.index.add(pattern, session)

    def receiveMsg_RouteSubscribe(self, msg: RouteSubscribe, sender: Any) -> None:
        self.index.add(msg.pattern, msg.session)
        msg.session.subscriptions.add(msg.pattern)
        self.reply(
            msg.session,
            codec.encode_frame("subscribed", msg.request_id, topic=msg.pattern),
            "subscribed",
        )

    def receiveMsg_RouteUnsubscribe(self, msg: RouteUnsubscribe, sender: Any) -> None:
        self.index.remove(msg.pattern, msg.session)
        msg.session.subscriptions.discard(msg.pattern)
        self.reply(
            msg.session,
            codec.encode_frame("unsubscribed", msg.request_id, topic=msg.pattern),
            "unsubscribed",
        )

    def receiveMsg_RoutePublish(self, msg: RoutePublish, sender: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        started = time.perf_counter()
        session = msg.session
        recipients = self.index.match(msg.topic)
        if not recipients and not ctx.backends.broker.distributed:
            # Nobody to deliver to, here or elsewhere: nothing to encode.
            ctx.metrics.routed("topic", time.perf_counter() - started)
            self.ack(session, msg.request_id)
            return
        tail = codec.message_tail(
            topic=msg.topic, from_user=session.user, data=msg.data, ts=self.now_ms()
        )
        envelope = lambda: Envelope(ctx.node_id, "topic", msg.topic, tail)  # noqa: E731
        self.route("topic", recipients, tail, envelope, session, msg.request_id, started)

    def receiveMsg_ServerPublish(self, msg: ServerPublish, sender: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        tail = codec.message_tail(topic=msg.topic, data=msg.data, ts=self.now_ms())
        self.deliver_remote("topic", self.index.match(msg.topic), tail)
        if not msg.local_only:
            self.publish_remote(
                lambda: Envelope(ctx.node_id, "topic", msg.topic, tail), _ignore_failure
            )

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: Any) -> None:
        self.deliver_remote("topic", self.index.match(msg.envelope.target), msg.envelope.tail)

    def receiveMsg_IndexSession(self, msg: IndexSession, sender: Any) -> None:
        for pattern in msg.session.subscriptions:
            self.index.add(pattern, msg.session)

    def receiveMsg_UnindexSession(self, msg: UnindexSession, sender: Any) -> None:
        for pattern in list(msg.session.subscriptions):
            self.index.remove(pattern, msg.session)


class DirectHandler(RouteHandler):
    """Direct messages to every live connection of a user, or to one connection.

    Direct messages are not buffered for detached sessions (PROTOCOL.md).
    """

    def receiveMsg_RouteDirect(self, msg: RouteDirect, sender: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        started = time.perf_counter()
        sender_session = msg.session
        if msg.to_connection is not None:
            kind, key = "connection", msg.to_connection
        else:
            kind, key = "user", msg.to_user or ""
        targets = self._targets(kind, key)
        then = self.finish(sender_session, msg.request_id)
        if not targets and (kind == "connection" or not ctx.backends.broker.distributed):
            self.error(sender_session, msg.request_id, ErrorCode.OFFLINE, f"{kind} is offline")
            return
        tail = codec.message_tail(from_user=sender_session.user, data=msg.data, ts=self.now_ms())
        envelope = Envelope(ctx.node_id, "user", key, tail)
        if not targets:
            # Not here: is the user connected to another node?
            self.call(
                ctx.backends.presence.user_connections(key),
                "remote_user",
                (sender_session, msg.request_id, envelope, then),
            )
            return
        for session in targets:
            session.deliver(tail)
        ctx.metrics.delivered("direct", len(targets))
        ctx.metrics.routed("direct", time.perf_counter() - started)
        if kind == "connection":
            then(None)  # a connection lives on one node: found here, done
        else:
            self.publish_remote(lambda: envelope, then)  # the user's other nodes

    def _targets(self, kind: str, key: str) -> list[Session]:
        """The live sessions a direct message to a user or a connection reaches here."""
        sessions = self.ctx.sessions  # type: ignore[union-attr]
        if kind == "connection":
            target = sessions.by_connection(key)
            return [target] if target is not None else []
        return list(sessions.attached_of(key))

    def done_remote_user(self, result: Any, state: Any) -> None:
        session, request_id, envelope, then = state
        if self.presence_failed(result, session, request_id):
            return
        if result <= 0:
            self.error(session, request_id, ErrorCode.OFFLINE, "user is offline")
        else:
            self.publish_remote(lambda: envelope, then)

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: Any) -> None:
        env = msg.envelope
        self.deliver_remote("direct", self._targets(env.kind, env.target), env.tail)


class RoomHandler(RouteHandler):
    """Rooms, room broadcasts and presence (room members and user presence).

    Room membership belongs to the session and survives a reconnect, so room
    messages are buffered for a detached session; *presence* counts attached
    sessions only: a member whose last connection drops "leaves" and
    "joins" again on resume.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rooms: dict[str, set[Session]] = {}

    def rebuild(self) -> None:
        self.rooms = {}
        for session in self.ctx.sessions:  # type: ignore[union-attr]
            for room in session.rooms:
                self.rooms.setdefault(room, set()).add(session)

    def _announce(
        self, room: str, event: Literal["join", "leave"], user: str, skip: Session | None
    ) -> None:
        ctx = self.ctx
        assert ctx is not None
        frame = codec.encode_presence_event(room, event, user)
        self._push_presence(room, frame, skip)
        self.publish_remote(lambda: Envelope(ctx.node_id, "presence", room, frame), _ignore_failure)

    def _push_presence(self, room: str, frame: bytes, skip: Session | None) -> None:
        """Presence events go to live members only (they carry no ``seq``)."""
        sent = 0
        for member in self.rooms.get(room, ()):
            if member is not skip and member.sink is not None and member.sink.push(frame):
                sent += 1
        if sent:
            self.ctx.metrics.frame_out("presence", sent)  # type: ignore[union-attr]

    def receiveMsg_RouteJoin(self, msg: RouteJoin, sender: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        session, room = msg.session, msg.room
        if room in session.rooms:
            self.call(
                ctx.backends.presence.members(room),
                "members",
                (session, room, msg.request_id),
            )
            return
        session.rooms.add(room)
        self.rooms.setdefault(room, set()).add(session)
        presence = ctx.backends.presence

        async def join() -> tuple[bool, list[str]]:
            became = await presence.join(room, session.user, session.id, ctx.node_id)
            return became, await presence.members(room)

        self.call(join(), "joined", (session, room, msg.request_id))

    def done_joined(self, result: Any, state: Any) -> None:
        session, room, request_id = state
        if self.presence_failed(result, session, request_id):
            self._remove(session, room)  # not joined: the client was told so
            return
        became, members = result
        self.reply(
            session, codec.encode_frame("joined", request_id, room=room, members=members), "joined"
        )
        if became:
            self._announce(room, "join", session.user, skip=session)

    def done_members(self, result: Any, state: Any) -> None:
        session, room, request_id = state
        if self.presence_failed(result, session, request_id):
            return
        self.reply(
            session, codec.encode_frame("joined", request_id, room=room, members=result), "joined"
        )

    def receiveMsg_RouteLeave(self, msg: RouteLeave, sender: Any) -> None:
        session, room = msg.session, msg.room
        if room not in session.rooms:
            self.reply(session, codec.encode_frame("left", msg.request_id, room=room), "left")
            return
        self._remove(session, room)
        presence = self.ctx.backends.presence  # type: ignore[union-attr]
        self.call(
            presence.leave(room, session.user, session.id), "left", (session, room, msg.request_id)
        )

    def _remove(self, session: Session, room: str) -> None:
        session.rooms.discard(room)
        self._unindex(session, room)

    def _unindex(self, session: Session, room: str) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(session)
            if not members:
                del self.rooms[room]

    def done_left(self, result: Any, state: Any) -> None:
        session, room, request_id = state
        if self.presence_failed(result, session, request_id):
            return
        self.reply(session, codec.encode_frame("left", request_id, room=room), "left")
        if result:
            self._announce(room, "leave", session.user, skip=session)

    def receiveMsg_RouteRoomBroadcast(self, msg: RouteRoomBroadcast, sender: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        started = time.perf_counter()
        session = msg.session
        tail = codec.message_tail(
            room=msg.room, from_user=session.user, data=msg.data, ts=self.now_ms()
        )
        members = self.rooms.get(msg.room, ())
        envelope = lambda: Envelope(ctx.node_id, "room", msg.room, tail)  # noqa: E731
        self.route("room", members, tail, envelope, session, msg.request_id, started)

    def receiveMsg_RoutePresence(self, msg: RoutePresence, sender: Any) -> None:
        presence = self.ctx.backends.presence  # type: ignore[union-attr]
        if msg.room is not None:
            self.call(presence.members(msg.room), "presence_room", msg)
        else:
            self.call(presence.user_connections(msg.user or ""), "presence_user", msg)

    def done_presence_room(self, result: Any, msg: RoutePresence) -> None:
        if self.presence_failed(result, msg.session, msg.request_id):
            return
        frame = codec.encode_frame("presence_state", msg.request_id, room=msg.room, members=result)
        self.reply(msg.session, frame, "presence_state")

    def done_presence_user(self, result: Any, msg: RoutePresence) -> None:
        if self.presence_failed(result, msg.session, msg.request_id):
            return
        frame = codec.encode_frame(
            "presence_state", msg.request_id, user=msg.user, online=result > 0, connections=result
        )
        self.reply(msg.session, frame, "presence_state")

    def receiveMsg_SessionPresence(self, msg: SessionPresence, sender: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        session = msg.session
        presence = ctx.backends.presence
        for room in list(session.rooms):
            change = (
                presence.join(room, session.user, session.id, ctx.node_id)
                if msg.online
                else presence.leave(room, session.user, session.id)
            )
            event = "join" if msg.online else "leave"
            self.call(change, "presence_changed", (room, session, event))

    def done_presence_changed(self, result: Any, state: Any) -> None:
        room, session, event = state
        if isinstance(result, BaseException):
            self.ctx.log.warning("presence backend failed", error=type(result).__name__)  # type: ignore[union-attr]
        elif result is True:
            self._announce(room, event, session.user, skip=session)

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: Any) -> None:
        if msg.envelope.kind == "presence":
            self._push_presence(msg.envelope.target, msg.envelope.tail, None)
            return
        self.deliver_remote("room", self.rooms.get(msg.envelope.target, ()), msg.envelope.tail)

    def receiveMsg_IndexSession(self, msg: IndexSession, sender: Any) -> None:
        for room in msg.session.rooms:
            self.rooms.setdefault(room, set()).add(msg.session)

    def receiveMsg_UnindexSession(self, msg: UnindexSession, sender: Any) -> None:
        for room in msg.session.rooms:
            self._unindex(msg.session, room)


class BroadcastHandler(RouteHandler):
    """Global broadcasts (``room`` is ``"*"``) and broadcasts filtered by roles/users."""

    def receiveMsg_RouteWideBroadcast(self, msg: RouteWideBroadcast, sender: Any) -> None:
        ctx = self.ctx
        assert ctx is not None
        started = time.perf_counter()
        session = msg.session
        tail = codec.message_tail(room="*", from_user=session.user, data=msg.data, ts=self.now_ms())
        kind: Literal["global", "filter"] = "global" if msg.filter is None else "filter"
        roles, users = (msg.filter.roles, msg.filter.users) if msg.filter else ((), ())
        recipients = self._select(kind, roles, users)
        envelope = lambda: Envelope(ctx.node_id, kind, "", tail, roles=roles, users=users)  # noqa: E731
        self.route(kind, recipients, tail, envelope, session, msg.request_id, started)

    def _select(self, kind: str, roles: tuple[str, ...], users: tuple[str, ...]) -> list[Session]:
        sessions = self.ctx.sessions  # type: ignore[union-attr]
        return list(sessions) if kind == "global" else sessions.matching(roles, users)

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: Any) -> None:
        env = msg.envelope
        recipients = self._select(env.kind, env.roles, env.users)
        self.deliver_remote(env.kind, recipients, env.tail)
