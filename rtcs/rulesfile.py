"""The routing-rules file on disk: read it, parse it, and reload it into a live rule set.

The rules engine (:mod:`rtcs.rules`) is pure and takes text; this module is
the one place that opens the file named by ``rules.file``. Configuration
validation, ``python -m rtcs check-config``, the node's start and its SIGHUP
reload all read the file through :func:`read_rules`, so they accept and
refuse exactly the same files.

The CEL package is imported only when a rules file is configured: the
:mod:`rtcs.rules` imports are inside the functions.

The rules of the last file content read are kept with that content: start-up
reads the file twice (the settings' validation, then the node) and
``check-config`` too, and compiling 1,000 conditions takes about 0.15 s; a
SIGHUP with an unchanged file compiles nothing either.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtcs.errors import ConfigError

if TYPE_CHECKING:
    from rtcs.rules import Rule, RuleSet

__all__ = ["KEY", "Reload", "load_rule_set", "read_rules"]

# The last file content parsed, and its rules.
_last: tuple[bytes, tuple[Rule, ...]] | None = None

#: The setting that names the file, in every error about reading it.
KEY = "rules.file"


@dataclass(frozen=True, slots=True)
class Reload:
    """What a reload of the rules file did (SIGHUP, ``POST /admin/rules/reload``).

    ``ok``: the new rules are in use. ``version`` is the version in use
    afterwards (the old one when the reload failed; "" with no rules file),
    ``previous`` the one before, ``rules`` how many rules are in use, and
    ``error`` why the file was refused ("" when ``ok``). ``configured`` is
    False when no rules file is configured (``rules.file``).
    """

    ok: bool
    version: str = ""
    previous: str = ""
    rules: int = 0
    error: str = ""
    configured: bool = True


def read_rules(path: str) -> tuple[tuple[Rule, ...], str]:
    """The rules of the file at ``path`` and its version (:func:`rtcs.rules.version_of`).

    Raises:
        ConfigError: the file cannot be read (naming ``rules.file`` and the path).
        RuleError: the file is not a valid rules file (naming the file, the
            rule and the field).
    """
    from rtcs.rules import parse_rules, version_of

    global _last
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(KEY, path, exc.strerror or "cannot be read") from None
    last = _last
    if last is not None and last[0] == text:
        return last[1], version_of(text)
    rules = parse_rules(text, path)
    _last = (text, rules)
    return rules, version_of(text)


def load_rule_set(path: str, cache_size: int) -> RuleSet:
    """A :class:`~rtcs.rules.RuleSet` of the file at ``path`` (errors as :func:`read_rules`).

    ``cache_size`` bounds its route cache (``rules.cache_size``).
    """
    from rtcs.rules import RuleSet

    rules, version = read_rules(path)
    return RuleSet(rules, cache_size=cache_size, version=version)
