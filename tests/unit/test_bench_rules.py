"""The ``rules`` benchmark's generated rules files, its table and its command line.

The files must be valid for rtcs (``rtcs.rules.load_rules``), with exactly 10 %
of the rules matching the matched topic and none the unmatched one, and the
matching rules must apply (every condition true) without dropping, rerouting
or hiding the publish from the benchmark's subscribers. No timing here.
"""

from __future__ import annotations

import pytest

from bench.cli import parse_args
from bench.rules import (
    BENCH_ROLES,
    MATCHED_TOPIC,
    PUBLISH_DATA,
    RULE_COUNTS,
    UNMATCHED_TOPIC,
    matching_count,
    micro,
    render_rules_table,
    rules_rows,
    rules_toml,
)
from bench.workloads import DEFAULT_WORKLOADS
from rtcs.protocol.topics import matches
from rtcs.rules import Action, Target, load_rules


def publish_data() -> dict[str, object]:
    return {"s": 7, "t": 1_700_000_000_000_000_000, **PUBLISH_DATA}


@pytest.mark.parametrize("n", RULE_COUNTS)
def test_the_generated_file_loads_with_ten_percent_matching(n: int) -> None:
    rule_set = load_rules(rules_toml(n), f"rules-{n}.toml")
    assert len(rule_set) == n
    assert len(rule_set.rules_for(MATCHED_TOPIC)) == matching_count(n) == n // 10
    assert rule_set.rules_for(UNMATCHED_TOPIC) == ()


@pytest.mark.parametrize("n", [n for n in RULE_COUNTS if n])
def test_every_matching_rule_applies_and_the_publish_is_still_delivered(n: int) -> None:
    rule_set = load_rules(rules_toml(n), f"rules-{n}.toml")
    data = publish_data()
    out = rule_set.evaluate(MATCHED_TOPIC, data, "bench-publisher", BENCH_ROLES)
    # Every matching rule's condition held: all of them applied, none failed.
    assert len(out.matched) == matching_count(n)
    assert out.errors == out.dropped == out.rerouted == ()
    assert out.topic == MATCHED_TOPIC
    # A subscriber (another benchmark user) still receives it, with t and s intact.
    assert out.target.admits("bench-subscriber", BENCH_ROLES, is_sender=False)
    assert out.data["s"] == 7 and out.data["t"] == data["t"]
    assert data == publish_data()  # the publisher's data is never changed


def test_the_matching_rules_mix_conditions_transforms_and_targets() -> None:
    rule_set = load_rules(rules_toml(100), "rules-100.toml")
    matching = rule_set.rules_for(MATCHED_TOPIC)
    assert {r.action for r in matching} == {Action.DELIVER}
    assert sum(r.when is not None for r in matching) >= 4
    assert sum(bool(r.transform) for r in matching) >= 3
    assert sum(r.target != Target() for r in matching) >= 2
    assert {r.topic for r in matching} == {MATCHED_TOPIC, "*.hot"}
    out = rule_set.evaluate(MATCHED_TOPIC, publish_data(), "bench-publisher", BENCH_ROLES)
    # The subscribers see that the rules ran: the loadgen counts "routed" deliveries.
    assert out.data["routed"] is True


def test_the_other_rules_name_other_topics_with_wildcards_and_every_action() -> None:
    rule_set = load_rules(rules_toml(1000), "rules-1000.toml")
    others = [r for r in rule_set.rules if r.name.startswith("other-")]
    assert len(others) == 900
    assert not any(r.topic.split(".")[0] in {"bench", "*", ">"} for r in others)
    assert not any(matches(r.topic, t) for r in others for t in (MATCHED_TOPIC, UNMATCHED_TOPIC))
    assert any("*" in r.topic for r in others) and any(r.topic.endswith(">") for r in others)
    assert {r.action for r in others} == set(Action)
    assert len({r.priority for r in rule_set.rules}) > 10


@pytest.mark.parametrize("n", [-10, 5, 15])
def test_rule_counts_are_multiples_of_ten(n: int) -> None:
    with pytest.raises(ValueError, match="multiple of 10"):
        rules_toml(n)


def test_micro_reports_every_count_topic_and_the_cost_per_matching_rule() -> None:
    out = micro((0, 10), runs=1, budget_s=0.0001)
    assert set(out) == {
        "rules.micro.unmatched.0.us_per_publish",
        "rules.micro.matched.0.us_per_publish",
        "rules.micro.unmatched.10.us_per_publish",
        "rules.micro.matched.10.us_per_publish",
        "rules.micro.matched.10.us_per_matching_rule",
        "rules.micro.unmatched.0.lookup_us",
        "rules.micro.unmatched.10.lookup_us",
    }
    assert all(v > 0 for k, v in out.items() if not k.endswith("us_per_matching_rule"))


def test_the_table_has_a_column_per_rule_count_and_judges_the_unmatched_ratio() -> None:
    summary = {
        "rules.e2e.unmatched.0.rt_per_s": {"rtcs": 10_000.0},
        "rules.e2e.unmatched.10.rt_per_s": {"rtcs": 9_900.0},
        "rules.e2e.unmatched.0.rt_ratio": {"rtcs": 1.0},
        "rules.e2e.unmatched.10.rt_ratio": {"rtcs": 0.9},
        "rules.shared.unmatched.0.rt_ratio": {"rtcs": 1.0},
        "rules.shared.unmatched.10.rt_ratio": {"rtcs": 0.99},
        "rules.shared.unmatched.1000.rt_ratio": {"rtcs": 0.96},
        "rules.micro.matched.10.us_per_matching_rule": {"rtcs": 30.0},
        "reqrep.10.rt_per_s": {"rtcs": 1.0},
    }
    rows = {r.key: r for r in rules_rows(summary)}
    ratio = rows["rules.shared.unmatched.{n}.rt_ratio"]
    assert ratio.values == {0: 1.0, 10: 0.99, 1000: 0.96}
    assert (ratio.target, ratio.verdict) == (">= 0.95x", "✓")
    # Measured one server after the other: shown, not judged (too noisy for 5 %).
    assert rows["rules.e2e.unmatched.{n}.rt_ratio"].verdict == ""
    table = render_rules_table(list(rows.values()))
    assert "| metric | unit | no rules | 10 (1 matching) | 1,000 (100 matching) |" in table
    assert "| evaluate(), in-process: per matching rule | µs | - | 30.0 | - |" in table
    summary["rules.shared.unmatched.100.rt_ratio"] = {"rtcs": 0.9}
    assert {r.key: r for r in rules_rows(summary)}[ratio.key].verdict == "✗"


def test_rules_runs_on_rtcs_alone_and_is_not_in_the_default_set() -> None:
    assert parse_args(["rules"]).target_names == ["rtcs"]
    assert parse_args(["rules", "reqrep"]).target_names == ["rtcs", "raw", "node"]
    assert parse_args([]).workloads == list(DEFAULT_WORKLOADS)
    assert "rules" not in DEFAULT_WORKLOADS
    with pytest.raises(SystemExit):
        parse_args(["rules", "--targets", "raw"])
