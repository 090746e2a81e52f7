"""Evaluating routing rules for one publish, and the route cache.

The rules of a publish's topic run in priority order (higher first, ties in
file order); for each rule whose ``when`` holds:

1. its transform applies to the data as left by the rules before it (the
   caller's data is never mutated: it is deep-copied once, when the first
   transform applies; with no transform, nothing is copied);
2. its target narrows the filter (role and user sets intersect,
   ``exclude_sender`` adds up);
3. ``drop`` ends the evaluation: the message goes to nobody;
   ``reroute`` ends the evaluation on this topic and runs the rules of the new
   topic once, on the message as transformed so far and with the filter
   collected so far; on that second pass a ``reroute`` action is ignored (a
   rerouted message is never rerouted again) while its rule's other effects
   apply;
4. ``stop`` skips the remaining (lower-priority) rules of this pass.

The route cache maps a topic to the rules whose pattern matches it, so the
patterns are matched once per topic; a topic no rule mentions costs one dict
lookup. It is bounded (:data:`DEFAULT_CACHE_SIZE`; the oldest topic goes
first) and emptied when the rules change (:meth:`RuleSet.replace`).

Pure: no I/O, no clock. Counting is the caller's: the outcome names the
matched, dropped and rerouted rules, and :meth:`RuleSet.cache_stats` returns
plain counters.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from rtcs.protocol.topics import matches
from rtcs.rules.cel import Variables, Verdict
from rtcs.rules.model import EVERYONE, Action, Path, Rule, Target, Transform

__all__ = ["DEFAULT_CACHE_SIZE", "CacheStats", "Outcome", "RuleSet", "apply_transform"]

#: Topics the route cache remembers at most.
DEFAULT_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the rules decided for one publish.

    ``topic`` is the topic to deliver on (the new one after a reroute), or
    ``None`` when a rule dropped the message. ``data`` is the data to deliver:
    the caller's own object when no transform applied. ``target`` is the
    recipient filter (:meth:`Target.admits`). ``matched`` names every rule
    whose pattern and condition matched, in evaluation order; ``dropped`` and
    ``rerouted`` name the rule that dropped or rerouted (at most one each);
    ``errors`` the rules whose condition failed with an evaluation error other
    than a missing field (they did not match).
    """

    topic: str | None
    data: Any
    target: Target = EVERYONE
    matched: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    rerouted: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Route-cache counters since the rule set was built; ``size`` is topics cached now."""

    hits: int
    misses: int
    size: int


def _order(rules: Iterable[Rule]) -> tuple[Rule, ...]:
    return tuple(sorted(rules, key=lambda r: (-r.priority, r.index)))


class RuleSet:
    """The rules of one file, ordered, with a route cache.

    Not thread-safe (the cache is mutated by :meth:`evaluate`): one owner, such
    as the topic route handler, uses it.
    """

    __slots__ = ("_cache", "_cache_size", "_hits", "_misses", "_rules", "version")

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        version: str = "",
    ) -> None:
        """``version`` names this set of rules (the loader's digest of the file).

        Raises:
            ValueError: ``cache_size`` is below 1.
        """
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._rules = _order(rules)
        self._cache: dict[str, tuple[Rule, ...]] = {}
        self._cache_size = cache_size
        self._hits = 0
        self._misses = 0
        self.version = version

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The rules in evaluation order."""
        return self._rules

    def __len__(self) -> int:
        return len(self._rules)

    def replace(self, rules: Iterable[Rule], version: str = "") -> None:
        """Use ``rules`` (named ``version``) from now on; empties the route cache.

        The cache counters go on, so they stay monotonic for metrics.
        """
        self._rules = _order(rules)
        self._cache.clear()
        self.version = version

    def cache_stats(self) -> CacheStats:
        """Hits and misses of the route cache, and how many topics it holds."""
        return CacheStats(self._hits, self._misses, len(self._cache))

    def rules_for(self, topic: str) -> tuple[Rule, ...]:
        """The rules whose pattern matches the concrete ``topic``, in evaluation order.

        With no rules at all this is ``()`` at once, and is not counted.
        """
        if not self._rules:
            return ()
        found = self._cache.get(topic)
        if found is not None:
            self._hits += 1
            return found
        self._misses += 1
        found = tuple(rule for rule in self._rules if matches(rule.topic, topic))
        if len(self._cache) >= self._cache_size:
            del self._cache[next(iter(self._cache))]  # the oldest entry
        self._cache[topic] = found
        return found

    def evaluate(
        self, topic: str, data: Any, sender_user: str, sender_roles: Collection[str]
    ) -> Outcome:
        """Run the rules of ``topic`` for one publish of ``data`` by ``sender_user``.

        ``topic`` must be a valid concrete topic. ``data`` is never mutated.
        Never raises for any JSON ``data``.
        """
        rules = self.rules_for(topic)
        if not rules:
            return Outcome(topic, data)
        return self.run(rules, topic, data, sender_user, sender_roles)

    def run(
        self,
        rules: tuple[Rule, ...],
        topic: str,
        data: Any,
        sender_user: str,
        sender_roles: Collection[str],
    ) -> Outcome:
        """:meth:`evaluate` with the topic's rules already looked up (:meth:`rules_for`).

        A caller on a hot path looks the rules up first and calls this only
        when there are some, so a topic no rule mentions costs one lookup.
        """
        state = _Pass(topic, data, sender_user, sender_roles)
        rerouted_to = state.run(rules, may_reroute=True)
        if rerouted_to is not None:
            state.topic = rerouted_to
            state.stale.add("topic")
            state.run(self.rules_for(rerouted_to), may_reroute=False)
        return Outcome(
            None if state.dropped else state.topic,
            state.data,
            state.target,
            tuple(state.matched),
            tuple(state.dropped),
            tuple(state.rerouted),
            tuple(state.errors),
        )


class _Pass:
    """The mutable state of one evaluation."""

    __slots__ = (
        "copied",
        "data",
        "dropped",
        "errors",
        "matched",
        "rerouted",
        "sender",
        "stale",
        "target",
        "topic",
        "variables",
    )

    def __init__(self, topic: str, data: Any, user: str, roles: Collection[str]) -> None:
        self.topic = topic
        self.data = data
        self.copied = False
        self.sender = {"user": user, "roles": list(roles)}
        self.target = EVERYONE
        self.matched: list[str] = []
        self.dropped: list[str] = []
        self.rerouted: list[str] = []
        self.errors: list[str] = []
        # Built at the first condition; "stale" names the variables changed since.
        self.variables: Variables | None = None
        self.stale: set[str] = set()

    def check(self, rule: Rule) -> bool:
        """Whether ``rule``'s condition holds now (True without one)."""
        if rule.when is None:
            return True
        if self.variables is None:
            self.variables = Variables(self.topic, self.data, self.sender)
            self.stale.clear()
        elif self.stale:
            for name in self.stale:
                self.variables.set(name, self.topic if name == "topic" else self.data)
            self.stale.clear()
        verdict = rule.when.check(self.variables)
        if verdict is Verdict.ERROR:
            self.errors.append(rule.name)
        return verdict is Verdict.TRUE

    def run(self, rules: tuple[Rule, ...], *, may_reroute: bool) -> str | None:
        """Run one topic's rules; return the topic to reroute to, if any."""
        for rule in rules:
            if not self.check(rule):
                continue
            self.matched.append(rule.name)
            if rule.transform:
                if not self.copied:
                    self.data = copy.deepcopy(self.data)
                    self.copied = True
                apply_transform(self.data, rule.transform)
                self.stale.add("data")
            if rule.target is not EVERYONE:
                self.target = self.target.narrow(rule.target)
            if rule.action is Action.DROP:
                self.dropped.append(rule.name)
                return None
            if rule.action is Action.REROUTE and may_reroute and rule.reroute is not None:
                self.rerouted.append(rule.name)
                return rule.reroute
            if rule.stop:
                break
        return None


# --- transforms ----------------------------------------------------------------------


def _parent(data: Any, path: Path, *, create: bool) -> dict[str, Any] | None:
    """The object holding ``path[-1]``, creating missing objects when ``create``."""
    if not isinstance(data, dict):
        return None
    node: dict[str, Any] = data
    for key in path[:-1]:
        child = node.get(key)
        if child is None and key not in node and create:
            child = node[key] = {}
        if not isinstance(child, dict):
            return None
        node = child
    return node


def apply_transform(data: Any, transform: Transform) -> None:
    """Apply ``transform`` to ``data`` IN PLACE (the caller passes its own copy).

    ``set`` creates missing objects on its path; a path through a value that
    is not an object (or data that is not an object) is skipped. ``remove``
    and ``rename`` of a missing field do nothing; ``rename`` overwrites its
    destination and creates missing objects on the way. Values set are
    deep-copied, so two messages never share them.
    """
    for path, value in transform.set:
        parent = _parent(data, path, create=True)
        if parent is not None:
            parent[path[-1]] = copy.deepcopy(value)
    for path in transform.remove:
        parent = _parent(data, path, create=False)
        if parent is not None:
            parent.pop(path[-1], None)
    for source, dest in transform.rename:
        parent = _parent(data, source, create=False)
        if parent is None or source[-1] not in parent:
            continue
        value = parent[source[-1]]
        target = _parent(data, dest, create=True)
        if target is None:
            continue  # nowhere to put it: leave the source where it is
        del parent[source[-1]]
        target[dest[-1]] = value
