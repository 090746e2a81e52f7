"""``BroadcastHandler``: global broadcasts (``room`` is ``"*"``) and broadcasts
filtered by roles or users."""

from __future__ import annotations

import time
from typing import Literal

from thespian.actors import ActorAddress

from rtcs.actors.messages import RemoteEnvelope, RouteWideBroadcast
from rtcs.actors.routing.handler import RouteHandler
from rtcs.backends.base import Envelope
from rtcs.protocol import codec
from rtcs.protocol.frames import GLOBAL_ROOM
from rtcs.sessions import Session

WideKind = Literal["global", "filter"]


class BroadcastHandler(RouteHandler):
    """Selects recipients among every session of the node."""

    def receiveMsg_RouteWideBroadcast(self, msg: RouteWideBroadcast, sender: ActorAddress) -> None:
        ctx = self.ctx
        started = msg.received or time.perf_counter()
        session = msg.session
        tail = codec.message_tail(
            room=GLOBAL_ROOM, from_user=session.user, data=msg.data, ts=self.now_ms()
        )
        kind: WideKind = "global" if msg.filter is None else "filter"
        roles, users = (msg.filter.roles, msg.filter.users) if msg.filter else ((), ())
        recipients = self._select(kind, roles, users)

        def envelope() -> Envelope:
            return Envelope(ctx.node_id, kind, "", tail, roles=roles, users=users)

        self.route(kind, recipients, tail, envelope, session, msg.request_id, started)

    def _select(
        self, kind: WideKind, roles: tuple[str, ...], users: tuple[str, ...]
    ) -> list[Session]:
        sessions = self.ctx.sessions
        return list(sessions) if kind == "global" else sessions.matching(roles, users)

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: ActorAddress) -> None:
        env = msg.envelope
        kind: WideKind = "global" if env.kind == "global" else "filter"
        self.deliver_envelope(kind, self._select(kind, env.roles, env.users), env)
