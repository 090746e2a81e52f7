"""Metrics actors: ``MetricsCollector`` (a supervisor, all-for-one by default)
and its ``StatsAggregator``.

Hot-path counters are plain calls on ``rtcs.metrics.Metrics``; these actors
only do the periodic work: sampling gauges, measuring event-loop lag from
how late their own timer fires, and keeping rolling rates that are logged
as one ``stats`` line a minute.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from thespian.actors import ActorAddress, WakeupMessage

from rtcs.actors.context import STATS, NodeActor, NodeSupervisor
from rtcs.actors.messages import SampleDue, StatsSample

# Samples kept by the aggregator, in report intervals.
_KEPT_REPORTS = 5


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
    """Keeps the last few report intervals of samples and logs rolling rates."""

    def __init__(self) -> None:
        super().__init__()
        self.samples: deque[StatsSample] = deque()
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
