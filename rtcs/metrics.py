"""Every rtcs metric, registered against an injected Prometheus registry.

Label values are bounded: each label has a fixed set of values, every child
is created up front (dashboards see zeros instead of missing series), and the
helpers map anything outside the set to a fallback value, never to what a
client sent. User ids, topics, rooms and connection ids are never labels.

The per-message helpers (``frame_in``, ``frame_out``, ``delivered``,
``routed``, ``error``) run on hot paths: they look the label child up in a
dict built at start-up instead of calling ``labels()``.

docs/operations.md lists every metric with its labels and what to alert on.
"""

from __future__ import annotations

import bisect
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from rtcs import __version__, config
from rtcs.errors import CloseCode, ErrorCode
from rtcs.protocol.frames import CLIENT_FRAME_TYPES, ServerFrame
from rtcs.protocol.ratelimit import Limit
from rtcs.runtime.policy import Strategy
from rtcs.sessions import GIVE_UP_REASONS, ReceiptCounts

SERVER_FRAME_TYPES: tuple[str, ...] = tuple(ServerFrame)
DeliveryKind = Literal["topic", "room", "direct", "global", "filter"]
DELIVERY_KINDS: tuple[DeliveryKind, ...] = typing.get_args(DeliveryKind)
# Broker envelope kinds that count as direct deliveries.
_DIRECT_ALIASES = ("user", "connection")
HANDSHAKE_STATUSES = (400, 401, 403, 429, 503)
SUPERVISORS = config.SUPERVISORS
RESTART_STRATEGIES = tuple(s.value for s in Strategy)
OUTBOX_DROP_REASONS = ("overflow", "closed", "write_buffer")
RESUME_RESULTS = ("resumed", "expired")
# Why a detached session was expired early (rtcs.backends.detached).
EVICTION_REASONS = ("user_limit", "node_bytes")
BREAKER_STATES = ("closed", "open", "half_open")
RELOAD_RESULTS = ("ok", "error")
PLUGIN_FAILURE_REASONS = ("crashed", "timeout", "not running", "bad data", "bad decision")

OTHER = "other"
INVALID = "invalid"

#: The kinds of actor ``rtcs_actor_mailbox_messages`` sums by: rtcs's own
#: actors by their place in the tree (``rtcs.actors.tree.ACTOR_KINDS``: the
#: supervisors and route handlers by name, "connection" for every connection
#: actor), "plugin" for plugin actors, "runtime" for messages to the actor
#: system's own endpoints or to actors that have exited; anything else: "other".
ACTOR_KINDS = (
    "system",
    "server",
    "connections",
    "connection",
    "router",
    "route.topic",
    "route.direct",
    "route.room",
    "route.broadcast",
    "metrics",
    "stats",
    "plugins",
    "plugin",
    "runtime",
    OTHER,
)

# 10 µs to 1 s: routing a frame locally takes microseconds; anything near a
# second means the loop is starved.
ROUTING_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# 1 s to a day: from clients that bounce to those that stay all day.
CONNECTION_BUCKETS = (
    1.0,
    5.0,
    15.0,
    30.0,
    60.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    86400.0,
)

_M = TypeVar("_M", Counter, Gauge, Histogram)
_V = TypeVar("_V")


def _known(table: dict[Any, _V], key: Any, what: str) -> _V:
    """The entry for ``key`` (a label child, a label); a key rtcs itself never produces is a bug.

    Raises:
        ValueError: ``key`` is not in ``table`` ("<what>: <key>").
    """
    try:
        return table[key]
    except KeyError:
        raise ValueError(f"{what}: {key!r}") from None


def _children(metric: _M, values: Iterable[str]) -> dict[str, _M]:
    return {value: metric.labels(value) for value in values}


def _go_float(value: float) -> str:
    """A bucket bound as Prometheus writes it (``prometheus_client.utils.floatToGoString``)."""
    text: str = floatToGoString(value)  # type: ignore[no-untyped-call]
    return text


class _LoopFamily(Collector):
    """A metric family with one label whose numbers live in plain Python objects.

    prometheus_client's own types take a lock on every change (about 1 µs,
    four times per publish → ack); rtcs's per-message metrics are only
    changed on the event-loop thread, so plain numbers, read at scrape time,
    do. Subclasses keep the numbers in ``values`` (by label value), build
    their family in ``_family`` and fill it in ``collect``.
    """

    def __init__(self, name: str, documentation: str, label: str) -> None:
        self.name = name
        self.documentation = documentation
        self.label = label
        self._created = time.time()

    def _family(self) -> Metric:
        raise NotImplementedError

    def describe(self) -> Iterator[Metric]:
        yield self._family()


