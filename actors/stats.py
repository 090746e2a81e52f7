"""Metrics actors: ``MetricsCollector`` (a supervisor, all-for-one by default)
and its ``StatsAggregator``.

Hot-path counters are plain calls on ``rtcs.metrics.Metrics``; these actors
only do the periodic work: sampling gauges, measuring event-loop lag from
how late their own timer fires, and keeping rolling rates that are logged
as one ``stats`` line a minute.

With a stats topic (``Settings.stats_topic``: ``metrics.stats_topic``, or
the demo's), the aggregator also publishes the node's live figures to it at
every sample, as a server publish that stays on this node
(``ServerPublish(..., local_only=True)``): every node publishes its own, each
message names its node. The data (docs/protocol.md, "Node statistics")::

    {"node": "node-1", "connections": 2, "messages_in_per_s": 1.5,
     "messages_out_per_s": 4.0, "deliveries_per_s": 3.0, "restarts": 0,
     "breaker": "closed", "degraded": false, "interval": 1.0}

Rates are over the last :data:`LIVE_SAMPLES` samples (5 intervals: 5 s by
default); ``restarts`` counts actor restarts since the node started;
``interval`` is ``metrics.sample_interval`` (a panel can tell a node that
went silent).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from thespian.actors import ActorAddress, WakeupMessage

from rtcs.actors.context import ROUTE_TOPIC, STATS, NodeActor, NodeSupervisor
from rtcs.actors.messages import SampleDue, ServerPublish, StatsSample

# Samples kept by the aggregator, in report intervals.
_KEPT_REPORTS = 5
#: Samples the stats topic's rates are computed over (the last five intervals).
LIVE_SAMPLES = 6


@dataclass(frozen=True, slots=True)
class Totals:
    """The message counters at one moment (``at``: monotonic seconds)."""

    at: float
    messages_in: float
    messages_out: float
    deliveries: float


def per_second(first: Totals, last: Totals) -> dict[str, float]:
    """The rates between two moments, rounded to 0.01; zeros when they coincide."""
    span = last.at - first.at
    if span <= 0:
        return {"messages_in_per_s": 0.0, "messages_out_per_s": 0.0, "deliveries_per_s": 0.0}
    return {
        "messages_in_per_s": round((last.messages_in - first.messages_in) / span, 2),
        "messages_out_per_s": round((last.messages_out - first.messages_out) / span, 2),
        "deliveries_per_s": round((last.deliveries - first.deliveries) / span, 2),
    }


def node_stats(
    node: str,
    connections: int,
    window: Sequence[Totals],
    *,
    restarts: int,
    breaker: str,
    degraded: bool,
    interval: float,
) -> dict[str, Any]:
    """The data of one stats-topic message (module docstring); ``window`` is not empty."""
    return {
        "node": node,
        "connections": connections,
        **per_second(window[0], window[-1]),
        "restarts": restarts,
        "breaker": breaker,
        "degraded": degraded,
        "interval": interval,
    }


def _loop_total(counter: Any) -> float:
    """Sum of a ``rtcs.metrics.LoopCounter`` over its label values."""
    return float(sum(counter.values.values()))


def _counter_total(counter: Any) -> float:
    """Sum of a prometheus counter over all its label children."""
    total = 0.0
    for metric in counter.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total


class MetricsCollector(NodeSupervisor):
    """Samples node gauges every ``metrics.sample_interval`` and feeds the stats aggregator."""

    def __init__(self) -> None:
        super().__init__()
        self._expected = 0.0
        self._ticking = False

    def on_started(self) -> None:
        if not self._ticking:
            self._ticking = True
            self._schedule()

    def _schedule(self) -> None:
        interval = self.ctx.settings.metrics.sample_interval
        self._expected = time.monotonic() + interval
        self.wakeupAfter(interval, SampleDue())

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        if not isinstance(msg.payload, SampleDue):
            return
        ctx = self.ctx
        metrics = ctx.metrics
        metrics.loop_lag_seconds.observe(max(time.monotonic() - self._expected, 0.0))
        attached = ctx.sessions.attached_count()
        total = len(ctx.sessions)
        metrics.sessions_attached.set(attached)
        metrics.sessions_detached.set(ctx.sessions.detached_count())
        aggregator = ctx.directory.lookup(STATS)
        if aggregator is not None:
            self.send(
                aggregator,
                StatsSample(
                    at=time.monotonic(),
                    connections=attached,
                    sessions=total,
                    detached=total - attached,
                    messages_in=_counter_total(metrics.messages_in),
                    deliveries=_counter_total(metrics.deliveries),
                ),
            )
        self._schedule()


class StatsAggregator(NodeActor):
    """Keeps the last few report intervals of samples and logs rolling rates;
    publishes live figures to the stats topic, if any (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: deque[StatsSample] = deque()
        self.live: deque[Totals] = deque(maxlen=LIVE_SAMPLES)
        self._last_report = time.monotonic()

    def configured(self) -> None:
        metrics = self.ctx.settings.metrics
        kept = int(metrics.report_interval / metrics.sample_interval) * _KEPT_REPORTS
        self.samples = deque(self.samples, maxlen=max(kept, 2))

    def receiveMsg_StatsSample(self, msg: StatsSample, sender: ActorAddress) -> None:
        if not self.configured_yet:
            return
        self.samples.append(msg)
        if msg.at - self._last_report >= self.ctx.settings.metrics.report_interval:
            self._last_report = msg.at
            self.ctx.log.info("stats", **self.rates())
        topic = self.ctx.settings.stats_topic
        if topic:
            self._publish(topic, msg)

    def _publish(self, topic: str, msg: StatsSample) -> None:
        """Publish this node's live figures to ``topic`` (this node's subscribers only)."""
        ctx = self.ctx
        metrics = ctx.metrics
        # Messages out are read now: the sample carries the other two counters.
        self.live.append(
            Totals(msg.at, msg.messages_in, _loop_total(metrics.messages_out), msg.deliveries)
        )
        handler = ctx.directory.lookup(ROUTE_TOPIC)
        if handler is None:  # the router restarts: this second is skipped
            return
        data = node_stats(
            ctx.node_id,
            msg.connections,
            self.live,
            restarts=int(_counter_total(metrics.actor_restarts)),
            breaker=metrics.breaker_now,
            degraded=ctx.degraded,
            interval=ctx.settings.metrics.sample_interval,
        )
        self.send(handler, ServerPublish(topic, data, local_only=True))

    def rates(self) -> dict[str, float]:
        """Messages in and deliveries per second over the kept window."""
        if len(self.samples) < 2:
            return {"messages_in_per_s": 0.0, "deliveries_per_s": 0.0}
        first, last = self.samples[0], self.samples[-1]
        span = max(last.at - first.at, 1e-9)
        return {
            "connections": float(last.connections),
            "sessions": float(last.sessions),
            "messages_in_per_s": round((last.messages_in - first.messages_in) / span, 2),
            "deliveries_per_s": round((last.deliveries - first.deliveries) / span, 2),
        }
