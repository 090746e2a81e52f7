"""``TopicHandler``: topic subscriptions and publishes over a ``TopicIndex``.

Besides the index it counts the local sessions per pattern: the broker
listens to a pattern while that count is above zero (``RouteHandler``,
"Broker interest"), and ``subscribed`` is answered once that is live.

A publish goes through two optional stages before delivery (docs/rules.md,
docs/plugins.md):

1. **Rules** (``ctx.rules``): evaluated here, on the publishing node, in the
   same turn. They may change the data and the topic, narrow the recipients
   or drop the message. A topic no rule mentions costs one route-cache
   lookup. The recipient filter travels in the broker envelope (``roles``,
   ``users``, ``exclude``), so every node applies what this one decided.
2. **Route-handler plugins** (``ctx.route_plugins``) whose patterns match the
   topic after the rules: asked one after the other, in configuration order,
   each seeing the data as the one before left it. While a publisher's
   message waits for a plugin, that publisher's later publishes wait behind
   it (per-publisher order). A plugin whose ``route`` raises (reported by
   ``RoutePlugin``, or a ``PoisonMessage``), that does not answer within its
   timeout or is not running makes the publish fail with ``internal``;
   nothing of it is delivered.

Server publishes (``ServerPublish``) go through the rules (with an empty
sender) but not through route plugins, which could otherwise loop on their
own publishes.

Tracing (rtcs.tracing, ``RouteHandler`` "Tracing"): evaluating rules that
match is an ``rtcs.rules`` span, asking each route plugin an ``rtcs.plugin``
span, both under the publish's ``rtcs.route``; a publish that waits (for a
plugin, or behind one) keeps its route span for when it goes on. A server
publish starts a trace of its own. Rule evaluation errors and plugin
failures are logged with the publish's ``trace_id``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any

from thespian.actors import ActorAddress, PoisonMessage, WakeupMessage

from rtcs.actors.context import RoutePluginSpec
from rtcs.actors.messages import (
    KEEP,
    Decision,
    IndexSession,
    RemoteEnvelope,
    RouteDecision,
    RoutePublish,
    RouteRequest,
    RouteSubscribe,
    RouteSweep,
    RouteUnsubscribe,
    ServerPublish,
    UnindexSession,
)
from rtcs.actors.routing.handler import RouteHandler, ignore_failure, with_trace
from rtcs.backends.base import Envelope
from rtcs.errors import BadTopic, InternalError
from rtcs.protocol import codec
from rtcs.protocol.frames import RequestId, ServerFrame
from rtcs.protocol.topics import TopicIndex, validate_topic
from rtcs.sessions import Session
from rtcs.tracing import (
    DROPPED,
    KIND,
    ORIGIN,
    PLUGIN,
    PLUGIN_NAME,
    REROUTED_TO,
    RULES,
    RULES_ERRORS,
    RULES_MATCHED,
    TOPIC,
    trace_fields,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from rtcs.rules import Outcome

#: Topics whose route plugins are remembered (the oldest topic goes first).
PLUGIN_CACHE_SIZE = 10_000
#: Bounds of the period at which publishes waiting for a plugin are checked
#: against their timeout (a tenth of the shortest plugin timeout between).
SWEEP_MIN, SWEEP_MAX = 0.01, 0.25


class Filter:
    """A recipient filter as the broker carries it (``Envelope`` fields).

    A recipient needs one of ``roles`` (when not empty) and to be one of
    ``users`` (when not empty); sessions of the user ``exclude`` are left
    out. Built from a rules ``Target`` here, or from an envelope elsewhere.
    """

    __slots__ = ("exclude", "roles", "users")

    def __init__(self, roles: Iterable[str], users: Iterable[str], exclude: str) -> None:
        self.roles = frozenset(roles)
        self.users = frozenset(users)
        self.exclude = exclude

    def select(self, sessions: Collection[Session]) -> list[Session]:
        roles, users, exclude = self.roles, self.users, self.exclude
        return [
            s
            for s in sessions
            if s.user != exclude
            and (not users or s.user in users)
            and (not roles or not roles.isdisjoint(s.roles))
        ]


def _filter_of(outcome: Outcome, sender: str) -> Filter | None:
    """The outcome's recipient filter, None when it admits everybody."""
    target = outcome.target
    if not target.restricts:
        return None
    exclude = sender if target.exclude_sender and sender else ""
    return Filter(target.roles or (), target.users or (), exclude)