class LoopCounter(_LoopFamily):
    """A counter with one label, for the per-message paths (see :class:`_LoopFamily`).

    Exported exactly as a ``Counter`` of the same name and label
    (``<name>_total``, ``<name>_created``).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: Iterable[str],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name.removesuffix("_total"), documentation, label)
        #: The count of each label value; add to it with ``+=`` on the loop thread.
        self.values: dict[str, float] = dict.fromkeys(values, 0.0)
        registry.register(self)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=[self.label])

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for value, count in list(self.values.items()):
            family.add_metric([value], count, created=self._created)
        yield family


class LoopHistogram(_LoopFamily):
    """A histogram with one label, for the per-message paths (see :class:`_LoopFamily`)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        label: str,
        values: Iterable[str],
        buckets: tuple[float, ...],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, label)
        self.buckets = buckets
        # Per label value: [count in each bucket (the last one +Inf)..., sum].
        self.values: dict[str, list[float]] = {v: [0.0] * (len(buckets) + 2) for v in values}
        registry.register(self)

    def observe(self, value: str, amount: float) -> None:
        """Observe ``amount`` for the label ``value`` (one of those given)."""
        counts = self.values[value]
        counts[bisect.bisect_left(self.buckets, amount)] += 1
        counts[-1] += amount

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=[self.label])

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        edges = [*(_go_float(b) for b in self.buckets), "+Inf"]
        for value, counts in list(self.values.items()):
            cumulative, running = [], 0.0
            for edge, count in zip(edges, counts[:-1], strict=True):
                running += count
                cumulative.append((edge, running))
            family.add_metric([value], cumulative, counts[-1])
        yield family


class _RouteCacheCollector(Collector):
    """The rules' route-cache counters, read from the rule set when scraped."""

    def __init__(self, stats: Callable[[], Any]) -> None:
        self.stats = stats

    def describe(self) -> Iterator[Metric]:
        yield from self._families(0, 0, 0)

    def collect(self) -> Iterator[Metric]:
        now = self.stats()
        yield from self._families(now.hits, now.misses, now.size)

    @staticmethod
    def _families(hits: int, misses: int, size: int) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "rtcs_route_cache_hits",
            "Publishes whose topic's rules were found in the route cache.",
            value=hits,
        )
        yield CounterMetricFamily(
            "rtcs_route_cache_misses",
            "Publishes whose topic's rules had to be matched (then cached).",
            value=misses,
        )
        yield GaugeMetricFamily(
            "rtcs_route_cache_topics", "Topics the route cache holds now.", value=size
        )


class _ReceiptsCollector(Collector):
    """Delivery receipts (docs/protocol.md "Delivery receipts"), read from the
    node's ``ReceiptCounts`` when scraped: zeros until a source is set.

    ``rtcs_receipts_pending`` (gauge), ``rtcs_redeliveries_total`` and
    ``rtcs_receipts_given_up_total{reason}`` (counters; reasons
    ``GIVE_UP_REASONS``).
    """

    def __init__(self) -> None:
        self.source: ReceiptCounts | None = None

    def describe(self) -> Iterator[Metric]:
        yield from self._families(ReceiptCounts())

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.source if self.source is not None else ReceiptCounts())

    @staticmethod
    def _families(counts: ReceiptCounts) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "rtcs_receipts_pending",
            "Delivered messages awaiting a delivery receipt, in this node's sessions.",
            value=counts.pending,
        )
        yield CounterMetricFamily(
            "rtcs_redeliveries",
            "Messages delivered again for want of a delivery receipt.",
            value=counts.redeliveries,
        )
        given_up = CounterMetricFamily(
            "rtcs_receipts_given_up",
            "Messages no longer redelivered without their receipt, by reason.",
            labels=["reason"],
        )
        for reason in GIVE_UP_REASONS:
            given_up.add_metric([reason], counts.given_up.get(reason, 0))
        yield given_up


