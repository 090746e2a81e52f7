"""``RoomHandler``: rooms, room broadcasts and presence (room members and user presence).

Room membership belongs to the session and survives a reconnect, so room
messages are buffered for a detached session; *presence* counts attached
sessions only: a member whose last connection drops "leaves" and "joins"
again on resume.

The broker listens to a room while a local session (attached or detached:
a detached member's room messages are buffered) is in it (``RouteHandler``,
"Broker interest"); ``joined`` is answered once that is live.

Only members broadcast into a room, and a room's presence needs membership or
the role's ``presence_rooms`` (docs/protocol.md "Permissions"): both are
checked here, in order after the session's joins and leaves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from thespian.actors import ActorAddress

from rtcs.actors.messages import (
    IndexSession,
    RemoteEnvelope,
    RouteJoin,
    RouteLeave,
    RoutePresence,
    RouteRoomBroadcast,
    SessionPresence,
    UnindexSession,
)
from rtcs.actors.routing.handler import RouteHandler, ignore_failure
from rtcs.backends.base import Envelope
from rtcs.errors import Forbidden
from rtcs.protocol import codec
from rtcs.protocol.frames import RequestId, ServerFrame
from rtcs.sessions import Session

PresenceEvent = Literal["join", "leave"]


class RoomHandler(RouteHandler):
    """Room membership index, room broadcasts, and presence queries and events."""

    def __init__(self) -> None:
        super().__init__()
        self.rooms: dict[str, set[Session]] = {}

    def rebuild(self) -> None:
        self.rooms = {}
        self.reset_listening("room")
        for session in self.ctx.sessions:
            for room in session.rooms:
                self._index(session, room)

    def _index(self, session: Session, room: str) -> None:
        members = self.rooms.get(room)
        if members is None:
            members = self.rooms[room] = set()
            self.start_listening("room", room)
        members.add(session)

    def _announce(self, room: str, event: PresenceEvent, user: str, skip: Session | None) -> None:
        ctx = self.ctx
        frame = codec.encode_presence_event(room, event, user)
        self._push_presence(room, frame, skip)
        self.publish_remote(lambda: Envelope(ctx.node_id, "presence", room, frame), ignore_failure)

    def _push_presence(self, room: str, frame: bytes, skip: Session | None) -> None:
        """Presence events go to live members only (they carry no ``seq``)."""
        sent = 0
        for member in self.rooms.get(room, ()):
            if member is not skip and member.sink is not None and member.sink.push(frame):
                sent += 1
        if sent:
            self.ctx.metrics.frame_out(ServerFrame.PRESENCE, sent)

    def _joined(
        self, session: Session, room: str, request_id: RequestId, members: list[str]
    ) -> None:
        frame = codec.encode_frame(ServerFrame.JOINED, request_id, room=room, members=members)
        self.reply(session, frame, ServerFrame.JOINED)

    # -- join / leave ---------------------------------------------------------------

    def receiveMsg_RouteJoin(self, msg: RouteJoin, sender: ActorAddress) -> None:
        ctx = self.ctx
        session, room, request_id = msg.session, msg.room, msg.request_id
        presence = ctx.backends.presence
        if room in session.rooms:
            self.call(
                presence.members(room),
                lambda members: self._joined(session, room, request_id, members),
                self.unavailable(session, request_id),
            )
            return
        session.rooms.add(room)
        self._index(session, room)

        async def join() -> tuple[bool, list[str]]:
            became = await presence.join(room, session.user, session.id, ctx.node_id)
            return became, await presence.members(room)

        def joined(result: tuple[bool, list[str]]) -> None:
            became, members = result
            # Once the broker listens to the room: other nodes' messages
            # published after ``joined`` reach the client.
            self.await_listening(
                "room", room, lambda: self._joined(session, room, request_id, members)
            )
            if became:
                self._announce(room, "join", session.user, skip=session)

        def failed(exc: BaseException) -> None:
            self._remove(session, room)  # not joined: the client is told so
            self.unavailable(session, request_id)(exc)

        self.call(join(), joined, failed)

    def receiveMsg_RouteLeave(self, msg: RouteLeave, sender: ActorAddress) -> None:
        # A client's leave, or a dropped membership (``reason``): the same path.
        session, room, request_id = msg.session, msg.room, msg.request_id
        extra = {} if msg.reason is None else {"reason": msg.reason}
        frame = codec.encode_frame(ServerFrame.LEFT, request_id, room=room, **extra)
        if room not in session.rooms:
            if msg.reason is None:
                self.reply(session, frame, ServerFrame.LEFT)
            return
        self._remove(session, room)
        failed = self.unavailable(session, request_id)
        if msg.reason is not None:
            # Dropped by the server: the client is told at once (it is no
            # member any more, whatever presence answers).
            self.reply(session, frame, ServerFrame.LEFT)
            failed = self.log_failure

        def left(was_last: bool) -> None:
            if msg.reason is None:
                self.reply(session, frame, ServerFrame.LEFT)
            if was_last:
                self._announce(room, "leave", session.user, skip=session)

        presence = self.ctx.backends.presence
        self.call(presence.leave(room, session.user, session.id), left, failed)

    def _remove(self, session: Session, room: str) -> None:
        session.rooms.discard(room)
        self._unindex(session, room)

    def _unindex(self, session: Session, room: str) -> None:
        members = self.rooms.get(room)
        if members is not None:
            members.discard(session)
            if not members:
                del self.rooms[room]
                self.stop_listening("room", room)

    # -- room broadcast ----------------------------------------------------------------

    def receiveMsg_RouteRoomBroadcast(self, msg: RouteRoomBroadcast, sender: ActorAddress) -> None:
        ctx = self.ctx
        started = msg.received or time.perf_counter()
        session = msg.session
        # Checked here, not in the connection actor: a join sent just before
        # is handled first (docs/protocol.md "Permissions").
        if msg.room not in session.rooms:
            self.error(session, msg.request_id, Forbidden("only members broadcast into a room"))
            return
        tail = codec.message_tail(
            room=msg.room, from_user=session.user, data=msg.data, ts=self.now_ms()
        )
        members = self.rooms.get(msg.room, ())

        def envelope() -> Envelope:
            return Envelope(ctx.node_id, "room", msg.room, tail)

        self.route("room", members, tail, envelope, session, msg.request_id, started)

    # -- presence ------------------------------------------------------------------------

    def receiveMsg_RoutePresence(self, msg: RoutePresence, sender: ActorAddress) -> None:
        presence = self.ctx.backends.presence
        session, request_id = msg.session, msg.request_id
        failed = self.unavailable(session, request_id)
        if msg.room is not None:
            room = msg.room
            if room not in session.rooms and not self.ctx.policy.can_presence_room(
                session.roles, room
            ):
                self.error(session, request_id, Forbidden("not allowed to query presence of room"))
                return

            def members(users: list[str]) -> None:
                frame = codec.encode_frame(
                    ServerFrame.PRESENCE_STATE, request_id, room=room, members=users
                )
                self.reply(session, frame, ServerFrame.PRESENCE_STATE)

            self.call(presence.members(room), members, failed)
            return
        user = msg.user or ""

        def online(connections: int) -> None:
            frame = codec.encode_frame(
                ServerFrame.PRESENCE_STATE,
                request_id,
                user=user,
                online=connections > 0,
                connections=connections,
            )
            self.reply(session, frame, ServerFrame.PRESENCE_STATE)

        self.call(presence.user_connections(user), online, failed)

    def receiveMsg_SessionPresence(self, msg: SessionPresence, sender: ActorAddress) -> None:
        ctx = self.ctx
        session = msg.session
        presence = ctx.backends.presence
        event: PresenceEvent = "join" if msg.online else "leave"
        for room in list(session.rooms):
            change = (
                presence.join(room, session.user, session.id, ctx.node_id)
                if msg.online
                else presence.leave(room, session.user, session.id)
            )
            self.call(change, self._changed(room, session, event), self.log_failure)

    def _changed(self, room: str, session: Session, event: PresenceEvent) -> Callable[[bool], None]:
        def changed(user_changed: bool) -> None:
            if user_changed:
                self._announce(room, event, session.user, skip=session)

        return changed

    # -- other nodes and indexing ------------------------------------------------------------

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: ActorAddress) -> None:
        env = msg.envelope
        if env.kind == "presence":
            self._push_presence(env.target, env.tail, None)
            return
        self.deliver_envelope("room", self.rooms.get(env.target, ()), env)

    def receiveMsg_IndexSession(self, msg: IndexSession, sender: ActorAddress) -> None:
        for room in msg.session.rooms:
            self._index(msg.session, room)

    def receiveMsg_UnindexSession(self, msg: UnindexSession, sender: ActorAddress) -> None:
        for room in msg.session.rooms:
            self._unindex(msg.session, room)
