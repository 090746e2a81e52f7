"""Parsing a routing-rules file (TOML) into a :class:`~rtcs.rules.engine.RuleSet`.

Every mistake raises :class:`~rtcs.errors.RuleError` naming the file, the
rule (its name, or ``#N`` counted from 1 when the name itself is missing or
bad) and the field. Unknown keys are refused, so a typo never passes
silently. docs/rules.md is the reference for the format.

Pure: the caller reads the file and passes its text (or bytes) in.
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from rtcs.errors import BadTopic, RuleError
from rtcs.protocol.topics import MAX_SEGMENTS, validate_pattern, validate_topic
from rtcs.rules.cel import Condition
from rtcs.rules.engine import DEFAULT_CACHE_SIZE, RuleSet
from rtcs.rules.model import EVERYONE, Action, Path, Rule, Target, Transform

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_PRIORITY",
    "MAX_RULES",
    "load_rules",
    "parse_path",
    "parse_rules",
    "version_of",
]

#: Rules one file may hold.
MAX_RULES = 1000
#: A rule name is 1 to this many characters of ``[A-Za-z0-9_.:-]`` (it is a
#: metric label value, chosen by the operator).
MAX_NAME_LENGTH = 64
#: ``priority`` is an integer between ``-MAX_PRIORITY`` and ``MAX_PRIORITY``.
MAX_PRIORITY = 1_000_000
#: Entries of one ``roles`` or ``users`` list, and edits of one ``transform``.
MAX_LIST = 1000

_NAME_RE = re.compile(rf"[A-Za-z0-9_.:-]{{1,{MAX_NAME_LENGTH}}}")
# A transform path: "data" then 1 to 8 keys of [A-Za-z0-9_-].
_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

_RULE_KEYS = frozenset(
    {"name", "priority", "topic", "when", "target", "transform", "action", "reroute", "stop"}
)
_TARGET_KEYS = frozenset({"roles", "users", "exclude_sender"})
_TRANSFORM_KEYS = frozenset({"set", "remove", "rename"})

# Raises RuleError for this rule: fail(field, reason).
_Fail = Callable[[str, str], NoReturn]


def load_rules(
    text: str | bytes, file: str = "<rules>", *, cache_size: int = DEFAULT_CACHE_SIZE
) -> RuleSet:
    """Parse a rules file into a :class:`RuleSet` whose version is :func:`version_of` the text.

    ``file`` is only used in error messages.

    Raises:
        RuleError: the text is not UTF-8 TOML, or any rule is invalid.
    """
    return RuleSet(parse_rules(text, file), cache_size=cache_size, version=version_of(text))


def version_of(text: str | bytes) -> str:
    """A rules file's version: the first 12 hex digits of its SHA-256.

    The same file gives the same version on every instance, so operators can
    check that all of them run the same rules.
    """
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()[:12]


def parse_path(text: object) -> Path:
    """``"data.a.b"`` → ``("a", "b")``.

    Raises:
        ValueError: not ``data.`` followed by 1 to 8 keys of ``[A-Za-z0-9_-]``.
    """
    if not isinstance(text, str):
        raise ValueError("expected a path string like 'data.a.b'")
    head, _, rest = text.partition(".")
    keys = tuple(rest.split(".")) if rest else ()
    if head != "data" or not keys:
        raise ValueError(f"path {text!r} must start with 'data.' (quote dotted keys in TOML)")
    if len(keys) > MAX_SEGMENTS or not all(_KEY_RE.fullmatch(k) for k in keys):
        raise ValueError(
            f"path {text!r}: 1 to {MAX_SEGMENTS} keys of letters, digits, '_' or '-' after 'data.'"
        )
    return keys


def parse_rules(text: str | bytes, file: str = "<rules>") -> tuple[Rule, ...]:
    """Parse and validate every rule, in file order.

    Raises:
        RuleError: see :func:`load_rules`.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RuleError(file, None, "", f"not UTF-8: {exc.reason}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(file, None, "", f"not valid TOML: {exc}") from None
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise RuleError(file, None, unknown[0], "unknown key (the file holds [[rule]] tables)")
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RuleError(file, None, "rule", "expected [[rule]] tables")
    if len(tables) > MAX_RULES:
        raise RuleError(file, None, "rule", f"more than {MAX_RULES} rules")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, table in enumerate(tables):
        rule = _parse_rule(file, index, table)
        if rule.name in seen:
            raise RuleError(
                file,
                repr(rule.name),
                "name",
                f"duplicate name (rule #{seen[rule.name] + 1} has it too)",
            )
        seen[rule.name] = index
        rules.append(rule)
    return tuple(rules)


def _parse_rule(file: str, index: int, table: object) -> Rule:
    label = f"#{index + 1}"

    def fail(field: str, reason: str) -> NoReturn:
        raise RuleError(file, label, field, reason)

    if not isinstance(table, dict):
        fail("", "expected a table")
    name = table.get("name")
    if name is None:
        fail("name", "required")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        fail("name", f"expected 1 to {MAX_NAME_LENGTH} characters of [A-Za-z0-9_.:-]")
    label = repr(name)
    unknown = sorted(set(table) - _RULE_KEYS)
    if unknown:
        fail(unknown[0], f"unknown key (expected one of {sorted(_RULE_KEYS)})")

    priority = table.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        fail("priority", "expected an integer")
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        fail("priority", f"must be between {-MAX_PRIORITY} and {MAX_PRIORITY}")

    topic = table.get("topic")
    if topic is None:
        fail("topic", "required")
    try:
        validate_pattern(topic)
    except BadTopic:
        fail("topic", f"{topic!r} is not a topic or a pattern (* and > wildcards)")

    when = None
    if "when" in table:
        source = table["when"]
        if not isinstance(source, str):
            fail("when", "expected a string holding a CEL expression")
        try:
            when = Condition.compile(source)
        except ValueError as exc:
            fail("when", str(exc))

    target = _parse_target(table.get("target", {}), fail)
    transform = _parse_transform(table.get("transform", {}), fail)

    action_text = table.get("action", Action.DELIVER.value)
    try:
        action = Action(action_text)
    except ValueError:
        fail("action", f"expected one of {[a.value for a in Action]}, got {action_text!r}")

    reroute = table.get("reroute")
    if action is Action.REROUTE:
        if reroute is None:
            fail("reroute", 'required with action = "reroute"')
        try:
            validate_topic(reroute)
        except BadTopic:
            fail("reroute", f"{reroute!r} is not a concrete topic (no wildcards)")
    elif reroute is not None:
        fail("reroute", 'only allowed with action = "reroute"')

    stop = table.get("stop", False)
    if not isinstance(stop, bool):
        fail("stop", "expected a boolean")

    return Rule(
        name=name,
        topic=topic,
        priority=priority,
        when=when,
        target=target,
        transform=transform,
        action=action,
        reroute=reroute,
        stop=stop,
        index=index,
    )


def _strings(value: object, field: str, fail: _Fail) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        fail(field, "expected a list of non-empty strings")
    if len(value) > MAX_LIST:
        fail(field, f"more than {MAX_LIST} entries")
    return frozenset(value)


def _parse_target(value: object, fail: _Fail) -> Target:
    if not isinstance(value, dict):
        fail("target", "expected a table")
    unknown = sorted(set(value) - _TARGET_KEYS)
    if unknown:
        fail(f"target.{unknown[0]}", f"unknown key (expected one of {sorted(_TARGET_KEYS)})")
    if not value:
        return EVERYONE
    roles = _strings(value["roles"], "target.roles", fail) if "roles" in value else None
    users = _strings(value["users"], "target.users", fail) if "users" in value else None
    exclude = value.get("exclude_sender", False)
    if not isinstance(exclude, bool):
        fail("target.exclude_sender", "expected a boolean")
    return Target(roles, users, exclude)


def _path(text: object, field: str, fail: _Fail) -> Path:
    try:
        return parse_path(text)
    except ValueError as exc:
        fail(field, str(exc))


def _json_value(value: object) -> bool:
    """Whether a TOML value is also a JSON value (no dates, no NaN or infinity)."""
    if isinstance(value, str | bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_json_value(v) for v in value)
    if isinstance(value, Mapping):
        return all(_json_value(v) for v in value.values())
    return False


def _parse_transform(value: object, fail: _Fail) -> Transform:
    if not isinstance(value, dict):
        fail("transform", "expected a table")
    unknown = sorted(set(value) - _TRANSFORM_KEYS)
    if unknown:
        fail(f"transform.{unknown[0]}", f"unknown key (expected one of {sorted(_TRANSFORM_KEYS)})")
    sets: list[tuple[Path, Any]] = []
    raw_set = value.get("set", {})
    if not isinstance(raw_set, dict):
        fail("transform.set", 'expected a table of "data.path" = value')
    for key, item in raw_set.items():
        path = _path(key, "transform.set", fail)
        if not _json_value(item):
            fail("transform.set", f"{key!r}: a value must be JSON (no dates, NaN or infinity)")
        sets.append((path, item))
    raw_remove = value.get("remove", [])
    if not isinstance(raw_remove, list):
        fail("transform.remove", 'expected a list of "data.path" strings')
    removes = tuple(_path(item, "transform.remove", fail) for item in raw_remove)
    renames: list[tuple[Path, Path]] = []
    raw_rename = value.get("rename", {})
    if not isinstance(raw_rename, dict):
        fail("transform.rename", 'expected a table of "data.from" = "data.to"')
    for key, item in raw_rename.items():
        source = _path(key, "transform.rename", fail)
        dest = _path(item, "transform.rename", fail)
        if dest[: len(source)] == source:
            # Moving a field into itself would make the data contain itself.
            fail("transform.rename", f"{key!r} -> {item!r}: the destination is inside the source")
        renames.append((source, dest))
    if len(sets) + len(removes) + len(renames) > MAX_LIST:
        fail("transform", f"more than {MAX_LIST} edits")
    return Transform(tuple(sets), removes, tuple(renames))