class _MailboxCollector(Collector):
    """``rtcs_actor_mailbox_messages``: read from the actor system when scraped.

    Every kind of :data:`ACTOR_KINDS` is exported (zero until something
    waits); a kind outside the set counts as "other".
    """

    def __init__(self) -> None:
        self.source: Callable[[], Mapping[str, int]] | None = None

    def describe(self) -> Iterator[Metric]:
        yield self._family({})

    def collect(self) -> Iterator[Metric]:
        yield self._family({} if self.source is None else self.source())

    @staticmethod
    def _family(sizes: Mapping[str, int]) -> GaugeMetricFamily:
        counts = dict.fromkeys(ACTOR_KINDS, 0)
        for kind, count in sizes.items():
            counts[kind if kind in counts else OTHER] += count
        family = GaugeMetricFamily(
            "rtcs_actor_mailbox_messages",
            "Messages waiting in actor mailboxes, by kind of actor.",
            labels=["kind"],
        )
        for kind, count in counts.items():
            family.add_metric([kind], count)
        return family


class Metrics:
    """The rtcs metrics on one registry (a new private one when None is given).

    Build one per process in the composition root and pass it down; two
    instances never share a registry unless the caller passes the same one,
    which then raises ``ValueError`` for the duplicate names.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry

        self.connections_active = Gauge(
            "rtcs_connections_active", "Open WebSocket connections.", registry=r
        )
        self.connections_opened = Counter(
            "rtcs_connections_opened_total", "WebSocket connections accepted.", registry=r
        )
        self.connections_closed = Counter(
            "rtcs_connections_closed_total",
            "WebSocket connections closed, by close code.",
            ["code"],
            registry=r,
        )
        self.connection_duration = Histogram(
            "rtcs_connection_duration_seconds",
            "How long WebSocket connections stayed open, from accept to close.",
            buckets=CONNECTION_BUCKETS,
            registry=r,
        )
        self.handshakes_rejected = Counter(
            "rtcs_handshakes_rejected_total",
            "HTTP upgrades refused before a connection opened, by status.",
            ["status"],
            registry=r,
        )
        self.messages_in = LoopCounter(
            "rtcs_messages_in_total",
            "Client frames received, by type.",
            "type",
            (*CLIENT_FRAME_TYPES, INVALID),
            r,
        )
        self.messages_out = LoopCounter(
            "rtcs_messages_out_total",
            "Server frames sent, by type.",
            "type",
            (*SERVER_FRAME_TYPES, OTHER),
            r,
        )
        self.deliveries = LoopCounter(
            "rtcs_deliveries_total",
            "Messages handed to recipients' outboxes, by kind.",
            "kind",
            DELIVERY_KINDS,
            r,
        )
        self.errors = Counter(
            "rtcs_errors_total", "Error frames sent, by wire code.", ["code"], registry=r
        )
        self.routing_seconds = LoopHistogram(
            "rtcs_routing_seconds",
            "Time from a client frame's arrival to the last local write of its message, by kind.",
            "kind",
            DELIVERY_KINDS,
            ROUTING_BUCKETS,
            r,
        )
        self.actor_restarts = Counter(
            "rtcs_actor_restarts_total",
            "Actor restarts, by supervisor and strategy.",
            ["supervisor", "strategy"],
            registry=r,
        )
        self.supervisor_escalations = Counter(
            "rtcs_supervisor_escalations_total",
            "Supervisors that gave up (restart intensity exceeded) and escalated, by supervisor.",
            ["supervisor"],
            registry=r,
        )
        self._escalations = _children(self.supervisor_escalations, (*SUPERVISORS, OTHER))
        self._mailboxes = _MailboxCollector()
        r.register(self._mailboxes)
        self._receipts = _ReceiptsCollector()
        r.register(self._receipts)
        self.outbox_drops = Counter(
            "rtcs_outbox_drops_total",
            "Outbound frames dropped, by reason.",
            ["reason"],
            registry=r,
        )
        self.sessions_attached = Gauge(
            "rtcs_sessions_attached", "Sessions with a live connection.", registry=r
        )
        self.sessions_detached = Gauge(
            "rtcs_sessions_detached", "Sessions kept for resume.", registry=r
        )
        self.sessions_detached_buffered_bytes = Gauge(
            "rtcs_sessions_detached_buffered_bytes",
            "Replay-buffer bytes held by the detached sessions of this node.",
            registry=r,
        )
        self.sessions_evicted = Counter(
            "rtcs_sessions_evicted_total",
            "Detached sessions expired early by a limit, by reason.",
            ["reason"],
            registry=r,
        )
        self.resumes = Counter(
            "rtcs_resumes_total", "Resume attempts, by result.", ["result"], registry=r
        )
        self.rate_limited = Counter(
            "rtcs_rate_limited_total",
            "Client frames refused by the rate limit, by the limit that refused them.",
            ["limit"],
            registry=r,
        )
        self.broker_errors = Counter(
            "rtcs_broker_errors_total", "Broker publish or subscribe failures.", registry=r
        )
        self.breaker_state = Gauge(
            "rtcs_backend_breaker_state",
            "The shared backend's circuit breaker: 1 for the state it is in, 0 for the others.",
            ["state"],
            registry=r,
        )
        self._breaker_states = _children(self.breaker_state, BREAKER_STATES)
        self._breaker_states["closed"].set(1)
        #: The state the breaker is in (closed, open, half_open), as last recorded.
        self.breaker_now = "closed"
        self.breaker_transitions = Counter(
            "rtcs_backend_breaker_transitions_total",
            "Circuit breaker transitions, by the state entered.",
            ["to"],
            registry=r,
        )
        self._breaker_transitions = _children(self.breaker_transitions, BREAKER_STATES)
        self.degraded = Gauge(
            "rtcs_degraded",
            "1 while the shared backend is unavailable (clients were sent a status frame).",
            registry=r,
        )
        self.loop_lag_seconds = Histogram(
            "rtcs_event_loop_lag_seconds",
            "Delay of a periodic event-loop callback past its due time.",
            buckets=LOOP_LAG_BUCKETS,
            registry=r,
        )
        self.build_info = Info("rtcs_build", "rtcs version and node id.", registry=r)
        # Routing rules (docs/rules.md): one child per rule of the rules in
        # use; rule names are the operator's, at most 1,000 (rtcs.rules.load).
        self.rule_matches = Counter(
            "rtcs_rule_matches_total",
            "Publishes a routing rule applied to (topic and condition matched), by rule.",
            ["rule"],
            registry=r,
        )
        self.rule_drops = Counter(
            "rtcs_rule_drops_total",
            "Publishes a routing rule dropped, by rule.",
            ["rule"],
            registry=r,
        )
        self.rule_reroutes = Counter(
            "rtcs_rule_reroutes_total",
            "Publishes a routing rule moved to another topic, by rule.",
            ["rule"],
            registry=r,
        )
        self.rule_errors = Counter(
            "rtcs_rule_errors_total",
            "Rule conditions that failed to evaluate (the rule did not apply), by rule.",
            ["rule"],
            registry=r,
        )
        self.rules_active = Gauge("rtcs_rules_loaded", "Routing rules in use.", registry=r)
        self.rules_info = Info(
            "rtcs_rules", "The version of the rules file in use (empty: none).", registry=r
        )
        self.rules_info.info({"version": ""})
        self.rules_reloads = Counter(
            "rtcs_rules_reloads_total",
            "Reloads of the rules file, by result (ok: in use; error: the old rules stayed).",
            ["result"],
            registry=r,
        )
        self._reloads = _children(self.rules_reloads, RELOAD_RESULTS)
        self.route_plugin_failures = Counter(
            "rtcs_route_plugin_failures_total",
            "Publishes a route-handler plugin failed (answered 'internal'), by plugin and reason.",
            ["plugin", "reason"],
            registry=r,
        )
        self._rule_children: dict[str, tuple[Counter, ...]] = {}
        self._route_cache: _RouteCacheCollector | None = None
        # The process (CPU, memory, file descriptors, start time), the Python
        # version and the garbage collector: read when scraped, a few file
        # reads and calls in all.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

        # Label children, created now so every known series exports zero.
        self._closed = _children(
            self.connections_closed, [str(int(c)) for c in CloseCode] + [OTHER]
        )
        self._closed_by_code = {int(c): self._closed[str(int(c))] for c in CloseCode}
        self._rejected = _children(
            self.handshakes_rejected, [str(s) for s in HANDSHAKE_STATUSES] + [OTHER]
        )
        self._rejected_by_status = {s: self._rejected[str(s)] for s in HANDSHAKE_STATUSES}
        self._in = self.messages_in.values
        self._out = self.messages_out.values
        self._delivered = self.deliveries.values
        # Delivery kind -> the label it is counted under (envelope kinds alias).
        self._kinds: dict[str, str] = {kind: kind for kind in DELIVERY_KINDS}
        for alias in _DIRECT_ALIASES:
            self._kinds[alias] = "direct"
        # ErrorCode is a str enum, so members find their value's key.
        self._errors = _children(self.errors, [c.value for c in ErrorCode])
        self._restarts = {
            (supervisor, strategy): self.actor_restarts.labels(supervisor, strategy)
            for supervisor in (*SUPERVISORS, OTHER)
            for strategy in RESTART_STRATEGIES
        }
        self._drops = _children(self.outbox_drops, OUTBOX_DROP_REASONS)
        self._resumes = _children(self.resumes, RESUME_RESULTS)
        self._rate_limited = {limit: self.rate_limited.labels(limit.value) for limit in Limit}
        self._evicted = _children(self.sessions_evicted, EVICTION_REASONS)
        self.set_build(node="")

    # -- connections -----------------------------------------------------

    def opened(self) -> None:
        """Count an accepted connection; pair every call with one ``closed()``."""
        self.connections_opened.inc()
        self.connections_active.inc()

    def closed(self, code: int, seconds: float | None = None) -> None:
        """Count a closed connection by close code (not a ``CloseCode`` → "other"),
        and observe how long it was open (``seconds``, from accept to close), if given.

        Obligation: call once per ``opened()``; it lowers the active gauge.
        """
        self._closed_by_code.get(code, self._closed[OTHER]).inc()
        self.connections_active.dec()
        if seconds is not None:
            self.connection_duration.observe(max(seconds, 0.0))

    def handshake_rejected(self, status: int) -> None:
        """Count a refused upgrade by HTTP status (400/401/403/429/503, else "other")."""
        self._rejected_by_status.get(status, self._rejected[OTHER]).inc()

    # -- frames ------------------------------------------------------------

    def frame_in(self, type_: object) -> None:
        """Count a client frame; an unknown or ill-typed ``type`` counts as "invalid"."""
        counts = self._in
        try:
            counts[type_] += 1  # type: ignore[index]
        except (KeyError, TypeError):
            # TypeError: a client sent an unhashable "type" (a list, an object).
            counts[INVALID] += 1

    def frame_out(self, type_: str, n: int = 1) -> None:
        """Count ``n`` server frames of ``type_``; an unlisted type counts as "other"."""
        counts = self._out
        if type_ in counts:
            counts[type_] += n
        else:
            counts[OTHER] += n

    def error(self, code: ErrorCode | str) -> None:
        """Count an error frame by wire code.

        Raises:
            ValueError: ``code`` is not an ``ErrorCode`` value (a bug in rtcs:
                codes come from the error tree, never from clients).
        """
        _known(self._errors, code, "not a wire error code").inc()

    # -- routing -----------------------------------------------------------

    def delivered(self, kind: str, n: int = 1) -> None:
        """Count ``n`` deliveries of ``kind`` (topic room direct global filter;
        the envelope kinds "user" and "connection" count as "direct").

        Raises:
            ValueError: ``kind`` is none of those.
        """
        self._delivered[_known(self._kinds, kind, "unknown delivery kind")] += n

    def routed(self, kind: str, seconds: float) -> None:
        """Observe the time one message of ``kind`` took to route (kinds as ``delivered``).

        Raises:
            ValueError: ``kind`` is not a delivery kind.
        """
        self.routing_seconds.observe(_known(self._kinds, kind, "unknown delivery kind"), seconds)

    # -- runtime -----------------------------------------------------------

    def restart(self, supervisor: str, strategy: str) -> None:
        """Count an actor restart; an unlisted supervisor counts as "other".

        Raises:
            ValueError: ``strategy`` is not one_for_one, all_for_one or rest_for_one.
        """
        if supervisor not in SUPERVISORS:
            supervisor = OTHER
        _known(self._restarts, (supervisor, strategy), "unknown restart strategy").inc()

    def escalated(self, supervisor: str) -> None:
        """Count a supervisor that gave up and escalated; an unlisted one counts as "other"."""
        self._escalations.get(supervisor, self._escalations[OTHER]).inc()

    def watch_receipts(self, counts: ReceiptCounts) -> None:
        """Export the delivery-receipt metrics from ``counts`` (the node's
        ``SessionRegistry.receipt_counts``), read at every scrape. Calling it
        again with the same object changes nothing."""
        self._receipts.source = counts

    def watch_mailboxes(self, sizes: Callable[[], Mapping[str, int]]) -> None:
        """Export ``rtcs_actor_mailbox_messages`` from ``sizes()``, read at every scrape.

        ``sizes`` returns the messages waiting, by kind of actor
        (``rtcs.runtime.introspect.TreeView.mailboxes``); it runs on the
        thread that scrapes, which for rtcs is the event loop's. A second
        call replaces the source (the actor tree started again).
        """
        self._mailboxes.source = sizes

    def outbox_drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` dropped outbound frames (overflow, closed, write_buffer).

        Raises:
            ValueError: ``reason`` is none of those.
        """
        _known(self._drops, reason, "unknown outbox drop reason").inc(n)

    def rate_limit(self, limit: Limit) -> None:
        """Count a client frame refused by the per-connection ``limit`` (frames or bytes)."""
        self._rate_limited[limit].inc()

    def resume(self, result: str) -> None:
        """Count a resume attempt (resumed or expired).

        Raises:
            ValueError: ``result`` is neither.
        """
        _known(self._resumes, result, "unknown resume result").inc()

    def session_evicted(self, reason: str) -> None:
        """Count a detached session evicted by a limit (user_limit, node_bytes).

        Raises:
            ValueError: ``reason`` is neither.
        """
        _known(self._evicted, reason, "unknown eviction reason").inc()

    def breaker(self, state: str) -> None:
        """Record that the circuit breaker entered ``state`` (closed, open, half_open).

        Raises:
            ValueError: ``state`` is none of those.
        """
        _known(self._breaker_transitions, state, "unknown breaker state").inc()
        self.breaker_now = state
        for name, child in self._breaker_states.items():
            child.set(1 if name == state else 0)
        self.degraded.set(0 if state == "closed" else 1)

    def loop_lag(self, seconds: float) -> None:
        """Observe how late a periodic event-loop callback ran."""
        self.loop_lag_seconds.observe(seconds)

    # -- routing rules -------------------------------------------------------

    def rules_loaded(self, names: Iterable[str], version: str = "") -> None:
        """The rules named ``names`` (file ``version``) are in use now (at start, after a reload).

        Creates their series (exported as zeros) and removes those of rules
        that are gone, so renaming rules never grows the label set.
        """
        wanted = list(names)
        for name in set(self._rule_children) - set(wanted):
            del self._rule_children[name]
            for family in self._rule_families():
                family.remove(name)
        for name in wanted:
            self._rule(name)
        self.rules_active.set(len(wanted))
        self.rules_info.info({"version": version})

    def _rule_families(self) -> tuple[Counter, Counter, Counter, Counter]:
        return (self.rule_matches, self.rule_drops, self.rule_reroutes, self.rule_errors)

    def _rule(self, name: str) -> tuple[Counter, ...]:
        """The (matches, drops, reroutes, errors) children of rule ``name``, made if new."""
        children = self._rule_children.get(name)
        if children is None:
            children = self._rule_children[name] = tuple(
                family.labels(name) for family in self._rule_families()
            )
        return children

    def rule_outcome(
        self,
        matched: Iterable[str],
        dropped: Iterable[str],
        rerouted: Iterable[str],
        errors: Iterable[str],
    ) -> None:
        """Count what the rules did to one publish (the fields of a rules ``Outcome``)."""
        for name in matched:
            self._rule(name)[0].inc()
        for name in dropped:
            self._rule(name)[1].inc()
        for name in rerouted:
            self._rule(name)[2].inc()
        for name in errors:
            self._rule(name)[3].inc()

    def route_plugin_failure(self, plugin: str, reason: str) -> None:
        """Count a publish a route plugin failed (plugin names come from the configuration).

        ``reason``: crashed, timeout, not running, bad data, or another
        reason rtcs names (never text from a client or a plugin).
        """
        if reason not in PLUGIN_FAILURE_REASONS:
            reason = OTHER
        self.route_plugin_failures.labels(plugin, reason).inc()

    def rules_reloaded(self, ok: bool) -> None:
        """Count a reload of the rules file (a failed one left the old rules in use)."""
        self._reloads["ok" if ok else "error"].inc()

    def watch_route_cache(self, stats: Callable[[], Any]) -> None:
        """Export the route cache's counters, read from ``stats()`` at every scrape.

        ``stats`` returns an object with ``hits``, ``misses`` and ``size``
        (``rtcs.rules.RuleSet.cache_stats``); reading at scrape time keeps
        counting off the publish path. A second call replaces the source.
        """
        if self._route_cache is None:
            self._route_cache = _RouteCacheCollector(stats)
            self.registry.register(self._route_cache)
        else:
            self._route_cache.stats = stats

    def set_build(self, node: str, version: str = __version__) -> None:
        """Publish the version and node id as ``rtcs_build_info``."""
        self.build_info.info({"version": version, "node": node})

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format: (body, content type)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
