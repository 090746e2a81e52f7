"""rtcs.rules.engine: evaluation semantics of RuleSet.evaluate and the route cache."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from rtcs.rules import CacheStats, Outcome, RuleSet, Target, load_rules
from rtcs.rules.cel import Condition
from rtcs.rules.engine import apply_transform
from rtcs.rules.model import Action, Rule, Transform

EXAMPLE = Path(__file__).resolve().parents[3] / "conf" / "rules.example.toml"


def rules(text: str) -> RuleSet:
    return load_rules(text, "test.toml")


def run(
    rs: RuleSet, topic: str, data: Any, user: str = "u", roles: tuple[str, ...] = ()
) -> Outcome:
    return rs.evaluate(topic, data, user, roles)


def test_no_rule_for_the_topic_returns_the_same_object() -> None:
    rs = rules('[[rule]]\nname = "a"\ntopic = "x.y"\ntransform = { set = { "data.k" = 1 } }\n')
    data = {"v": 1}
    out = run(rs, "other", data)
    assert out == Outcome("other", data)
    assert out.data is data  # zero copies


def test_a_match_without_transform_copies_nothing() -> None:
    rs = rules('[[rule]]\nname = "a"\ntopic = "x.*"\ntarget = { roles = ["r"] }\n')
    data = {"v": 1}
    out = run(rs, "x.y", data)
    assert out.data is data and out.matched == ("a",)


def test_transforms_never_mutate_the_callers_data() -> None:
    rs = rules(
        '[[rule]]\nname = "a"\ntopic = ">"\n'
        'transform = { set = { "data.n.k" = [1] }, remove = ["data.x.y"],'
        ' rename = { "data.m" = "data.z" } }\n'
    )
    data = {"x": {"y": 1, "w": 2}, "m": [3]}
    before = copy.deepcopy(data)
    out = run(rs, "t", data)
    assert data == before
    assert out.data == {"x": {"w": 2}, "n": {"k": [1]}, "z": [3]}
    out.data["n"]["k"].append(2)  # the rule's own value is not shared
    assert run(rs, "t", {}).data == {"n": {"k": [1]}}


def test_priority_order_and_ties_in_file_order() -> None:
    rs = rules(
        '[[rule]]\nname = "low"\ntopic = ">"\npriority = -1\n'
        '[[rule]]\nname = "first"\ntopic = ">"\n'
        '[[rule]]\nname = "high"\ntopic = ">"\npriority = 5\n'
        '[[rule]]\nname = "second"\ntopic = ">"\n'
    )
    assert run(rs, "t", {}).matched == ("high", "first", "second", "low")


def test_later_rules_see_earlier_transforms() -> None:
    rs = rules(
        '[[rule]]\nname = "mark"\ntopic = ">"\npriority = 2\n'
        'transform = { set = { "data.stage" = 1 } }\n'
        '[[rule]]\nname = "needs-mark"\ntopic = ">"\npriority = 1\nwhen = "data.stage == 1"\n'
        'transform = { set = { "data.stage" = 2 } }\n'
        '[[rule]]\nname = "late"\ntopic = ">"\nwhen = "data.stage == 1"\n'
    )
    out = run(rs, "t", {})
    assert out.matched == ("mark", "needs-mark")
    assert out.data == {"stage": 2}


def test_transform_order_within_a_rule_is_set_remove_rename() -> None:
    transform = Transform(
        set=((("a",), 1), (("b",), 2)), remove=(("a",),), rename=((("b",), ("c", "d")),)
    )
    data: dict[str, Any] = {}
    apply_transform(data, transform)
    assert data == {"c": {"d": 2}}


def test_transforms_skip_paths_through_non_objects() -> None:
    transform = Transform(
        set=((("s", "x"), 1),), remove=(("s", "y"),), rename=((("s",), ("n", "z")),)
    )
    data: dict[str, Any] = {"s": "text", "n": 5}
    apply_transform(data, transform)
    assert data == {"s": "text", "n": 5}  # nothing could apply
    for scalar in ("text", 3, None, [1]):
        apply_transform(scalar, transform)  # data that is not an object: nothing happens


def test_remove_and_rename_of_missing_fields_do_nothing() -> None:
    data: dict[str, Any] = {"a": 1}
    apply_transform(data, Transform(remove=(("x", "y"),), rename=((("q",), ("r",)),)))
    assert data == {"a": 1}


def test_target_filters_intersect() -> None:
    rs = rules(
        '[[rule]]\nname = "a"\ntopic = ">"\n'
        'target = { roles = ["mod", "admin"], users = ["u1", "u2"] }\n'
        '[[rule]]\nname = "b"\ntopic = ">"\ntarget = { roles = ["admin", "ops"] }\n'
        '[[rule]]\nname = "c"\ntopic = ">"\n'
        'target = { users = ["u2", "u3"], exclude_sender = true }\n'
        '[[rule]]\nname = "d"\ntopic = ">"\ntarget = { exclude_sender = false }\n'
    )
    target = run(rs, "t", {}).target
    assert target == Target(frozenset({"admin"}), frozenset({"u2"}), True)
    assert target.admits("u2", ["admin"], is_sender=False)
    assert not target.admits("u2", ["admin"], is_sender=True)
    assert not target.admits("u1", ["admin"], is_sender=False)
    assert not target.admits("u2", ["mod", "ops"], is_sender=False)


def test_no_target_admits_everybody() -> None:
    target = run(rules('[[rule]]\nname = "a"\ntopic = ">"\n'), "t", {}).target
    assert target == Target()
    assert target.admits("anyone", (), is_sender=True)


def test_disjoint_filters_admit_nobody_but_do_not_drop() -> None:
    rs = rules(
        '[[rule]]\nname = "a"\ntopic = ">"\ntarget = { users = ["u1"] }\n'
        '[[rule]]\nname = "b"\ntopic = ">"\ntarget = { users = ["u2"] }\n'
    )
    out = run(rs, "t", {})
    assert out.topic == "t" and out.target.users == frozenset()
    assert not out.target.admits("u1", (), is_sender=False)
    assert out.target.nobody and out.target.restricts


@pytest.mark.parametrize(
    ("target", "nobody", "restricts"),
    [
        (Target(), False, False),
        (Target(exclude_sender=True), False, True),
        (Target(roles=frozenset({"r"})), False, True),
        (Target(roles=frozenset()), True, True),
        (Target(users=frozenset({"u"}), roles=frozenset()), True, True),
        (Target(users=frozenset()), True, True),
    ],
)
def test_nobody_and_restricts(target: Target, nobody: bool, restricts: bool) -> None:
    assert (target.nobody, target.restricts) == (nobody, restricts)


def test_drop_delivers_to_nobody_and_ends_the_evaluation() -> None:
    rs = rules(
        '[[rule]]\nname = "drop"\ntopic = "a.>"\npriority = 1\naction = "drop"\n'
        'transform = { set = { "data.x" = 1 } }\n'
        '[[rule]]\nname = "after"\ntopic = ">"\n'
    )
    out = run(rs, "a.b", {})
    assert out.topic is None
    assert out.matched == ("drop",) and out.dropped == ("drop",) and out.rerouted == ()
    assert run(rs, "b", {}).matched == ("after",)


def test_reroute_runs_the_new_topics_rules_once() -> None:
    rs = rules(
        '[[rule]]\nname = "to-b"\ntopic = "a"\npriority = 9\naction = "reroute"\nreroute = "b"\n'
        'transform = { set = { "data.hops" = 1 } }\ntarget = { roles = ["r1", "r2"] }\n'
        '[[rule]]\nname = "skipped-on-a"\ntopic = "a"\n'
        '[[rule]]\nname = "back-to-a"\ntopic = "b"\npriority = 5\n'
        'action = "reroute"\nreroute = "a"\n'
        'transform = { set = { "data.seen_b" = true } }\n'
        '[[rule]]\nname = "on-b"\ntopic = "b"\nwhen = "data.hops == 1"\n'
        'target = { roles = ["r2"] }\n'
    )
    out = run(rs, "a", {})
    assert out.topic == "b"
    assert out.data == {"hops": 1, "seen_b": True}
    assert out.matched == ("to-b", "back-to-a", "on-b")
    assert out.rerouted == ("to-b",)  # never rerouted twice
    assert out.target.roles == frozenset({"r2"})  # the filters of both passes


def test_reroute_then_drop_on_the_new_topic() -> None:
    rs = rules(
        '[[rule]]\nname = "move"\ntopic = "a"\naction = "reroute"\nreroute = "b"\n'
        '[[rule]]\nname = "kill"\ntopic = "b"\naction = "drop"\n'
    )
    out = run(rs, "a", {})
    assert (out.topic, out.rerouted, out.dropped) == (None, ("move",), ("kill",))


def test_stop_skips_lower_priority_rules() -> None:
    rs = rules(
        '[[rule]]\nname = "a"\ntopic = ">"\npriority = 3\n'
        '[[rule]]\nname = "stopper"\ntopic = ">"\npriority = 2\nstop = true\n'
        '[[rule]]\nname = "c"\ntopic = ">"\npriority = 1\n'
    )
    assert run(rs, "t", {}).matched == ("a", "stopper")


def test_a_stop_rule_whose_condition_fails_does_not_stop() -> None:
    rs = rules(
        '[[rule]]\nname = "stopper"\ntopic = ">"\nstop = true\nwhen = "data.x == 1"\n'
        '[[rule]]\nname = "c"\ntopic = ">"\n'
    )
    assert run(rs, "t", {"x": 2}).matched == ("c",)
    assert run(rs, "t", {"x": 1}).matched == ("stopper",)


def test_conditions_see_topic_data_and_sender() -> None:
    rs = rules(
        '[[rule]]\nname = "a"\ntopic = "x.*"\n'
        'when = \'topic == "x.y" && data.n > 2 && sender.user == "u1" && "mod" in sender.roles\'\n'
    )
    assert run(rs, "x.y", {"n": 3}, "u1", ("mod",)).matched == ("a",)
    assert run(rs, "x.z", {"n": 3}, "u1", ("mod",)).matched == ()
    assert run(rs, "x.y", {"n": 3}, "u2", ("mod",)).matched == ()
    assert run(rs, "x.y", {"n": 3}, "u1", ()).matched == ()


@pytest.mark.parametrize("data", [{}, {"level": None}, {"other": 1}, "text", 7, None, [1]])
def test_missing_fields_are_false_not_errors(data: Any) -> None:
    rs = rules('[[rule]]\nname = "a"\ntopic = ">"\nwhen = \'data.level == "high"\'\n')
    out = run(rs, "t", data)
    assert out.matched == ()
    assert out.topic == "t"


def test_other_evaluation_errors_are_false_and_reported() -> None:
    rs = rules(
        '[[rule]]\nname = "typed"\ntopic = ">"\nwhen = "data.n + 1 > 2"\n'
        '[[rule]]\nname = "unknown-fn"\ntopic = ">"\nwhen = "nosuch(data)"\n'
        '[[rule]]\nname = "string"\ntopic = ">"\nwhen = "\'yes\'"\n'
    )
    out = run(rs, "t", {"n": "text"})
    assert out.matched == ()
    assert out.errors == ("typed", "unknown-fn")  # a non-boolean result is plain false


def test_cache_hits_misses_and_invalidation() -> None:
    rs = rules('[[rule]]\nname = "a"\ntopic = "x.*"\n')
    assert rs.cache_stats() == CacheStats(0, 0, 0)
    run(rs, "x.y", {})
    run(rs, "x.y", {})
    run(rs, "nobody.cares", {})
    run(rs, "nobody.cares", {})
    stats = rs.cache_stats()
    assert (stats.hits, stats.misses, stats.size) == (2, 2, 2)
    rs.replace([Rule("b", "nobody.>")])
    assert rs.cache_stats().size == 0
    assert run(rs, "nobody.cares", {}).matched == ("b",)
    assert run(rs, "x.y", {}).matched == ()
    stats = rs.cache_stats()
    assert (stats.hits, stats.misses, stats.size) == (2, 4, 2)


def test_a_rule_set_without_rules_counts_no_lookups() -> None:
    rs = RuleSet()
    assert rs.rules_for("a.b") == ()
    assert rs.cache_stats() == CacheStats(0, 0, 0)


def test_run_is_evaluate_with_the_rules_looked_up() -> None:
    rs = rules('[[rule]]\nname = "a"\ntopic = "x.*"\ntransform = { set = { "data.k" = 1 } }\n')
    found = rs.rules_for("x.y")
    assert rs.run(found, "x.y", {}, "u", ()) == run(rs, "x.y", {})


def test_the_version_names_the_file_and_changes_with_replace() -> None:
    text = '[[rule]]\nname = "a"\ntopic = "x.*"\n'
    rs = rules(text)
    assert rs.version == rules(text).version != rules(text + "\n").version
    assert len(rs.version) == 12
    rs.replace([Rule("b", "y")], "v2")
    assert rs.version == "v2"


def test_a_reroute_looks_up_the_new_topic_in_the_cache() -> None:
    rs = rules('[[rule]]\nname = "m"\ntopic = "a"\naction = "reroute"\nreroute = "b"\n')
    run(rs, "a", {})
    run(rs, "a", {})
    stats = rs.cache_stats()
    assert (stats.hits, stats.misses) == (2, 2)


def test_the_cache_is_bounded() -> None:
    rs = RuleSet([Rule("a", "x.>")], cache_size=2)
    for topic in ("x.1", "x.2", "x.3", "x.1"):
        rs.evaluate(topic, {}, "u", ())
    stats = rs.cache_stats()
    assert stats.size == 2 and stats.misses == 4  # x.1 was evicted first
    with pytest.raises(ValueError):
        RuleSet(cache_size=0)


def test_rules_built_in_code() -> None:
    rs = RuleSet(
        [
            Rule("d", "a.*", when=Condition.compile("data.x == 1"), action=Action.DROP, index=1),
            Rule("k", "a.*", priority=1, transform=Transform(set=((("x",), 1),))),
        ]
    )
    assert [r.name for r in rs.rules] == ["k", "d"]
    out = rs.evaluate("a.b", {}, "u", ())
    assert out.topic is None and out.matched == ("k", "d")


def test_conditions_after_a_reroute_see_the_new_topic_and_data() -> None:
    rs = rules(
        '[[rule]]\nname = "check-a"\ntopic = "a"\npriority = 2\nwhen = \'topic == "a"\'\n'
        '[[rule]]\nname = "move"\ntopic = "a"\naction = "reroute"\nreroute = "b"\n'
        'transform = { set = { "data.moved" = true } }\n'
        '[[rule]]\nname = "check-b"\ntopic = "b"\nwhen = \'topic == "b" && data.moved\'\n'
    )
    assert run(rs, "a", {}).matched == ("check-a", "move", "check-b")


def test_the_worked_examples_of_docs_rules_md() -> None:
    rs = load_rules(EXAMPLE.read_bytes(), str(EXAMPLE))
    alert = {"level": "critical", "msg": "disk full", "secret": "x"}
    out = run(rs, "system.eu.alert", alert, "u", ("ops",))
    assert out.topic == "alerts.moderators"
    assert out.data == {"level": "critical", "routed": True, "text": "disk full"}
    assert out.target == Target(frozenset({"moderator"}), None, True)
    assert run(rs, "system.eu.alert", alert, "u", ("bot",)) == Outcome("system.eu.alert", alert)
    assert run(rs, "app.jobs.done", {"level": "debug"}).topic is None
    out = run(rs, "chat.staff", {"body": "hi"})
    assert out.data == {"meta": {"schema": 2}, "text": "hi"}
    assert out.target.roles == frozenset({"staff", "admin"})
