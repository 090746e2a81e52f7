"""``RouteHandler``: what every route handler shares.

Handlers keep no state that cannot be rebuilt: on every (re)start they rebuild
their indexes from the node's ``SessionRegistry``, so a router restart never
loses the subscriptions or rooms of live sessions.

Broker interest. With a distributed broker, the topic and room handlers tell
it which targets this node needs (``start_listening`` on a target's first
local interest, ``stop_listening`` on its last): the broker subscribes to
their shards only. A rebuild first withdraws the handler's whole kind
(``broker.reset``) and then listens again, so a restart never counts twice.
Replies that promise delivery (``subscribed``, ``joined``) wait for the
listen to be live (``await_listening``); when the broker cannot confirm it
(Redis down) they go out anyway: local delivery works, and the broker
subscribes when Redis is back.

Fan-out encodes a message once (``codec.message_tail``) and hands the same
bytes to every recipient session, which splices in its own ``seq``; no actor
message and no JSON encode per recipient. Fan-outs larger than
``limits.fanout_chunk`` recipients are delivered over several loop iterations
(at most that many messages each) so the event loop keeps answering pings;
later publishes queue behind them, which keeps per-publisher order. Publishes
to the same recipients that queue together share one job (``key``), so every
recipient gets them in one turn and the gateway writes them in one write.

Tracing (rtcs.tracing). With tracing on, the connection actor sends the
traced variant of a client's request (:class:`TracedRequest`, carrying the
frame's ``rtcs.receive`` span); :meth:`RouteHandler.receiveMsg_TracedRequest`
sees it first, opens the ``rtcs.route`` span as ``self.trace`` for that turn
and hands the request to its own handler. Work that goes on in a later turn
takes the span along (:meth:`RouteHandler.within`). :meth:`RouteHandler.route`
and :meth:`RouteHandler.deliver_remote` then add the ``rtcs.deliver`` span
and put the route span's ``traceparent`` in the envelope;
:meth:`RouteHandler.deliver_envelope` continues a trace that came from
another node. Untraced requests are the plain classes, handled as ever: the
fan-out path tests ``self.trace`` against None once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import TYPE_CHECKING, ClassVar

from thespian.actors import ActorAddress, WakeupMessage

from rtcs.actors.context import NodeActor
from rtcs.actors.messages import (
    FanoutContinue,
    RouteDirect,
    RoutePublish,
    RouteRoomBroadcast,
    RouteWideBroadcast,
)
from rtcs.backends.base import Envelope, EnvelopeKind
from rtcs.errors import ProtocolError, Unavailable
from rtcs.metrics import DeliveryKind
from rtcs.protocol import codec
from rtcs.protocol.frames import RequestId, ServerFrame
from rtcs.runtime.control import Calls
from rtcs.sessions import Session
from rtcs.tracing import (
    FRAME_TYPE,
    KIND,
    ROOM,
    TO_CONNECTION,
    TO_USER,
    TOPIC,
    trace_fields,
    tracing_of,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from rtcs.tracing import Tracing

#: What runs once a message was handed to the broker: ``None`` on success.
Then = Callable[[BaseException | None], None]


# -- traced requests -------------------------------------------------------------------


class TracedRequest:
    """What the traced variants of the client route requests add: ``trace``,
    the client frame's ``rtcs.receive`` span.

    The connection actor sends them instead of the plain requests only while
    tracing is on (:func:`traced_request`). Thespian tries a message's classes
    in order, and this one comes before the request's own, so
    ``RouteHandler.receiveMsg_TracedRequest`` takes every traced request first;
    it hands it on to ``HANDLER``, the plain request's handler.
    """

    __slots__ = ()
    HANDLER: ClassVar[str]
    trace: Span


@dataclasses.dataclass(slots=True)
class TracedRoutePublish(TracedRequest, RoutePublish):
    """A traced ``RoutePublish``. Not frozen, as ``RoutePublish``."""

    trace: Span = dataclasses.field(kw_only=True)
    HANDLER: ClassVar[str] = "receiveMsg_RoutePublish"


@dataclasses.dataclass(frozen=True, slots=True)
class TracedRouteDirect(TracedRequest, RouteDirect):
    """A traced ``RouteDirect``."""

    trace: Span = dataclasses.field(kw_only=True)
    HANDLER: ClassVar[str] = "receiveMsg_RouteDirect"


@dataclasses.dataclass(frozen=True, slots=True)
class TracedRouteRoomBroadcast(TracedRequest, RouteRoomBroadcast):
    """A traced ``RouteRoomBroadcast``."""

    trace: Span = dataclasses.field(kw_only=True)
    HANDLER: ClassVar[str] = "receiveMsg_RouteRoomBroadcast"


@dataclasses.dataclass(frozen=True, slots=True)
class TracedRouteWideBroadcast(TracedRequest, RouteWideBroadcast):
    """A traced ``RouteWideBroadcast``."""

    trace: Span = dataclasses.field(kw_only=True)
    HANDLER: ClassVar[str] = "receiveMsg_RouteWideBroadcast"


#: Each client message's request: its traced variant, and the names of its fields.
_TRACED: dict[type, tuple[Callable[..., TracedRequest], tuple[str, ...]]] = {
    plain: (traced, tuple(f.name for f in dataclasses.fields(plain)))
    for plain, traced in (
        (RoutePublish, TracedRoutePublish),
        (RouteDirect, TracedRouteDirect),
        (RouteRoomBroadcast, TracedRouteRoomBroadcast),
        (RouteWideBroadcast, TracedRouteWideBroadcast),
    )
}


def with_trace(
    envelope: Callable[[], Envelope], tracing: Tracing, route: Span
) -> Callable[[], Envelope]:
    """``envelope`` (a factory) made to carry the ``traceparent`` of ``route``."""

    def made() -> Envelope:
        return dataclasses.replace(envelope(), trace=tracing.traceparent(route))

    return made


def frame_attributes(request: object) -> dict[str, str] | None:
    """The span attributes of a client message's request (frame type, kind,
    target); None for a request that is not a message (subscribe, join, ...)."""
    if isinstance(request, RoutePublish):
        return {FRAME_TYPE: "publish", KIND: "topic", TOPIC: request.topic}
    if isinstance(request, RouteDirect):
        if request.to_connection is not None:
            return {FRAME_TYPE: "send", KIND: "direct", TO_CONNECTION: request.to_connection}
        return {FRAME_TYPE: "send", KIND: "direct", TO_USER: request.to_user or ""}
    if isinstance(request, RouteRoomBroadcast):
        return {FRAME_TYPE: "broadcast", KIND: "room", ROOM: request.room}
    if isinstance(request, RouteWideBroadcast):
        return {FRAME_TYPE: "broadcast", KIND: "global" if request.filter is None else "filter"}
    return None


def traced_request(request: object, span: Span) -> TracedRequest:
    """The traced variant of a client message's request, carrying ``span``.

    Raises:
        KeyError: ``request`` is not one of the requests :func:`frame_attributes` describes.
    """
    traced, names = _TRACED[type(request)]
    return traced(*[getattr(request, name) for name in names], trace=span)


def ignore_failure(failure: BaseException | None) -> None:
    """Server publishes have no one to ack; broker failures are counted already."""


class _Job:
    """A fan-out in progress: the recipients, the messages for each, and what runs after.

    Several publishes to the same recipients (the same ``key``) that queue
    behind a running fan-out share one job: each recipient then gets all of
    their messages in one turn, so its writes coalesce into one.
    """

    __slots__ = ("done", "key", "pos", "recipients", "tails")

    def __init__(
        self,
        recipients: list[Session],
        tail: bytes,
        done: Callable[[], None] | None,
        key: Hashable | None,
    ) -> None:
        self.recipients = recipients
        self.tails = [tail]
        self.pos = 0
        self.done: list[Callable[[], None]] = [] if done is None else [done]
        self.key = key


class RouteHandler(Calls, NodeActor):
    """Shared plumbing: configuration, replies, async backend calls, fan-out."""

    def __init__(self) -> None:
        super().__init__()
        self._jobs: deque[_Job] = deque()
        self._continuing = False
        # Listens in flight, and what waits for each to be live.
        self._listening: dict[tuple[EnvelopeKind, str], list[Callable[[], None]]] = {}
        #: The node's tracing; None when it is off.
        self.tracing: Tracing | None = None
        #: The ``rtcs.route`` span of the message this turn handles (None: not traced).
        self.trace: Span | None = None

    def configured(self) -> None:
        self.tracing = tracing_of(self.ctx)
        self.rebuild()

    def rebuild(self) -> None:
        """Rebuild this handler's index from the session registry."""

    # -- replies -------------------------------------------------------------

    def reply(self, session: Session, frame: bytes, kind: ServerFrame) -> None:
        sink = session.sink
        if sink is not None and sink.push(frame):
            self.ctx.metrics.frame_out(kind)

    def ack(self, session: Session, request_id: RequestId) -> None:
        self.reply(session, codec.encode_ack(request_id), ServerFrame.ACK)

    def error(self, session: Session, request_id: RequestId, exc: ProtocolError) -> None:
        """Answer a request with the wire error ``exc`` stands for."""
        self.ctx.metrics.error(exc.code)
        self.reply(
            session, codec.encode_error(request_id, exc.code, exc.message), ServerFrame.ERROR
        )

    def unavailable(
        self, session: Session, request_id: RequestId
    ) -> Callable[[BaseException], None]:
        """The ``failed`` continuation of a presence call: log, answer ``unavailable``.

        The log line carries the trace id of the message this turn handles, if traced.
        """
        trace = self.trace

        def failed(exc: BaseException) -> None:
            self.ctx.log.warning(
                "presence backend failed", error=type(exc).__name__, **trace_fields(trace)
            )
            self.error(session, request_id, Unavailable("presence unavailable"))

        return failed

    def log_failure(self, exc: BaseException) -> None:
        """The ``failed`` continuation of a call nobody waits on."""
        self.ctx.log.warning("presence backend failed", error=type(exc).__name__)

    def now_ms(self) -> int:
        return int(self.ctx.wall() * 1000)

    # -- tracing (rtcs.tracing) ----------------------------------------------------------

    def receiveMsg_TracedRequest(self, msg: TracedRequest, sender: ActorAddress) -> None:
        """A traced client request: its ``rtcs.route`` span around its own handler."""
        handler = getattr(self, msg.HANDLER)
        tracing = self.tracing
        if tracing is None:  # a context without tracing: handled as the plain request
            handler(msg, sender)
            return
        span = tracing.route(msg.trace, frame_attributes(msg) or {})
        self.trace = span
        try:
            handler(msg, sender)
        except BaseException:
            tracing.fail(span, "crashed")
            raise
        finally:
            self.trace = None
            span.end()

    def within(self, trace: Span | None, run: Callable[[], None]) -> None:
        """Run ``run`` as part of the message ``trace`` belongs to (a later turn's
        work for a traced message; None: untraced)."""
        outer, self.trace = self.trace, trace
        try:
            run()
        finally:
            self.trace = outer

    def traced_delivery(
        self, route: Span, kind: DeliveryKind, size: int, then: Then | None = None
    ) -> tuple[Tracing, Span, Then | None]:
        """Start the ``rtcs.deliver`` span of a message whose route span is ``route``.

        Returns the node's tracing, the span, and ``then`` made to end it
        first (status ERROR when the broker failed; None: ``then`` was None,
        end the span yourself).

        Raises:
            NotConfigured: tracing is off (``route`` cannot exist then).
        """
        tracing = self.tracing
        if tracing is None:
            from rtcs.actors.context import NotConfigured

            raise NotConfigured("a traced message without tracing")
        span = tracing.deliver(route, kind, size)
        if then is None:
            return tracing, span, None
        acked = then

        def traced_then(failure: BaseException | None) -> None:
            if failure is not None:
                tracing.fail(span, "broker unavailable")
            span.end()
            acked(failure)

        return tracing, span, traced_then

    # -- fan-out -------------------------------------------------------------------------

    def fanout(
        self,
        recipients: Collection[Session],
        tail: bytes,
        done: Callable[[], None] | None,
        key: Hashable | None = None,
    ) -> None:
        """Deliver ``tail`` to every recipient, in chunks when there are many.

        ``recipients`` may be a live index set: it is only iterated now, or
        copied when the delivery has to continue over later turns. ``key``
        (None: never) says two fan-outs go to exactly the same recipients
        (the caller's index did not change in between): a fan-out that has to
        wait then joins the last waiting job of the same key.

        A fan-out larger than ``limits.fanout_chunk``, or one that finds
        others waiting, starts on the next loop iteration, so the publishes
        read together (a burst) are delivered together.
        """
        jobs = self._jobs
        if not jobs and len(recipients) <= self.ctx.settings.limits.fanout_chunk:
            for session in recipients:
                session.deliver(tail)
            if done is not None:
                done()
            return
        last = jobs[-1] if jobs else None
        if key is not None and last is not None and last.key == key and last.pos == 0:
            last.tails.append(tail)
            if done is not None:
                last.done.append(done)
        else:
            jobs.append(_Job(list(recipients), tail, done, key))
        if not self._continuing:
            self._continuing = True
            self.wakeupAfter(0, FanoutContinue())

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        if isinstance(msg.payload, FanoutContinue):
            self._continuing = False
            self._run_jobs()

    def _run_jobs(self) -> None:
        """Deliver up to ``limits.fanout_chunk`` messages, then continue on a later turn."""
        budget = self.ctx.settings.limits.fanout_chunk
        jobs = self._jobs
        while jobs and budget > 0:
            job = jobs[0]
            tails = job.tails
            count = max(1, budget // len(tails))  # recipients served now
            end = min(job.pos + count, len(job.recipients))
            chunk = job.recipients[job.pos : end]
            if len(tails) == 1:
                tail = tails[0]
                for session in chunk:
                    session.deliver(tail)
            else:
                for session in chunk:
                    for tail in tails:
                        session.deliver(tail)
            budget -= (end - job.pos) * len(tails)
            job.pos = end
            if job.pos >= len(job.recipients):
                jobs.popleft()
                for done in job.done:
                    done()
        if jobs and not self._continuing:
            # Continue on a later loop iteration, after the loop has polled
            # the sockets (pings, reads): a timer, not a message, since queued
            # messages may run in the same turn.
            self._continuing = True
            self.wakeupAfter(0, FanoutContinue())

    def route(
        self,
        kind: DeliveryKind,
        recipients: Collection[Session],
        tail: bytes,
        envelope: Callable[[], Envelope],
        session: Session,
        request_id: RequestId,
        started: float,
        key: Hashable | None = None,
    ) -> None:
        """Deliver a client's message locally, then to other nodes, then ack it.

        ``key``: as for :meth:`fanout`.
        """
        ctx = self.ctx
        ctx.metrics.delivered(kind, len(recipients))
        then = self.finish(session, request_id)
        trace = self.trace
        if trace is not None:
            # rtcs.deliver lasts until the ack; the envelope joins other nodes to the trace.
            tracing, _, traced = self.traced_delivery(trace, kind, len(recipients), then)
            then, envelope = traced or then, with_trace(envelope, tracing, trace)

        def routed() -> None:
            ctx.after_write(lambda: ctx.metrics.routed(kind, time.perf_counter() - started))
            self.publish_remote(envelope, then)

        self.fanout(recipients, tail, routed, key)

    def deliver_remote(
        self,
        kind: DeliveryKind,
        recipients: Collection[Session],
        tail: bytes,
        key: Hashable | None = None,
    ) -> None:
        """Deliver a message nobody acks: from another node, or a server publish.

        No broker (a message for other nodes goes through :meth:`publish_remote`).
        ``key``: as for :meth:`fanout`. In a traced turn, the fan-out is an
        ``rtcs.deliver`` span.
        """
        self.ctx.metrics.delivered(kind, len(recipients))
        trace = self.trace
        done: Callable[[], None] | None = None
        if trace is not None:
            _, span, _ = self.traced_delivery(trace, kind, len(recipients))
            done = span.end
        self.fanout(recipients, tail, done, key)

    def deliver_envelope(
        self,
        kind: DeliveryKind,
        recipients: Collection[Session],
        envelope: Envelope,
        key: Hashable | None = None,
    ) -> None:
        """Deliver ``envelope``'s message, which came from another node, to ``recipients``.

        With tracing on and a ``trace`` in the envelope, the fan-out is an
        ``rtcs.deliver`` span in the publishing node's trace (a child of its
        ``rtcs.route``). ``key``: as for :meth:`fanout`.
        """
        self.ctx.metrics.delivered(kind, len(recipients))
        tracing = self.tracing
        done: Callable[[], None] | None = None
        if envelope.trace and tracing is not None:
            parent = tracing.remote_parent(envelope.trace)
            if parent is not None:
                span = tracing.deliver(parent, kind, len(recipients), origin=envelope.origin)
                done = span.end
        self.fanout(recipients, envelope.tail, done, key)

    # -- cross-node ----------------------------------------------------------------------

    def publish_remote(
        self,
        envelope: Callable[[], Envelope],
        then: Then,
        nodes: Sequence[str] | None = None,
    ) -> None:
        """Hand a message to the broker for other nodes, then call ``then``.

        ``nodes``: send it to these nodes' own channels (direct messages);
        by default to every node listening to its target. Local delivery
        never goes through the broker; with no other node to reach
        (``broker.distributed`` is False) ``then`` runs at once and the
        envelope is never built.
        """
        broker = self.ctx.backends.broker
        if not broker.distributed:
            then(None)
            return

        def failed(exc: BaseException) -> None:
            self.ctx.metrics.broker_errors.inc()
            then(exc)

        if nodes is None:
            self.call(broker.publish(envelope()), lambda _: then(None), failed)
            return
        built = envelope()

        async def to_each() -> None:
            # Concurrently: the broker sends them in one pipeline.
            await asyncio.gather(*(broker.publish(built, node) for node in nodes))

        self.call(to_each(), lambda _: then(None), failed)

    def start_listening(
        self, kind: EnvelopeKind, target: str, then: Callable[[], None] | None = None
    ) -> None:
        """The first local interest in ``target``: tell the broker.

        ``then`` (and whatever ``await_listening`` adds meanwhile) runs once
        the broker's subscription is live, or could not be confirmed (logged).
        Without a distributed broker ``then`` runs at once.
        """
        broker = self.ctx.backends.broker
        if not broker.distributed:
            if then is not None:
                then()
            return
        key = (kind, target)
        waiters = self._listening[key] = [then] if then is not None else []

        def done() -> None:
            if self._listening.get(key) is waiters:
                del self._listening[key]
            for waiter in waiters:
                waiter()

        def failed(exc: BaseException) -> None:
            self.ctx.log.warning(
                "broker subscription not confirmed; it follows when the broker is back",
                kind=kind,
                error=type(exc).__name__,
            )
            done()

        self.call(broker.listen(kind, target), lambda _: done(), failed)

    def await_listening(self, kind: EnvelopeKind, target: str, then: Callable[[], None]) -> None:
        """Run ``then`` once the listen in flight for ``target`` completes (now if none)."""
        waiters = self._listening.get((kind, target))
        if waiters is None:
            then()
        else:
            waiters.append(then)

    def stop_listening(self, kind: EnvelopeKind, target: str) -> None:
        """The last local interest in ``target`` is gone: tell the broker."""
        broker = self.ctx.backends.broker
        if broker.distributed:
            broker.unlisten(kind, target)

    def reset_listening(self, kind: EnvelopeKind) -> None:
        """Withdraw this handler's whole kind from the broker (before a rebuild)."""
        broker = self.ctx.backends.broker
        if broker.distributed:
            broker.reset(kind)

    def finish(self, session: Session, request_id: RequestId) -> Then:
        """The continuation that acks a request once it has been routed."""

        def then(failure: BaseException | None) -> None:
            if failure is None:
                self.ack(session, request_id)
            else:
                self.error(session, request_id, Unavailable("broker unavailable"))

        return then
