"""Medians over repeats, ratios to the baselines, the targets, and the table.

Pure: takes the per-run metric dicts and returns data and text.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

BASELINES = ("raw", "node")
#: Ratio columns, numerator / denominator, shown when both targets ran.
RATIOS = (("rtcs", "raw"), ("rtcs", "node"), ("rtcs-w2", "rtcs"), ("rtcs-w2", "raw"))
SCALE_OUT = ("rtcs-w2", "rtcs")
#: The scale-out target on bursts compares 2 workers with one raw process.
SCALE_OUT_RAW = ("rtcs-w2", "raw")


def ratio_name(num: str, den: str) -> str:
    return f"{num}/{den}"


@dataclass(frozen=True, slots=True)
class Target:
    """A threshold on rtcs/raw for one metric: ``ratio <op> bound``."""

    op: str  # "<=" or ">="
    bound: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.bound if self.op == "<=" else ratio >= self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}x"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """How a metric key is labelled and judged."""

    label: str
    unit: str
    target: Target | None = None  # on rtcs/raw
    scale_target: Target | None = None  # on scale_pair (rtcs-w2/rtcs unless told)
    scale_pair: tuple[str, str] = SCALE_OUT


#: The targets on rtcs/raw (one worker, medians of the same run).
IDLE_RSS_TARGET = Target("<=", 1.2)  # RSS per idle connection, largest size
CONNECT_RATE_TARGET = Target(">=", 1.0)  # every size
ROUND_TRIPS_TARGET = Target(">=", 1.0)  # publish→ack and ping→pong, every client count
BURST_TARGET = Target(">=", 1.5)  # burst deliveries/s, every burst size
FANOUT_P99_TARGET = Target("<=", 0.8)  # fan-out p99 at 2 msg/s to every subscriber
#: The scale-out targets: fan-out peak on rtcs-w2/rtcs, bursts on rtcs-w2/raw.
SCALE_OUT_TARGET = Target(">=", 1.6)
SCALE_OUT_BURST_TARGET = Target(">=", 2.5)

#: Labels of the summary metrics, in table order within their workload.
FIXED = {
    "fanout.peak_deliveries_per_s": MetricInfo(
        "fanout: peak deliveries", "/s", scale_target=SCALE_OUT_TARGET
    ),
    "fanout.max_sustained_offered": MetricInfo("fanout: max offered kept up", "/s"),
    "fanout.p50_ms@2msg": MetricInfo("fanout @2 msg/s per subscriber: p50", "ms"),
    "fanout.p99_ms@2msg": MetricInfo(
        "fanout @2 msg/s per subscriber: p99", "ms", FANOUT_P99_TARGET
    ),
    "fanout.max_ms@2msg": MetricInfo("fanout @2 msg/s per subscriber: max", "ms"),
    "fanout.top_offered": MetricInfo("fanout: largest step run (offered)", "/s"),
    "fanout.lag_p50_ms@top": MetricInfo("fanout @largest step: loop lag p50", "ms"),
    "fanout.lag_p99_ms@top": MetricInfo("fanout @largest step: loop lag p99", "ms"),
    "fanout.lag_max_ms@top": MetricInfo("fanout @largest step: loop lag max", "ms"),
    "fanout.lag_unanswered@top": MetricInfo("fanout @largest step: probe pings lost", ""),
    "fanout.p50_ms@10k": MetricInfo("fanout @10k/s offered: p50", "ms"),
    "fanout.p99_ms@10k": MetricInfo("fanout @10k/s offered: p99", "ms"),
    "fanout.max_ms@10k": MetricInfo("fanout @10k/s offered: max", "ms"),
    "fanout.loadgen_cpu_pct@peak": MetricInfo("fanout @peak: loadgen CPU", "%"),
    "fanout.server_cpu_pct@peak": MetricInfo("fanout @peak: server CPU", "%"),
    "fanout.redis_cpu_pct@peak": MetricInfo("fanout @peak: redis-server CPU", "%"),
    "fanout.busiest_worker_share": MetricInfo("fanout: subscribers on busiest worker", ""),
    "fanout.cross_share@10k": MetricInfo("fanout @10k/s offered: cross-worker share", ""),
    "fanout.p99_same_ms@10k": MetricInfo("fanout @10k/s offered: p99 same worker", "ms"),
    "fanout.p50_cross_ms@10k": MetricInfo("fanout @10k/s offered: p50 cross-worker", "ms"),
    "fanout.p99_cross_ms@10k": MetricInfo("fanout @10k/s offered: p99 cross-worker", "ms"),
    "chat.offered_per_s": MetricInfo("chat: offered deliveries", "/s"),
    "chat.delivered_per_s": MetricInfo("chat: delivered", "/s"),
    "chat.delivered_ratio": MetricInfo("chat: delivered / offered", ""),
    "chat.p50_ms": MetricInfo("chat: latency p50", "ms"),
    "chat.p99_ms": MetricInfo("chat: latency p99", "ms"),
    "chat.loadgen_cpu_pct": MetricInfo("chat: loadgen CPU", "%"),
    "chat.server_cpu_pct": MetricInfo("chat: server CPU", "%"),
    "chat.redis_cpu_pct": MetricInfo("chat: redis-server CPU", "%"),
    "chat.busiest_worker_share": MetricInfo("chat: members on busiest worker", ""),
    "chat.cross_share": MetricInfo("chat: cross-worker share", ""),
    "chat.p99_same_ms": MetricInfo("chat: latency p99 same worker", "ms"),
    "chat.p50_cross_ms": MetricInfo("chat: latency p50 cross-worker", "ms"),
    "chat.p99_cross_ms": MetricInfo("chat: latency p99 cross-worker", "ms"),
}


def describe(key: str, largest_idle: int) -> MetricInfo:
    """Label, unit and (if any) target for a metric key."""
    if m := re.fullmatch(r"idle\.(\d+)\.(\w+)", key):
        n, what = int(m[1]), m[2]
        if what == "rss_kb_per_conn":
            tgt = IDLE_RSS_TARGET if n == largest_idle else None
            return MetricInfo(f"idle {n:,}: RSS per connection", "KiB", tgt)
        if what == "connects_per_s":
            return MetricInfo(f"idle {n:,}: connect rate (to welcome)", "/s", CONNECT_RATE_TARGET)
        return MetricInfo(f"idle {n:,}: loadgen CPU", "%")
    if m := re.fullmatch(r"reqrep\.(\d+)\.(ping_)?(\w+)", key):
        n, what = int(m[1]), m[3]
        req = "ping→pong" if m[2] else "publish→ack"
        labels = {
            "rt_per_s": ("round trips", "/s", ROUND_TRIPS_TARGET),
            "rtt_p50_ms": ("RTT p50", "ms", None),
            "rtt_p99_ms": ("RTT p99", "ms", None),
            "loadgen_cpu_pct": ("loadgen CPU", "%", None),
            "server_cpu_pct": ("server CPU", "%", None),
        }
        if what not in labels:
            return MetricInfo(key, "")
        name, unit, tgt = labels[what]
        return MetricInfo(f"reqrep {n:,} clients, {req}: {name}", unit, tgt)
    if m := re.fullmatch(r"burst\.(\d+)\.(\w+)", key):
        size, what = int(m[1]), m[2]
        burst_labels = {
            "deliveries_per_s": ("deliveries", "/s", BURST_TARGET),
            "completion_p50_ms": ("burst completion p50", "ms", None),
            "completion_p99_ms": ("burst completion p99", "ms", None),
            "bursts": ("bursts measured", "", None),
            "delivered_ratio": ("delivered / sent", "", None),
            "acked_ratio": ("acked / published", "", None),
            "lag_p50_ms": ("loop lag p50", "ms", None),
            "lag_p99_ms": ("loop lag p99", "ms", None),
            "lag_max_ms": ("loop lag max", "ms", None),
            "lag_unanswered": ("probe pings lost", "", None),
            "loadgen_cpu_pct": ("loadgen CPU", "%", None),
            "server_cpu_pct": ("server CPU", "%", None),
        }
        if what not in burst_labels:
            return MetricInfo(key, "")
        name, unit, tgt = burst_labels[what]
        if what == "deliveries_per_s":
            return MetricInfo(
                f"burst of {size}: {name}", unit, tgt, SCALE_OUT_BURST_TARGET, SCALE_OUT_RAW
            )
        return MetricInfo(f"burst of {size}: {name}", unit, tgt)
    if m := re.fullmatch(r"fanout\.step\.(\d+)\.(\w+)", key):
        offered, what = int(m[1]), m[2]
        names = {
            "delivered_per_s": ("delivered", "/s"),
            "p99_ms": ("p99", "ms"),
            "loadgen_cpu_pct": ("loadgen CPU", "%"),
            "server_cpu_pct": ("server CPU", "%"),
            "redis_cpu_pct": ("redis-server CPU", "%"),
            "lag_p99_ms": ("loop lag p99", "ms"),
        }
        name, unit = names.get(what, (what, ""))
        return MetricInfo(f"fanout {offered:,}/s offered: {name}", unit)
    return FIXED.get(key, MetricInfo(key, ""))


def medians(runs: Sequence[Mapping[str, object]]) -> dict[str, dict[str, float]]:
    """``{metric: {target: median over repeats}}`` from run records.

    Each run record has ``target`` and ``metrics`` (``{key: value}``); runs that
    failed carry no metrics and are ignored.
    """
    samples: dict[str, dict[str, list[float]]] = {}
    for run in runs:
        metrics = run.get("metrics")
        if not isinstance(metrics, Mapping):
            continue
        target = str(run["target"])
        for key, value in metrics.items():
            samples.setdefault(key, {}).setdefault(target, []).append(float(value))
    return {key: {t: statistics.median(v) for t, v in per.items()} for key, per in samples.items()}


@dataclass(frozen=True, slots=True)
class Row:
    """One table row: a metric, its medians per target, ratios and verdicts.

    ``ratios`` are keyed ``"num/den"`` (see :data:`RATIOS`); ``added_ms`` is
    rtcs-w2 minus rtcs for latency rows (the cost of the scale-out layout).
    """

    key: str
    label: str
    unit: str
    values: dict[str, float]
    ratios: dict[str, float]
    target: str
    verdict: str  # "✓", "✗" or ""
    scale_target: str = ""
    scale_verdict: str = ""
    added_ms: float | None = None


WORKLOAD_ORDER = ("idle", "fanout", "burst", "reqrep", "chat")


def row_order(key: str, first_seen: int) -> tuple[int, int, int, int]:
    """Sort key: workload, then size or offered rate, then first appearance.

    Fan-out step rows come first in ascending offered rate, its summary after.
    """
    parts = key.split(".")
    group = WORKLOAD_ORDER.index(parts[0]) if parts[0] in WORKLOAD_ORDER else len(WORKLOAD_ORDER)
    fixed_at = list(FIXED).index(key) if key in FIXED else len(FIXED) + first_seen
    if parts[0] == "fanout":
        if parts[1] == "step":
            return group, 0, int(parts[2]), first_seen
        return group, 1, 0, fixed_at
    if key in FIXED:
        return group, 0, 0, fixed_at
    size = int(parts[1]) if len(parts) > 2 and parts[1].isdigit() else 0
    return group, 0, size, first_seen


def build_rows(summary: Mapping[str, Mapping[str, float]], largest_idle: int) -> list[Row]:
    """One row per metric, grouped by workload and size."""
    rows = []
    keys = sorted(summary, key=lambda k: row_order(k, list(summary).index(k)))
    for key in keys:
        values = summary[key]
        info = describe(key, largest_idle)
        ratios = {}
        for num, den in RATIOS:
            a, b = values.get(num), values.get(den)
            if a is not None and b:
                ratios[ratio_name(num, den)] = a / b
        verdict = ""
        raw_ratio = ratios.get(ratio_name("rtcs", "raw"))
        if info.target is not None and raw_ratio is not None:
            verdict = "✓" if info.target.met(raw_ratio) else "✗"
        scale_verdict = ""
        scale_ratio = ratios.get(ratio_name(*info.scale_pair))
        if info.scale_target is not None and scale_ratio is not None:
            scale_verdict = "✓" if info.scale_target.met(scale_ratio) else "✗"
        added = None
        w2, one = SCALE_OUT
        # A cross-worker latency is compared with one worker's latency over all
        # deliveries (rtcs has no cross-worker deliveries): the added hop.
        ref = summary.get(re.sub(r"_cross_ms", "_ms", key), {}).get(one)
        if "_cross_ms" not in key:
            ref = values.get(one)
        if info.unit == "ms" and w2 in values and ref is not None:
            added = values[w2] - ref
        rows.append(
            Row(
                key,
                info.label,
                info.unit,
                dict(values),
                ratios,
                str(info.target) if info.target else "",
                verdict,
                _scale_target(info),
                scale_verdict,
                added,
            )
        )
    return rows


def _scale_target(info: MetricInfo) -> str:
    """The scale-out target cell: the bound, and the ratio it applies to."""
    if info.scale_target is None:
        return ""
    num, den = info.scale_pair
    return f"{info.scale_target} ({ratio_name(num, den)})"


def fmt(value: float | None) -> str:
    """A table cell: thousands separated above 100, 1 decimal above 10, else 2."""
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def render_table(rows: Sequence[Row], targets: Sequence[str]) -> str:
    """A Markdown table: metric, unit, one column per target, ratios, targets, ✓/✗.

    With rtcs-w2 and rtcs both present it adds rtcs-w2/rtcs, the latency rtcs-w2
    adds over rtcs ("w2 - rtcs", ms rows only) and the scale-out target.
    """
    cols = ["metric", "unit", *targets]
    ratio_cols = [ratio_name(n, d) for n, d in RATIOS if n in targets and d in targets]
    scale_out = all(t in targets for t in SCALE_OUT)
    cols += ratio_cols
    if scale_out:
        cols.append("w2 - rtcs (ms)")
    with_raw = "rtcs" in targets and "raw" in targets
    if with_raw:
        cols += ["target (rtcs/raw)", "ok"]
    if scale_out:
        cols += ["target (w2)", "ok (w2)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        cells = [row.label, row.unit, *(fmt(row.values.get(t)) for t in targets)]
        cells += [fmt(row.ratios.get(r)) for r in ratio_cols]
        if scale_out:
            cells.append("" if row.added_ms is None else f"{row.added_ms:+.2f}")
        if with_raw:
            cells += [row.target, row.verdict]
        if scale_out:
            cells += [row.scale_target, row.scale_verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
