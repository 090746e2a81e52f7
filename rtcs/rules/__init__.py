"""Routing rules: match publishes by topic and condition, transform, filter, drop, reroute.

PURE: no I/O, no clock. The pieces, one concern each:

- :mod:`rtcs.rules.model`: the rules as frozen dataclasses (Rule, Target,
  Transform, Action);
- :mod:`rtcs.rules.cel`: ``when`` conditions, compiled once (CEL);
- :mod:`rtcs.rules.load`: a rules file (TOML text) to a RuleSet, with every
  mistake named by file, rule and field (:class:`~rtcs.errors.RuleError`);
- :mod:`rtcs.rules.engine`: RuleSet.evaluate (one publish → an Outcome) and
  the route cache.

docs/rules.md is the guide. The topic route handler
(:mod:`rtcs.actors.routing.topic`) applies them to every publish; reading the
file and reloading it is :mod:`rtcs.rulesfile`'s.
"""

from rtcs.rules.engine import CacheStats, Outcome, RuleSet
from rtcs.rules.load import load_rules, parse_rules, version_of
from rtcs.rules.model import Action, Rule, Target, Transform

__all__ = [
    "Action",
    "CacheStats",
    "Outcome",
    "Rule",
    "RuleSet",
    "Target",
    "Transform",
    "load_rules",
    "parse_rules",
    "version_of",
]
