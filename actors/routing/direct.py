"""``DirectHandler``: direct messages to every live connection of a user, or to one connection.

Direct messages are not buffered for detached sessions (docs/protocol.md ``send``).
Other nodes are found in presence (a connection's live node, the live nodes
holding a user's connections) and the message is published to each of those
nodes' own channels (``broker.publish(envelope, node)``): direct messages need
no broker interest, and reach no node that holds no target. The receiving node
delivers it to the connection or the user's live sessions it holds.

Traced (rtcs.tracing), a direct message's ``rtcs.deliver`` span covers its
local delivery, and its envelope carries the route span's ``traceparent``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from thespian.actors import ActorAddress

from rtcs.actors.messages import RemoteEnvelope, RouteDirect
from rtcs.actors.routing.handler import RouteHandler, Then
from rtcs.backends.base import Envelope, EnvelopeKind
from rtcs.errors import Offline
from rtcs.protocol import codec
from rtcs.sessions import Session


class DirectHandler(RouteHandler):
    """Direct messages, delivered here and handed to the broker for other nodes."""

    def receiveMsg_RouteDirect(self, msg: RouteDirect, sender: ActorAddress) -> None:
        ctx = self.ctx
        started = msg.received or time.perf_counter()
        sender_session, request_id = msg.session, msg.request_id
        to_connection = msg.to_connection is not None
        key = msg.to_connection if msg.to_connection is not None else msg.to_user or ""
        what: EnvelopeKind = "connection" if to_connection else "user"
        targets = self._targets(to_connection, key)
        if not targets and not ctx.backends.broker.distributed:
            self.error(sender_session, request_id, Offline(f"{what} is offline"))
            return
        then = self.finish(sender_session, request_id)
        tail = codec.message_tail(from_user=sender_session.user, data=msg.data, ts=self.now_ms())
        envelope = Envelope(ctx.node_id, what, key, tail)
        trace, span = self.trace, None
        if trace is not None:
            tracing, span, _ = self.traced_delivery(trace, "direct", len(targets))
            envelope = dataclasses.replace(envelope, trace=tracing.traceparent(trace))
        for session in targets:
            session.deliver(tail)
        if span is not None:
            span.end()
        if not targets:
            self._route_remote(msg, envelope, then)
            return
        ctx.metrics.delivered("direct", len(targets))
        ctx.after_write(lambda: ctx.metrics.routed("direct", time.perf_counter() - started))
        if to_connection:
            then(None)  # a connection lives on one node: found here, done
        else:
            self._to_user_nodes(envelope, then, self.unavailable(sender_session, request_id))

    def _route_remote(self, msg: RouteDirect, envelope: Envelope, then: Then) -> None:
        """No target here: publish ``envelope`` to the nodes presence knows hold one.

        A connection is looked up by id (its live node); a user by the live
        nodes holding their connections. None found: ``offline``.
        """
        ctx = self.ctx
        session, request_id = msg.session, msg.request_id
        presence = ctx.backends.presence
        failed = self.unavailable(session, request_id)
        if envelope.kind == "connection":

            def located(node: str | None) -> None:
                # This node, yet not in the registry: it closed meanwhile.
                if node is None or node == ctx.node_id:
                    self.error(session, request_id, Offline("connection is offline"))
                else:
                    self.publish_remote(lambda: envelope, then, [node])

            self.call(presence.connection_node(envelope.target), located, failed)
            return

        def offline() -> None:
            self.error(session, request_id, Offline("user is offline"))

        self._to_user_nodes(envelope, then, failed, offline)

    def _to_user_nodes(
        self,
        envelope: Envelope,
        then: Then,
        failed: Callable[[BaseException], None],
        none: Callable[[], None] | None = None,
    ) -> None:
        """Publish ``envelope`` to every other live node holding a connection of
        its user; ``none`` (else ``then``) when there is no such node."""
        node_id = self.ctx.node_id
        if not self.ctx.backends.broker.distributed:
            then(None)  # no other node to reach
            return

        def located(nodes: list[str]) -> None:
            others = [node for node in nodes if node != node_id]
            if others:
                self.publish_remote(lambda: envelope, then, others)
            elif none is not None:
                none()
            else:
                then(None)

        self.call(self.ctx.backends.presence.user_nodes(envelope.target), located, failed)

    def _targets(self, to_connection: bool, key: str) -> list[Session]:
        """The live sessions a direct message to a user or a connection reaches here."""
        sessions = self.ctx.sessions
        if to_connection:
            target = sessions.by_connection(key)
            return [target] if target is not None else []
        return list(sessions.attached_of(key))

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: ActorAddress) -> None:
        env = msg.envelope
        targets = self._targets(env.kind == "connection", env.target)
        self.deliver_envelope("direct", targets, env)
