"""Routing rules: transform paths, priority order and the parser, on generated input."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from rtcs.errors import RuleError
from rtcs.rules import RuleSet, parse_rules
from rtcs.rules.engine import apply_transform
from rtcs.rules.model import Action, Path, Rule, Transform

KEYS = ["a", "b", "c"]
MISSING = object()

keys = st.sampled_from(KEYS)
paths = st.lists(keys, min_size=1, max_size=3).map(tuple)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text("xy", max_size=2))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=2), st.dictionaries(keys, inner, max_size=3)),
    max_leaves=8,
)
objects = st.dictionaries(keys, json_values, max_size=3)


def get(data: Any, path: Path) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return MISSING
        data = data[key]
    return data


def leaves(data: Any, prefix: Path = ()) -> dict[Path, Any]:
    """Every path to a non-object value or an empty object."""
    if not isinstance(data, dict) or not data:
        return {prefix: data}
    out: dict[Path, Any] = {}
    for key, value in data.items():
        out.update(leaves(value, (*prefix, key)))
    return out


def related(a: Path, b: Path) -> bool:
    """One path is a prefix of the other."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def creatable(data: Any, path: Path) -> bool:
    """Each object on the way to ``path`` exists as an object or is absent."""
    node = data
    for key in path[:-1]:
        if not isinstance(node, dict):
            return False
        if key not in node:
            return True
        node = node[key]
    return isinstance(node, dict)


def unchanged_elsewhere(before: Any, after: Any, *touched: Path) -> None:
    for path, value in leaves(before).items():
        if not any(related(path, t) for t in touched):
            assert get(after, path) == value, path


@given(objects, paths, json_values)
def test_set(data: dict[str, Any], path: Path, value: Any) -> None:
    after = copy.deepcopy(data)
    apply_transform(after, Transform(set=((path, value),)))
    if creatable(data, path):
        assert get(after, path) == value
        unchanged_elsewhere(data, after, path)
    else:
        assert after == data


@given(objects, paths)
def test_remove(data: dict[str, Any], path: Path) -> None:
    after = copy.deepcopy(data)
    apply_transform(after, Transform(remove=(path,)))
    assert get(after, path) is MISSING
    unchanged_elsewhere(data, after, path)


@given(objects, paths, paths)
def test_rename(data: dict[str, Any], source: Path, dest: Path) -> None:
    if dest[: len(source)] == source:
        return  # refused by the parser: the destination inside the source
    after = copy.deepcopy(data)
    apply_transform(after, Transform(rename=((source, dest),)))
    json.dumps(after)  # never a cycle
    old = get(data, source)
    if old is MISSING or not creatable(data, dest):
        assert after == data
        return
    assert get(after, dest) == old
    if source[: len(dest)] != dest:
        assert get(after, source) is MISSING
    unchanged_elsewhere(data, after, source, dest)


@st.composite
def rule_lists(draw: st.DrawFn) -> list[Rule]:
    n = draw(st.integers(0, 8))
    return [
        Rule(
            name=f"r{i}",
            topic=draw(st.sampled_from([">", "t", "t.*", "u"])),
            priority=draw(st.integers(-2, 2)),
            transform=Transform(set=((("last",), f"r{i}"),)),
            stop=draw(st.booleans()),
            action=draw(st.sampled_from([Action.DELIVER, Action.DELIVER, Action.DROP])),
            index=i,
        )
        for i in range(n)
    ]


@given(rule_lists(), st.sampled_from(["t", "t.x", "u", "v"]), objects)
def test_priority_order_stop_and_drop(rules: list[Rule], topic: str, data: dict[str, Any]) -> None:
    before = copy.deepcopy(data)
    out = RuleSet(rules).evaluate(topic, data, "u", ())
    assert data == before  # never mutated
    applicable = sorted(
        (r for r in rules if r.topic in (">", topic) or (r.topic == "t.*" and topic == "t.x")),
        key=lambda r: (-r.priority, r.index),
    )
    expected: list[str] = []
    for rule in applicable:
        expected.append(rule.name)
        if rule.stop or rule.action is Action.DROP:
            break
    assert list(out.matched) == expected
    # Transforms applied in the same order: the last one wins.
    assert out.data.get("last") == (expected[-1] if expected else before.get("last"))
    if not expected:
        assert out.data is data
    dropped = bool(expected) and applicable[len(expected) - 1].action is Action.DROP
    assert out.topic == (None if dropped else topic)
    assert out.dropped == ((expected[-1],) if dropped else ())


@settings(max_examples=300)
@given(st.text(max_size=300) | st.binary(max_size=300))
def test_any_text_is_a_rule_list_or_a_rule_error(text: str | bytes) -> None:
    try:
        parse_rules(text, "f")
    except RuleError as exc:
        assert str(exc).startswith("rules file f")


field_values = st.one_of(
    scalars,
    st.lists(st.text("abx.*>", max_size=4), max_size=3),
    st.text("abx.*>", max_size=8),
    st.dictionaries(st.sampled_from(["roles", "users", "set", "remove", "rename", "x"]), scalars),
)


@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                ["name", "topic", "priority", "when", "target", "transform", "action", "reroute"]
            ),
            field_values,
        ),
        max_size=3,
    )
)
def test_any_rule_table_is_a_rule_or_a_rule_error(tables: list[dict[str, Any]]) -> None:
    # Build the TOML through JSON-ish literals: every value drawn is a TOML value.
    lines = []
    for table in tables:
        lines.append("[[rule]]")
        for key, value in table.items():
            if value is None:
                continue
            lines.append(f"{key} = {toml(value)}")
    try:
        parsed = parse_rules("\n".join(lines), "f")
    except RuleError as exc:
        assert exc.file == "f" and str(exc).startswith("rules file f")
    else:
        assert len(parsed) == len(tables)


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml(v) for v in value if v is not None) + "]"
    return (
        "{"
        + ", ".join(f"{json.dumps(k)} = {toml(v)}" for k, v in value.items() if v is not None)
        + "}"
    )
