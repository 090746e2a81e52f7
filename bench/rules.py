"""The ``rules`` workload's pure parts: rules files, the in-process measurement, the table.

- :func:`rules_toml` writes a realistic routing-rules file (docs/rules.md) of
  ``n`` rules of which 10 % match :data:`MATCHED_TOPIC` and none match
  :data:`UNMATCHED_TOPIC`. The matching rules only ever deliver (conditions
  true for :data:`PUBLISH_DATA`, transforms that add fields, target filters
  that admit every benchmark user), so the publishes they apply to are still
  delivered and delivery is measured. The other 90 % name other topics, with
  ``*`` and ``>`` patterns over other first segments, and use every action.
- :func:`micro` times :meth:`rtcs.rules.RuleSet.evaluate` in this process
  (no sockets) per publish, for each rule count and both topics, and derives
  the cost per matching rule.
- :func:`rules_rows` and :func:`render_rules_table` turn the medians into the
  "Routing rules" table: every rule count against the rtcs without a rules
  file measured in the same run.

The workload itself (servers, load) is :meth:`bench.workloads.Runner.rules`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.report import fmt

if TYPE_CHECKING:
    from rtcs.rules import RuleSet

RULE_COUNTS = (0, 10, 100, 1_000)
MATCHED_TOPIC = "bench.hot"
UNMATCHED_TOPIC = "bench.cold"
TOPICS = {"unmatched": UNMATCHED_TOPIC, "matched": MATCHED_TOPIC}
#: One rule in this many matches :data:`MATCHED_TOPIC`.
MATCH_EVERY = 10
#: The roles of every benchmark user (``bench.servers.mint_token``).
BENCH_ROLES = ("user",)
#: The data fields every rules publish carries besides ``t`` and ``s`` (and the
#: data of the in-process measurement): every matching rule's condition holds.
PUBLISH_DATA: dict[str, Any] = {
    "level": "high",
    "amount": 1500,
    "meta": {"priority": 3, "source": "bench"},
    "msg": "disk 91% full on db-2",
    "note": "nightly",
}

# The matching rules: patterns that match ``bench.hot`` but never ``bench.cold``.
_MATCHING_PATTERNS = (MATCHED_TOPIC, "*.hot")
# (condition, transform, target) of the matching rules, in turn. Every
# condition holds for PUBLISH_DATA sent by a user with BENCH_ROLES, every
# target admits the benchmark's subscribers, no transform touches ``t`` or ``s``
# or a field a condition reads (so a rule after another's transform still holds).
_MATCHING_KINDS: tuple[tuple[str | None, str | None, str | None], ...] = (
    ('data.level == "high"', None, '{ roles = ["user", "staff"] }'),
    (None, '{ set = { "data.routed" = true } }', None),
    (
        'data.level in ["high", "critical"] && "user" in sender.roles',
        '{ set = { "data.meta.checked" = true } }',
        None,
    ),
    (None, None, "{ exclude_sender = true }"),
    ("has(data.meta) && data.meta.priority >= 2", None, None),
    ("data.amount > 1000", '{ set = { "data.flags.large" = true } }', '{ roles = ["user"] }'),
    ('topic.startsWith("bench.")', None, None),
    (None, '{ set = { "data.tags" = ["routed", "bench"] } }', None),
    ('size(data.msg) < 200 && !("bot" in sender.roles)', None, None),
    (None, '{ rename = { "data.note" = "data.comment" } }', None),
)
# First segments of the other 90 %: never "bench", never a wildcard.
_OTHER_SEGMENTS = (
    "orders",
    "chat",
    "system",
    "app",
    "metrics",
    "users",
    "games",
    "iot",
    "billing",
    "alerts",
    "market",
    "support",
)
_REGIONS = ("eu", "us", "ap", "sa")
_EVENTS = ("created", "updated", "deleted", "alert", "tick", "done")
# (condition, transform, target, action) of the other rules, in turn.
_OTHER_KINDS: tuple[tuple[str | None, str | None, str | None, str], ...] = (
    ('data.level == "debug"', None, None, "drop"),
    (
        None,
        '{ set = { "data.meta.schema" = 2 }, rename = { "data.body" = "data.text" } }',
        None,
        "",
    ),
    (
        'data.level in ["high", "critical"] && !("bot" in sender.roles)',
        '{ set = { "data.routed" = true }, remove = ["data.secret"] }',
        '{ roles = ["moderator"], exclude_sender = true }',
        "reroute",
    ),
    (None, None, '{ roles = ["staff", "admin"] }', ""),
    ("data.amount > 1000", None, '{ users = ["auditor-1", "auditor-2"] }', ""),
    ('"bot" in sender.roles', None, None, "drop"),
    ("has(data.meta) && data.meta.priority >= 2", '{ set = { "data.urgent" = true } }', None, ""),
    ('topic.endsWith(".tick")', '{ remove = ["data.debug"] }', None, ""),
)


def _other_pattern(i: int) -> str:
    """A pattern over another first segment; ``*`` and ``>`` in varied places."""
    seg = _OTHER_SEGMENTS[i % len(_OTHER_SEGMENTS)]
    region = _REGIONS[(i // len(_OTHER_SEGMENTS)) % len(_REGIONS)]
    event = _EVENTS[i % len(_EVENTS)]
    shapes = (
        f"{seg}.{region}.{event}",
        f"{seg}.*.{event}",
        f"{seg}.{region}.>",
        f"{seg}.>",
        f"{seg}.*.*.{event}",
        f"{seg}.n{i}.>",
        f"{seg}.{region}.*",
    )
    return shapes[i % len(shapes)]


def _rule(
    name: str,
    priority: int,
    topic: str,
    when: str | None,
    transform: str | None,
    target: str | None,
    action: str,
    reroute: str | None = None,
) -> str:
    lines = ["[[rule]]", f'name = "{name}"', f"priority = {priority}", f'topic = "{topic}"']
    if when is not None:
        lines.append(f"when = {json.dumps(when)}")
    if target is not None:
        lines.append(f"target = {target}")
    if transform is not None:
        lines.append(f"transform = {transform}")
    if action:
        lines.append(f'action = "{action}"')
    if reroute is not None:
        lines.append(f'reroute = "{reroute}"')
    return "\n".join(lines) + "\n"


def rules_toml(n: int) -> str:
    """A rules file of ``n`` rules, one in :data:`MATCH_EVERY` matching the matched topic.

    Rule ``i`` matches :data:`MATCHED_TOPIC` when ``i % MATCH_EVERY == 0``
    (``n // MATCH_EVERY`` rules, spread over the file and its priorities).

    Raises:
        ValueError: ``n`` is negative or not a multiple of :data:`MATCH_EVERY`.
    """
    if n < 0 or n % MATCH_EVERY:
        raise ValueError(f"rule count must be a non-negative multiple of {MATCH_EVERY}, got {n}")
    out = [
        f"# {n} routing rules generated by bench/rules.py: {n // MATCH_EVERY} match"
        f" {MATCHED_TOPIC!r}, none match {UNMATCHED_TOPIC!r}.\n"
    ]
    for i in range(n):
        # Priorities spread over a small range, with ties, as a hand-written file has.
        priority = (i * 7) % 23 - 11
        if i % MATCH_EVERY == 0:
            k = i // MATCH_EVERY
            when, transform, target = _MATCHING_KINDS[k % len(_MATCHING_KINDS)]
            topic = _MATCHING_PATTERNS[k % len(_MATCHING_PATTERNS)]
            out.append(_rule(f"hot-{i:04d}", priority, topic, when, transform, target, "deliver"))
            continue
        when, transform, target, action = _OTHER_KINDS[i % len(_OTHER_KINDS)]
        reroute = f"rerouted.r{i}" if action == "reroute" else None
        topic = _other_pattern(i)
        out.append(
            _rule(f"other-{i:04d}", priority, topic, when, transform, target, action, reroute)
        )
    return "\n".join(out)


def matching_count(n: int) -> int:
    """How many of :func:`rules_toml`'s ``n`` rules match the matched topic."""
    return n // MATCH_EVERY


# --- the in-process measurement ---------------------------------------------------------


def _time_per_call(call: Any, iterations: int) -> float:
    """Seconds per call of ``call()`` over ``iterations`` calls."""
    counter = time.perf_counter
    t0 = counter()
    for _ in range(iterations):
        call()
    return (counter() - t0) / iterations


def time_evaluate(
    rule_set: RuleSet,
    topic: str,
    runs: int,
    budget_s: float,
    max_iterations: int = 200_000,
    *,
    lookup_only: bool = False,
) -> float:
    """Median over ``runs`` of µs per ``rule_set.evaluate`` of one publish on ``topic``.

    The publish carries :data:`PUBLISH_DATA` from a user with :data:`BENCH_ROLES`.
    Each run repeats the call about ``budget_s`` seconds' worth (calibrated on
    a few calls; at least 10, at most ``max_iterations``). The route cache is
    warm, as it is for any topic published more than once. ``lookup_only``
    times ``rule_set.rules_for(topic)`` instead: the route-cache lookup alone.
    """
    data = {"s": 0, "t": time.time_ns(), **PUBLISH_DATA}
    roles = list(BENCH_ROLES)

    def call() -> None:
        rule_set.evaluate(topic, data, "bench-publisher", roles)

    def lookup() -> None:
        rule_set.rules_for(topic)

    if lookup_only:
        call = lookup

    per_call = _time_per_call(call, 3)  # also fills the route cache
    per_call = _time_per_call(call, max(1, min(1000, int(0.01 / max(per_call, 1e-9)))))
    iterations = max(10, min(max_iterations, int(budget_s / max(per_call, 1e-9))))
    return statistics.median(_time_per_call(call, iterations) for _ in range(runs)) * 1e6


def micro(
    counts: Sequence[int] = RULE_COUNTS, runs: int = 5, budget_s: float = 0.2
) -> dict[str, float]:
    """``rules.micro.*`` metrics: µs per evaluate for every count and topic, per matching rule.

    ``rules.micro.<unmatched|matched>.<n>.us_per_publish`` for the rule set of
    :func:`rules_toml` (``n`` = 0: an empty rule set),
    ``rules.micro.unmatched.<n>.lookup_us`` (the route-cache lookup alone, what
    a publish on a topic no rule matches costs when the caller looks the rules
    up before evaluating them), and
    ``rules.micro.matched.<n>.us_per_matching_rule`` = (matched - unmatched) /
    matching rules, for every ``n`` with matching rules.
    """
    from rtcs.rules import load_rules  # the CEL package loads only when measuring

    out: dict[str, float] = {}
    for n in counts:
        rule_set = load_rules(rules_toml(n), f"bench-rules-{n}.toml")
        for kind, topic in TOPICS.items():
            us = time_evaluate(rule_set, topic, runs, budget_s)
            out[f"rules.micro.{kind}.{n}.us_per_publish"] = us
        lookup = time_evaluate(rule_set, UNMATCHED_TOPIC, runs, budget_s, lookup_only=True)
        out[f"rules.micro.unmatched.{n}.lookup_us"] = lookup
        if matching_count(n):
            extra = (
                out[f"rules.micro.matched.{n}.us_per_publish"]
                - out[f"rules.micro.unmatched.{n}.us_per_publish"]
            )
            out[f"rules.micro.matched.{n}.us_per_matching_rule"] = extra / matching_count(n)
    return out


# --- the table --------------------------------------------------------------------------

#: The ratio the unmatched topic's publish rate must keep against no rules at all.
UNMATCHED_TARGET = 0.95

#: (metric key template, label, unit) of the table's rows, in order; ``{n}`` is
#: the rule count. ``*rt_ratio`` values are medians over repeats of the ratio to
#: the server without a rules file measured in the same repeat.
ROWS = (
    ("rules.e2e.unmatched.{n}.rt_per_s", "unmatched topic: publish→ack", "/s"),
    ("rules.e2e.unmatched.{n}.rt_ratio", "unmatched topic: / no rules (same run)", "x"),
    ("rules.e2e.unmatched.{n}.rtt_p50_ms", "unmatched topic: publish→ack p50", "ms"),
    ("rules.e2e.unmatched.{n}.server_us", "unmatched topic: server CPU per publish", "µs"),
    ("rules.e2e.unmatched.{n}.server_cpu_pct", "unmatched topic: server CPU", "%"),
    ("rules.e2e.unmatched.{n}.loadgen_cpu_pct", "unmatched topic: loadgen CPU", "%"),
    ("rules.e2e.unmatched.{n}.delivered_ratio", "unmatched topic: delivered / published", ""),
    ("rules.e2e.matched.{n}.rt_per_s", "matched topic: publish→ack", "/s"),
    ("rules.e2e.matched.{n}.rt_ratio", "matched topic: / no rules (same run)", "x"),
    ("rules.e2e.matched.{n}.rtt_p50_ms", "matched topic: publish→ack p50", "ms"),
    ("rules.e2e.matched.{n}.server_us", "matched topic: server CPU per publish", "µs"),
    ("rules.e2e.matched.{n}.server_cpu_pct", "matched topic: server CPU", "%"),
    ("rules.e2e.matched.{n}.loadgen_cpu_pct", "matched topic: loadgen CPU", "%"),
    ("rules.e2e.matched.{n}.delivered_ratio", "matched topic: delivered / published", ""),
    ("rules.e2e.matched.{n}.routed_ratio", "matched topic: delivered as transformed", ""),
    (
        "rules.e2e.matched.{n}.server_us_per_matching_rule",
        "matched topic: server CPU per matching rule",
        "µs",
    ),
    ("rules.shared.unmatched.{n}.rt_per_s", "all at once, unmatched topic: publish→ack", "/s"),
    ("rules.shared.unmatched.{n}.rt_ratio", "all at once, unmatched topic: / no rules", "x"),
    ("rules.shared.unmatched.{n}.server_us", "all at once, unmatched topic: server CPU", "µs"),
    ("rules.shared.matched.{n}.rt_per_s", "all at once, matched topic: publish→ack", "/s"),
    ("rules.shared.matched.{n}.rt_ratio", "all at once, matched topic: / no rules", "x"),
    ("rules.shared.matched.{n}.server_us", "all at once, matched topic: server CPU", "µs"),
    (
        "rules.shared.matched.{n}.server_us_per_matching_rule",
        "all at once, matched topic: server CPU per matching rule",
        "µs",
    ),
    ("rules.micro.unmatched.{n}.lookup_us", "rules_for(), in-process: unmatched topic", "µs"),
    ("rules.micro.unmatched.{n}.us_per_publish", "evaluate(), in-process: unmatched topic", "µs"),
    ("rules.micro.matched.{n}.us_per_publish", "evaluate(), in-process: matched topic", "µs"),
    (
        "rules.micro.matched.{n}.us_per_matching_rule",
        "evaluate(), in-process: per matching rule",
        "µs",
    ),
)
#: The row judged against :data:`UNMATCHED_TARGET`: the servers measured at the
#: same moment, on the same CPU. Measured one after the other (``rules.e2e``),
#: servers that all run without rules differ by up to ±10 % on a shared
#: machine (docs/performance.md, "Routing rules"): too coarse for 5 %.
_TARGETED = frozenset({"rules.shared.unmatched.{n}.rt_ratio"})


@dataclass(frozen=True, slots=True)
class RulesRow:
    """One metric of the rules workload: its median per rule count.

    ``values`` maps a rule count to the median over repeats; ``target`` and
    ``verdict`` are set on the rows of :data:`_TARGETED` only (✓ when every
    rule count with rules keeps :data:`UNMATCHED_TARGET`).
    """

    key: str  # the metric key template, with "{n}"
    label: str
    unit: str
    values: dict[int, float]
    target: str = ""
    verdict: str = ""


def rule_counts(summary: Mapping[str, object]) -> list[int]:
    """The rule counts measured: the ``<n>`` of ``rules.<e2e|micro>.<kind>.<n>.*`` keys."""
    counts = set()
    for key in summary:
        parts = key.split(".")
        if len(parts) == 5 and parts[0] == "rules" and parts[3].isdigit():
            counts.add(int(parts[3]))
    return sorted(counts)


def rules_rows(summary: Mapping[str, Mapping[str, float]], target: str = "rtcs") -> list[RulesRow]:
    """The rows of ``summary`` (``{metric: {target: median}}``) with any value for ``target``."""
    counts = rule_counts(summary)
    rows = []
    for template, label, unit in ROWS:
        values = {
            n: summary[key][target]
            for n in counts
            if target in summary.get(key := template.format(n=n), {})
        }
        if not values:
            continue
        bound = verdict = ""
        if template in _TARGETED:
            bound = f">= {UNMATCHED_TARGET:g}x"
            judged = [v for n, v in values.items() if n]
            if judged:
                verdict = "✓" if min(judged) >= UNMATCHED_TARGET else "✗"
        rows.append(RulesRow(template, label, unit, values, bound, verdict))
    return rows


def render_rules_table(rows: Sequence[RulesRow]) -> str:
    """The "Routing rules" table (Markdown): one column per rule count."""
    counts = sorted({n for row in rows for n in row.values})
    heads = ["no rules" if n == 0 else f"{n:,} ({matching_count(n):,} matching)" for n in counts]
    cols = ["metric", "unit", *heads, "target", "ok"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        cells = [row.label, row.unit, *(fmt(row.values.get(n)) for n in counts)]
        cells += [row.target, row.verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
