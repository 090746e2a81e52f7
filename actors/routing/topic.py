"""``TopicHandler``: topic subscriptions and publishes over a ``TopicIndex``.

Besides the index it counts the local sessions per pattern: the broker
listens to a pattern while that count is above zero (``RouteHandler``,
"Broker interest"), and ``subscribed`` is answered once that is live.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from thespian.actors import ActorAddress

from rtcs.actors.messages import (
    IndexSession,
    RemoteEnvelope,
    RoutePublish,
    RouteSubscribe,
    RouteUnsubscribe,
    ServerPublish,
    UnindexSession,
)
from rtcs.actors.routing.handler import RouteHandler, ignore_failure
from rtcs.backends.base import Envelope
from rtcs.protocol import codec
from rtcs.protocol.frames import ServerFrame
from rtcs.protocol.topics import TopicIndex
from rtcs.sessions import Session


class TopicHandler(RouteHandler):
    """Topic subscriptions and publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.index: TopicIndex[Session] = TopicIndex()
        self.patterns: dict[str, int] = {}  # pattern -> local sessions subscribed

    def rebuild(self) -> None:
        self.index = TopicIndex()
        self.patterns = {}
        self.reset_listening("topic")
        for session in self.ctx.sessions:
            for pattern in session.subscriptions:
                self._add(pattern, session)

    def _add(self, pattern: str, session: Session, then: Callable[[], None] | None = None) -> None:
        """Index ``session`` under ``pattern``; ``then`` runs once the broker listens."""
        if not self.index.add(pattern, session):
            if then is not None:
                self.await_listening("topic", pattern, then)
            return
        count = self.patterns.get(pattern, 0)
        self.patterns[pattern] = count + 1
        if count == 0:
            self.start_listening("topic", pattern, then)
        elif then is not None:
            self.await_listening("topic", pattern, then)

    def _remove(self, pattern: str, session: Session) -> None:
        if not self.index.remove(pattern, session):
            return
        count = self.patterns.get(pattern, 0) - 1
        if count > 0:
            self.patterns[pattern] = count
            return
        self.patterns.pop(pattern, None)
        self.stop_listening("topic", pattern)

    def receiveMsg_RouteSubscribe(self, msg: RouteSubscribe, sender: ActorAddress) -> None:
        session, pattern = msg.session, msg.pattern
        session.subscriptions.add(pattern)
        frame = codec.encode_frame(ServerFrame.SUBSCRIBED, msg.request_id, topic=pattern)
        self._add(pattern, session, lambda: self.reply(session, frame, ServerFrame.SUBSCRIBED))

    def receiveMsg_RouteUnsubscribe(self, msg: RouteUnsubscribe, sender: ActorAddress) -> None:
        # A client's unsubscribe, or a dropped one (``reason``): the same path.
        self._remove(msg.pattern, msg.session)
        msg.session.subscriptions.discard(msg.pattern)
        extra = {} if msg.reason is None else {"reason": msg.reason}
        frame = codec.encode_frame(
            ServerFrame.UNSUBSCRIBED, msg.request_id, topic=msg.pattern, **extra
        )
        self.reply(msg.session, frame, ServerFrame.UNSUBSCRIBED)

    def receiveMsg_RoutePublish(self, msg: RoutePublish, sender: ActorAddress) -> None:
        ctx = self.ctx
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

        def envelope() -> Envelope:
            return Envelope(ctx.node_id, "topic", msg.topic, tail)

        self.route("topic", recipients, tail, envelope, session, msg.request_id, started)

    def receiveMsg_ServerPublish(self, msg: ServerPublish, sender: ActorAddress) -> None:
        ctx = self.ctx
        tail = codec.message_tail(topic=msg.topic, data=msg.data, ts=self.now_ms())
        self.deliver_remote("topic", self.index.match(msg.topic), tail)
        if not msg.local_only:
            self.publish_remote(
                lambda: Envelope(ctx.node_id, "topic", msg.topic, tail), ignore_failure
            )

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: ActorAddress) -> None:
        self.deliver_remote("topic", self.index.match(msg.envelope.target), msg.envelope.tail)

    def receiveMsg_IndexSession(self, msg: IndexSession, sender: ActorAddress) -> None:
        for pattern in msg.session.subscriptions:
            self._add(pattern, msg.session)

    def receiveMsg_UnindexSession(self, msg: UnindexSession, sender: ActorAddress) -> None:
        for pattern in list(msg.session.subscriptions):
            self._remove(pattern, msg.session)
