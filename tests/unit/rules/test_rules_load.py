"""rtcs.rules.load: every mistake in a rules file names the file, the rule and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from rtcs.errors import ConfigError, RuleError
from rtcs.rules import Action, Target, load_rules, parse_rules
from rtcs.rules.cel import MAX_WHEN_LENGTH
from rtcs.rules.load import MAX_RULES, parse_path

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "conf" / "rules.example.toml"

FULL = """
[[rule]]
name = "alerts-to-moderators"
priority = 10
topic = "system.*.alert"
when = 'data.level in ["high", "critical"] && !("bot" in sender.roles)'
target = { roles = ["moderator"], users = ["u1"], exclude_sender = true }
transform = { set = { "data.routed" = true }, remove = ["data.secret"], rename = { "data.msg" = "data.text" } }
action = "reroute"
reroute = "alerts.moderators"
stop = true
"""  # noqa: E501


def test_a_full_rule_parses() -> None:
    (rule,) = parse_rules(FULL, "rules.toml")
    assert rule.name == "alerts-to-moderators"
    assert rule.priority == 10
    assert rule.topic == "system.*.alert"
    assert rule.when is not None and rule.when.source.startswith("data.level")
    assert rule.target == Target(frozenset({"moderator"}), frozenset({"u1"}), True)
    assert rule.transform.set == ((("routed",), True),)
    assert rule.transform.remove == (("secret",),)
    assert rule.transform.rename == ((("msg",), ("text",)),)
    assert rule.action is Action.REROUTE
    assert rule.reroute == "alerts.moderators"
    assert rule.stop is True
    assert rule.index == 0


def test_defaults_and_bytes() -> None:
    (rule,) = parse_rules(b'[[rule]]\nname = "a"\ntopic = ">"\n')
    assert (rule.priority, rule.when, rule.action, rule.reroute, rule.stop) == (
        0,
        None,
        Action.DELIVER,
        None,
        False,
    )
    assert rule.target == Target() and not rule.transform


def test_an_empty_file_has_no_rules() -> None:
    assert len(load_rules("")) == 0
    assert len(load_rules("# nothing yet\n")) == 0


def test_the_shipped_example_loads() -> None:
    rules = load_rules(EXAMPLE.read_bytes(), str(EXAMPLE))
    assert len(rules) >= 3
    assert {r.action for r in rules.rules} == set(Action)


def rule(body: str, name: str = "r") -> str:
    return f'[[rule]]\nname = "{name}"\ntopic = "a.b"\n{body}\n'


# (the file text, the rule shown, the field shown, a piece of the reason)
MISTAKES = [
    ("[[rule]\n", None, "", "not valid TOML"),
    ('rules = 1\n[[rule]]\nname = "a"\ntopic = "a"\n', None, "rules", "unknown key"),
    ('[rule]\nname = "a"\n', None, "rule", "expected [[rule]] tables"),
    ('[[rule]]\ntopic = "a"\n', "#1", "name", "required"),
    ('[[rule]]\nname = "has space"\ntopic = "a"\n', "#1", "name", "characters of"),
    ('[[rule]]\nname = 3\ntopic = "a"\n', "#1", "name", "characters of"),
    (rule("") + rule("", "x") + rule(""), "'r'", "name", "duplicate name (rule #1"),
    (rule("prio = 1"), "'r'", "prio", "unknown key"),
    (rule('priority = "high"'), "'r'", "priority", "expected an integer"),
    (rule("priority = true"), "'r'", "priority", "expected an integer"),
    (rule("priority = 10_000_000"), "'r'", "priority", "between"),
    ('[[rule]]\nname = "r"\n', "'r'", "topic", "required"),
    ('[[rule]]\nname = "r"\ntopic = "a.>.b"\n', "'r'", "topic", "not a topic or a pattern"),
    ('[[rule]]\nname = "r"\ntopic = 5\n', "'r'", "topic", "not a topic or a pattern"),
    (rule("when = 1"), "'r'", "when", "expected a string"),
    (rule("when = 'data.x >'"), "'r'", "when", "not a valid CEL expression"),
    (rule("when = ''"), "'r'", "when", "must not be empty"),
    (rule(f"when = '{'x' * (MAX_WHEN_LENGTH + 1)}'"), "'r'", "when", "longer than"),
    (rule("target = 1"), "'r'", "target", "expected a table"),
    (rule("target = { role = ['a'] }"), "'r'", "target.role", "unknown key"),
    (rule("target = { roles = 'a' }"), "'r'", "target.roles", "list of non-empty strings"),
    (rule("target = { users = [''] }"), "'r'", "target.users", "list of non-empty strings"),
    (rule("target = { exclude_sender = 1 }"), "'r'", "target.exclude_sender", "boolean"),
    (rule("transform = { add = {} }"), "'r'", "transform.add", "unknown key"),
    (rule("transform = { set = { x = 1 } }"), "'r'", "transform.set", "must start with 'data.'"),
    (rule("transform = { set = { data.x = 1 } }"), "'r'", "transform.set", "quote dotted keys"),
    (rule("transform = { set = { 'data' = 1 } }"), "'r'", "transform.set", "'data.'"),
    (rule("transform = { set = { 'data.a b' = 1 } }"), "'r'", "transform.set", "letters, digits"),
    (rule("transform = { set = { 'data.a..b' = 1 } }"), "'r'", "transform.set", "letters"),
    (rule("transform = { set = { 'data.a' = 1979-05-27 } }"), "'r'", "transform.set", "JSON"),
    (rule("transform = { set = { 'data.a' = nan } }"), "'r'", "transform.set", "JSON"),
    (rule("transform = { set = [] }"), "'r'", "transform.set", "expected a table"),
    (rule("transform = { remove = 'data.a' }"), "'r'", "transform.remove", "expected a list"),
    (rule("transform = { remove = [1] }"), "'r'", "transform.remove", "path string"),
    (rule("transform = { rename = { 'data.a' = 'x' } }"), "'r'", "transform.rename", "'data.'"),
    (
        rule("transform = { rename = { 'data.a' = 'data.a.b' } }"),
        "'r'",
        "transform.rename",
        "inside",
    ),
    (rule("transform = { rename = { 'data.a' = 'data.a' } }"), "'r'", "transform.rename", "inside"),
    (rule("action = 'forward'"), "'r'", "action", "expected one of"),
    (rule("action = 'reroute'"), "'r'", "reroute", "required"),
    (rule("action = 'reroute'\nreroute = 'a.*'"), "'r'", "reroute", "not a concrete topic"),
    (rule("reroute = 'a.c'"), "'r'", "reroute", "only allowed with"),
    (rule("action = 'drop'\nreroute = 'a.c'"), "'r'", "reroute", "only allowed with"),
    (rule("stop = 'yes'"), "'r'", "stop", "expected a boolean"),
]


@pytest.mark.parametrize(("text", "shown", "field", "reason"), MISTAKES)
def test_each_mistake_names_file_rule_and_field(
    text: str, shown: str | None, field: str, reason: str
) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(text, "/etc/rtcs/rules.toml")
    error = caught.value
    assert (error.file, error.rule, error.field) == ("/etc/rtcs/rules.toml", shown, field)
    assert reason in error.reason
    message = str(error)
    assert message.startswith("rules file /etc/rtcs/rules.toml")
    if shown is not None:
        assert f"rule {shown}" in message
    assert field in message and reason in message
    # A RuleError is a ConfigError, so the CLI prints it and exits 2 (no traceback).
    assert isinstance(error, ConfigError) and error.key == "rules.file"


def test_the_rule_counted_from_one_when_its_name_is_missing() -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(rule("") + '[[rule]]\ntopic = "a"\n', "f")
    assert caught.value.rule == "#2"


def test_not_utf8() -> None:
    with pytest.raises(RuleError, match="not UTF-8"):
        parse_rules(b"\xff\xfe", "f")


def test_too_many_rules() -> None:
    text = "".join(rule("", f"r{i}") for i in range(MAX_RULES + 1))
    with pytest.raises(RuleError, match=f"more than {MAX_RULES} rules"):
        parse_rules(text, "f")


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("data.a", ("a",)),
        ("data.a.b-c.d_e", ("a", "b-c", "d_e")),
        ("data." + "k." * 7 + "k", ("k",) * 8),
    ],
)
def test_parse_path(text: str, keys: tuple[str, ...]) -> None:
    assert parse_path(text) == keys


@pytest.mark.parametrize(
    "text", ["data", "data.", "x.a", "data.a.", "data." + "k." * 8 + "k", "data.*", 3, "Data.a"]
)
def test_parse_path_refuses(text: object) -> None:
    with pytest.raises(ValueError, match="path"):
        parse_path(text)