class _Pending:
    """A client publish waiting for its route plugins."""

    __slots__ = (
        "answers",
        "data",
        "deadline",
        "extra",
        "filter",
        "id",
        "plugins",
        "request_id",
        "session",
        "span",
        "started",
        "step",
        "topic",
        "trace",
    )

    def __init__(
        self,
        id: int,
        msg: RoutePublish,
        topic: str,
        data: Any,
        filter: Filter | None,
        plugins: tuple[RoutePluginSpec, ...],
        started: float,
        trace: Span | None = None,
    ) -> None:
        self.id = id
        self.session = msg.session
        self.request_id: RequestId = msg.request_id
        self.topic = topic
        self.data = data
        self.filter = filter
        self.plugins = plugins
        self.started = started
        self.step = 0
        self.deadline = 0.0  # when the plugin asked now must have answered
        self.answers: list[Any] = []
        self.extra: list[tuple[str, Any]] = []
        self.trace = trace  # the publish's rtcs.route span, when traced
        self.span: Span | None = None  # the rtcs.plugin span of the plugin asked now


class TopicHandler(RouteHandler):
    """Topic subscriptions and publishes."""

    def __init__(self) -> None:
        super().__init__()
        self.index: TopicIndex[Session] = TopicIndex()
        self.patterns: dict[str, int] = {}  # pattern -> local sessions subscribed
        # Changes with every change of the index: fan-outs to the same topic
        # within one generation go to the same sessions (RouteHandler.fanout).
        self._generation = 0
        # Route plugins: their patterns, the plugins of each topic seen, the
        # publishes waiting for one, and what waits behind them per session.
        self._has_plugins = False
        self._plugin_index: TopicIndex[int] = TopicIndex()
        self._plugins_of: dict[str, tuple[RoutePluginSpec, ...]] = {}
        self._pending: dict[int, _Pending] = {}
        self._behind: dict[str, deque[Callable[[], None]]] = {}
        self._next_id = 0
        self._sweeping = False  # a RouteSweep timer is set
        self._sweep_every = SWEEP_MAX

    def configured(self) -> None:
        self._plugin_index = TopicIndex()
        self._plugins_of = {}
        self._has_plugins = bool(self.ctx.route_plugins)
        if self.ctx.route_plugins:
            shortest = min(spec.timeout for spec in self.ctx.route_plugins)
            self._sweep_every = min(SWEEP_MAX, max(SWEEP_MIN, shortest / 10))
        for i, spec in enumerate(self.ctx.route_plugins):
            for pattern in spec.topics:
                self._plugin_index.add(pattern, i)
        super().configured()

    def rebuild(self) -> None:
        self.index = TopicIndex()
        self._generation += 1
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
        self._generation += 1
        count = self.patterns.get(pattern, 0)
        self.patterns[pattern] = count + 1
        if count == 0:
            self.start_listening("topic", pattern, then)
        elif then is not None:
            self.await_listening("topic", pattern, then)

    def _remove(self, pattern: str, session: Session) -> None:
        if not self.index.remove(pattern, session):
            return
        self._generation += 1
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

    # -- client publishes ------------------------------------------------------------

    def receiveMsg_RoutePublish(self, msg: RoutePublish, sender: ActorAddress) -> None:
        waiting = self._behind.get(msg.session.id)
        if waiting is not None:
            # An earlier publish of this session waits for a route plugin.
            trace = self.trace
            waiting.append(lambda: self.within(trace, lambda: self._publish(msg)))
            return
        self._publish(msg)

    def _publish(self, msg: RoutePublish) -> None:
        started = msg.received or time.perf_counter()
        session = msg.session
        routed = self._apply_rules(msg.topic, msg.data, session.user, session.roles)
        if routed is None:
            self._ack_now(session, msg.request_id, started)
            return
        topic, data, only = routed
        if self._has_plugins:
            plugins = self._plugins_for(topic)
            if plugins:
                pending = _Pending(
                    self._new_id(), msg, topic, data, only, plugins, started, self.trace
                )
                self._ask_first(pending)
                return
        self._deliver(session, msg.request_id, topic, data, only, started)

    def _deliver(
        self,
        session: Session,
        request_id: RequestId,
        topic: str,
        data: Any,
        only: Filter | None,
        started: float,
        tail: bytes | None = None,
    ) -> None:
        """Deliver a client's publish here and to other nodes, then ack it.

        ``tail``: ``data`` already encoded (``codec.message_tail``), if it is.
        """
        ctx = self.ctx
        recipients, key = self._recipients(topic, only)
        if not recipients and not ctx.backends.broker.distributed:
            # Nobody to deliver to, here or elsewhere: nothing to encode.
            self._ack_now(session, request_id, started)
            return
        if tail is None:
            tail = codec.message_tail(
                topic=topic, from_user=session.user, data=data, ts=self.now_ms()
            )

        def envelope() -> Envelope:
            return _envelope(ctx.node_id, topic, tail, only)

        self.route("topic", recipients, tail, envelope, session, request_id, started, key)

    def _apply_rules(
        self, topic: str, data: Any, user: str, roles: tuple[str, ...]
    ) -> tuple[str, Any, Filter | None] | None:
        """The topic, data and recipient filter the rules leave; None when dropped.

        Without rules for ``topic`` (or any rules) this is one lookup.
        """
        ctx = self.ctx
        rules = ctx.rules
        if rules is None:
            return topic, data, None
        matching = rules.rules_for(topic)
        if not matching:
            return topic, data, None
        trace, tracing = self.trace, self.tracing
        span = None
        if trace is not None and tracing is not None:
            span = tracing.child(RULES, trace, {TOPIC: topic})
        outcome = rules.run(matching, topic, data, user, roles)
        ctx.metrics.rule_outcome(outcome.matched, outcome.dropped, outcome.rerouted, outcome.errors)
        if outcome.errors:
            ctx.log.warning(
                "rule conditions failed to evaluate; those rules did not apply",
                rules=list(outcome.errors),
                **trace_fields(trace),
            )
        if span is not None:
            span.set_attributes(_rules_attributes(outcome, topic))
            span.end()
        if outcome.topic is None or outcome.target.nobody:
            return None
        return outcome.topic, outcome.data, _filter_of(outcome, user)

    def _recipients(
        self, topic: str, only: Filter | None
    ) -> tuple[Collection[Session], tuple[str, int] | None]:
        """The local sessions a message on ``topic`` goes to, and its fan-out key.

        The key (RouteHandler.fanout) is None for a filtered message: its
        recipients are a fresh list each time.
        """
        recipients: Collection[Session] = self.index.match(topic)
        if only is None:
            return recipients, (topic, self._generation)
        return only.select(recipients), None

    def _ack_now(self, session: Session, request_id: RequestId, started: float) -> None:
        """Ack a publish that has nothing to deliver (dropped, or nobody subscribed)."""
        ctx = self.ctx
        self.ack(session, request_id)
        ctx.after_write(lambda: ctx.metrics.routed("topic", time.perf_counter() - started))

    # -- route plugins -----------------------------------------------------------------

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _plugins_for(self, topic: str) -> tuple[RoutePluginSpec, ...]:
        found = self._plugins_of.get(topic)
        if found is None:
            specs = self.ctx.route_plugins
            found = tuple(specs[i] for i in sorted(self._plugin_index.match(topic)))
            if len(self._plugins_of) >= PLUGIN_CACHE_SIZE:
                del self._plugins_of[next(iter(self._plugins_of))]
            self._plugins_of[topic] = found
        return found

    def _ask_first(self, pending: _Pending) -> None:
        """Start asking ``pending``'s plugins; its session's next publishes wait."""
        self._pending[pending.id] = pending
        self._behind[pending.session.id] = deque()
        self._ask(pending)

    def _ask(self, pending: _Pending) -> None:
        spec = pending.plugins[pending.step]
        address = self.ctx.directory.lookup(spec.name)
        if address is None:
            self._failed(pending, "not running")
            return
        session = pending.session
        if pending.trace is not None and self.tracing is not None:
            pending.span = self.tracing.child(PLUGIN, pending.trace, {PLUGIN_NAME: spec.name})
        self.send(
            address,
            RouteRequest(
                pending.topic,
                pending.data,
                session.user,
                session.roles,
                session.id,
                self.myAddress,
                pending.id,
                pending.step,
            ),
        )
        pending.deadline = self.ctx.clock() + spec.timeout
        if not self._sweeping:
            self._sweeping = True
            self.wakeupAfter(self._sweep_every, RouteSweep())

    def _current(self, request: int, step: int) -> _Pending | None:
        """The publish waiting for the answer of ``step``; None for a late or stray one."""
        pending = self._pending.get(request)
        return pending if pending is not None and pending.step == step else None

    def receiveMsg_RouteDecision(self, msg: RouteDecision, sender: ActorAddress) -> None:
        pending = self._current(msg.request, msg.step)
        if pending is None:
            return
        decision = msg.decision
        if msg.failure:
            self._failed(pending, msg.failure)
            return
        if pending.span is not None:
            pending.span.end()
            pending.span = None
        if not isinstance(decision, Decision):
            self._failed(pending, "bad decision")
            return
        try:
            extra = [(validate_topic(topic), data) for topic, data in decision.publish]
        except (BadTopic, TypeError, ValueError):  # not pairs, or not a topic
            self._failed(pending, "bad decision")
            return
        if decision.data is not KEEP:
            pending.data = decision.data
        if decision.answer is not KEEP:
            pending.answers.append(decision.answer)
        pending.extra += extra
        pending.step += 1
        if not decision.drop and pending.step < len(pending.plugins):
            self._ask(pending)
            return
        self._done(pending, drop=decision.drop)

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        payload = msg.payload
        if isinstance(payload, RouteSweep):
            # One timer for every publish waiting for a plugin (Thespian
            # timers cannot be cancelled: one per publish would pile up).
            self._sweeping = False
            now = self.ctx.clock()
            for pending in [p for p in self._pending.values() if p.deadline <= now]:
                if pending.id in self._pending:  # not ended by an earlier failure's release
                    self._failed(pending, "timeout")
            if self._pending and not self._sweeping:
                self._sweeping = True
                self.wakeupAfter(self._sweep_every, RouteSweep())
            return
        super().receiveMsg_WakeupMessage(msg, sender)

    def receiveMsg_PoisonMessage(self, msg: PoisonMessage, sender: ActorAddress) -> None:
        # A route plugin's handler of our request raised past RoutePlugin's
        # own guard (it overrides receiveMsg_RouteRequest): it crashed.
        request = msg.poisonMessage
        if isinstance(request, RouteRequest):
            pending = self._current(request.request, request.step)
            if pending is not None:
                self._failed(pending, "crashed")

    def _failed(self, pending: _Pending, reason: str, step: int | None = None) -> None:
        """The plugin of ``step`` (the current one by default) failed ``pending``.

        Nothing of the publish is delivered; the publisher gets ``internal``.
        """
        spec = pending.plugins[pending.step if step is None else step]
        span, pending.span = pending.span, None
        if span is not None and self.tracing is not None:
            self.tracing.fail(span, reason)
            span.end()
        self.ctx.log.error(
            "route plugin failed a publish",
            plugin=spec.name,
            reason=reason,
            **trace_fields(pending.trace),
        )
        self.ctx.metrics.route_plugin_failure(spec.name, reason)
        self._pending.pop(pending.id, None)
        self.error(pending.session, pending.request_id, InternalError("route plugin failed"))
        self._release(pending.session.id)

    def _done(self, pending: _Pending, *, drop: bool) -> None:
        """Every plugin answered: answers, extra publishes, then the publish itself.

        Everything is encoded before anything is delivered, so data that is
        not JSON fails the whole publish (``internal``), never half of it.
        """
        del self._pending[pending.id]
        session, topic = pending.session, pending.topic
        now = self.now_ms()
        try:
            answers = [codec.message_tail(topic=topic, data=a, ts=now) for a in pending.answers]
            extra = [
                (to, codec.message_tail(topic=to, from_user=session.user, data=data, ts=now))
                for to, data in pending.extra
            ]
            tail = None
            if not drop:
                tail = codec.message_tail(
                    topic=topic, from_user=session.user, data=pending.data, ts=now
                )
        except (TypeError, ValueError):
            self._failed(pending, "bad data", step=pending.step - 1)
            return
        for answer in answers:
            self.ctx.metrics.delivered("topic")
            session.deliver(answer)

        def go_on() -> None:
            for to, extra_tail in extra:
                self._server_deliver(to, extra_tail, None)
            if tail is None:
                self._ack_now(session, pending.request_id, pending.started)
            else:
                self._deliver(
                    session,
                    pending.request_id,
                    topic,
                    pending.data,
                    pending.filter,
                    pending.started,
                    tail,
                )

        self.within(pending.trace, go_on)
        self._release(session.id)

    def _release(self, session_id: str) -> None:
        """Run what waited behind a session's publish, until one waits for a plugin again."""
        waiting = self._behind.pop(session_id, None)
        while waiting:
            waiting.popleft()()
            again = self._behind.get(session_id)
            if again is not None:
                again.extend(waiting)
                return

    # -- server publishes and other nodes ----------------------------------------------

    def receiveMsg_ServerPublish(self, msg: ServerPublish, sender: ActorAddress) -> None:
        tracing = self.tracing
        if tracing is None or not tracing.sample():
            self._server_publish(msg)
            return
        # A trace of its own: no client frame started it.
        span = tracing.route(None, {KIND: "topic", TOPIC: msg.topic, ORIGIN: "server"})
        try:
            self.within(span, lambda: self._server_publish(msg))
        finally:
            span.end()

    def _server_publish(self, msg: ServerPublish) -> None:
        routed = self._apply_rules(msg.topic, msg.data, "", ())
        if routed is None:
            return
        topic, data, only = routed
        tail = codec.message_tail(topic=topic, data=data, ts=self.now_ms())
        self._server_deliver(topic, tail, only, local_only=msg.local_only)

    def _server_deliver(
        self, topic: str, tail: bytes, only: Filter | None, *, local_only: bool = False
    ) -> None:
        """Deliver a message nobody waits an ack for, here and (unless local) elsewhere."""
        ctx = self.ctx
        recipients, key = self._recipients(topic, only)
        self.deliver_remote("topic", recipients, tail, key)
        if not local_only:

            def envelope() -> Envelope:
                return _envelope(ctx.node_id, topic, tail, only)

            trace, tracing = self.trace, self.tracing
            if trace is not None and tracing is not None:
                envelope = with_trace(envelope, tracing, trace)
            self.publish_remote(envelope, ignore_failure)

    def receiveMsg_RemoteEnvelope(self, msg: RemoteEnvelope, sender: ActorAddress) -> None:
        env = msg.envelope
        only = (
            Filter(env.roles, env.users, env.exclude)
            if env.roles or env.users or env.exclude
            else None
        )
        recipients, key = self._recipients(env.target, only)
        self.deliver_envelope("topic", recipients, env, key)

    def receiveMsg_IndexSession(self, msg: IndexSession, sender: ActorAddress) -> None:
        for pattern in msg.session.subscriptions:
            self._add(pattern, msg.session)

    def receiveMsg_UnindexSession(self, msg: UnindexSession, sender: ActorAddress) -> None:
        for pattern in list(msg.session.subscriptions):
            self._remove(pattern, msg.session)


def _envelope(node_id: str, topic: str, tail: bytes, only: Filter | None) -> Envelope:
    if only is None:
        return Envelope(node_id, "topic", topic, tail)
    return Envelope(
        node_id,
        "topic",
        topic,
        tail,
        roles=tuple(sorted(only.roles)),
        users=tuple(sorted(only.users)),
        exclude=only.exclude,
    )


def _rules_attributes(outcome: Outcome, topic: str) -> dict[str, Any]:
    """The ``rtcs.rules`` span's attributes: what the rules decided for ``topic``."""
    attributes: dict[str, Any] = {RULES_MATCHED: list(outcome.matched)}
    if outcome.errors:
        attributes[RULES_ERRORS] = list(outcome.errors)
    if outcome.topic is None:
        attributes[DROPPED] = True
    elif outcome.topic != topic:
        attributes[REROUTED_TO] = outcome.topic
    return attributes
