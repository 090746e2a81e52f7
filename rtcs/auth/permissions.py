"""Role-based access control as data.

A policy maps role names to what a role may do. The role ``"*"`` applies to
every authenticated user; a user's other roles come from the token's
``roles`` claim. A request is allowed when at least one of the user's roles
allows it and that same role does not deny it: one role's deny list never
takes away what another role grants.

Configuration (already parsed from TOML into a mapping)::

    [rbac.roles."*"]
    subscribe = [">"]            # patterns the role may subscribe to
    subscribe_deny = []          # patterns it may not (any overlap denies)
    publish = [">"]              # topics it may publish to
    publish_deny = ["system.>"]
    broadcast = ["room"]         # any of "room", "global", "filter"
    direct = true                # may send direct messages
    rooms = true                 # may join and leave rooms
    presence = true              # may query presence

Every key of a role is optional; a missing key grants nothing.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import json
import re
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from rtcs.errors import BadTopic, ConfigError
from rtcs.protocol.frames import BROADCAST_KINDS, BroadcastKind
from rtcs.protocol.topics import covers, matches, overlaps, validate_pattern

__all__ = [
    "BROADCAST_SCOPES",
    "DEFAULT_RBAC",
    "EVERYONE",
    "BroadcastScope",
    "Policy",
    "Role",
]

EVERYONE: Final = "*"
BroadcastScope = BroadcastKind
BROADCAST_SCOPES: Final[frozenset[str]] = frozenset(BROADCAST_KINDS)

DEFAULT_RBAC: dict[str, Any] = {
    "roles": {
        "*": {
            "subscribe": [">"],
            "subscribe_deny": [],
            "publish": [">"],
            "publish_deny": ["system.>"],
            "broadcast": ["room"],
            "direct": True,
            "rooms": True,
            "presence": True,
        },
        "admin": {
            "subscribe": [">"],
            "publish": [">"],
            "broadcast": ["room", "global", "filter"],
            "direct": True,
            "rooms": True,
            "presence": True,
        },
    }
}

_CACHE_SIZE = 4096  # distinct (roles, topic) decisions remembered per policy


@dataclass(frozen=True, slots=True)
class Role:
    """What one role may do. Patterns are valid topic patterns (``rtcs.protocol.topics``)."""

    name: str
    subscribe: tuple[str, ...] = ()
    subscribe_deny: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    publish_deny: tuple[str, ...] = ()
    broadcast: frozenset[str] = frozenset()
    direct: bool = False
    rooms: bool = False
    presence: bool = False

    def may_subscribe(self, pattern: str) -> bool:
        """True if an allow pattern covers ``pattern`` and no deny pattern overlaps it."""
        return any(covers(a, pattern) for a in self.subscribe) and not any(
            overlaps(d, pattern) for d in self.subscribe_deny
        )

    def may_publish(self, topic: str) -> bool:
        """True if an allow pattern matches ``topic`` and no deny pattern does."""
        return any(matches(a, topic) for a in self.publish) and not any(
            matches(d, topic) for d in self.publish_deny
        )


_PATTERN_KEYS = ("subscribe", "subscribe_deny", "publish", "publish_deny")
_BOOL_KEYS = ("direct", "rooms", "presence")
_ROLE_KEYS = frozenset((*_PATTERN_KEYS, *_BOOL_KEYS, "broadcast"))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(name: str) -> str:
    """``name`` as it is written in a dotted TOML key (``"*"`` needs quotes)."""
    return name if _BARE_KEY.fullmatch(name) else json.dumps(name)


def _strings(value: Any, key: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigError(key, value, "must be a list of strings")
    return list(value)


def _role_from_mapping(name: str, m: Any, key: str) -> Role:
    if not isinstance(m, Mapping):
        raise ConfigError(key, m, "must be a table")
    for k in m:
        if k not in _ROLE_KEYS:
            raise ConfigError(f"{key}.{k}", m[k], f"unknown key (known: {sorted(_ROLE_KEYS)})")
    fields: dict[str, Any] = {}
    for k in _PATTERN_KEYS:
        if k in m:
            patterns = _strings(m[k], f"{key}.{k}")
            for p in patterns:
                try:
                    validate_pattern(p)
                except BadTopic:
                    raise ConfigError(f"{key}.{k}", p, "invalid topic pattern") from None
            fields[k] = tuple(patterns)
    if "broadcast" in m:
        scopes = _strings(m["broadcast"], f"{key}.broadcast")
        for s in scopes:
            if s not in BROADCAST_SCOPES:
                raise ConfigError(
                    f"{key}.broadcast", s, f"unknown scope (known: {sorted(BROADCAST_SCOPES)})"
                )
        fields["broadcast"] = frozenset(scopes)
    for k in _BOOL_KEYS:
        if k in m:
            if not isinstance(m[k], bool):
                raise ConfigError(f"{key}.{k}", m[k], "must be true or false")
            fields[k] = m[k]
    return Role(name=name, **fields)


class Policy:
    """RBAC decisions over a fixed set of roles.

    ``roles`` arguments are the token's roles (any iterable of strings; a
    tuple avoids a copy); ``"*"`` is always added and unknown role names are
    ignored. Topic decisions are cached per policy in a bounded LRU.
    """

    __slots__ = ("_publish", "_roles", "_subscribe")

    def __init__(self, roles: Iterable[Role]) -> None:
        self._roles: Mapping[str, Role] = types.MappingProxyType({r.name: r for r in roles})
        self._subscribe: Callable[[tuple[str, ...], str], bool] = functools.lru_cache(
            maxsize=_CACHE_SIZE
        )(self._decide_subscribe)
        self._publish: Callable[[tuple[str, ...], str], bool] = functools.lru_cache(
            maxsize=_CACHE_SIZE
        )(self._decide_publish)

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], *, key_prefix: str = "rbac") -> Policy:
        """Build a policy from the ``rbac`` configuration table.

        ``m`` is ``{"roles": {name: {...}}}``; ``key_prefix`` is the dotted
        key of ``m`` itself, used in error messages. A missing ``roles`` table
        means no role grants anything.

        Raises:
            ConfigError: an unknown key, a wrong type, an invalid topic
                pattern or an unknown broadcast scope; ``key`` is dotted, e.g.
                ``rbac.roles.admin.publish``.
        """
        if not isinstance(m, Mapping):
            raise ConfigError(key_prefix, m, "must be a table")
        for k in m:
            if k != "roles":
                raise ConfigError(f"{key_prefix}.{k}", m[k], "unknown key (known: ['roles'])")
        raw_roles = m.get("roles", {})
        if not isinstance(raw_roles, Mapping):
            raise ConfigError(f"{key_prefix}.roles", raw_roles, "must be a table")
        roles = []
        for name, spec in raw_roles.items():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{key_prefix}.roles", name, "role names must be non-empty")
            key = f"{key_prefix}.roles.{_toml_key(name)}"
            roles.append(_role_from_mapping(name, spec, key))
        return cls(roles)

    @classmethod
    def default(cls) -> Policy:
        """The policy built from ``DEFAULT_RBAC``."""
        return cls.from_mapping(DEFAULT_RBAC)

    @property
    def roles(self) -> Mapping[str, Role]:
        """The roles by name (read-only)."""
        return self._roles

    def _applicable(self, roles: Iterable[str]) -> list[Role]:
        known = self._roles
        found = [known[name] for name in roles if name in known and name != EVERYONE]
        everyone = known.get(EVERYONE)
        if everyone is not None:
            found.append(everyone)
        return found

    def _decide_subscribe(self, roles: tuple[str, ...], pattern: str) -> bool:
        return any(r.may_subscribe(pattern) for r in self._applicable(roles))

    def _decide_publish(self, roles: tuple[str, ...], topic: str) -> bool:
        return any(r.may_publish(topic) for r in self._applicable(roles))

    def can_subscribe(self, roles: Iterable[str], pattern: str) -> bool:
        """May a user with ``roles`` subscribe to the valid topic or pattern ``pattern``?"""
        return self._subscribe(roles if isinstance(roles, tuple) else tuple(roles), pattern)

    def can_publish(self, roles: Iterable[str], topic: str) -> bool:
        """May a user with ``roles`` publish to the valid concrete ``topic``?"""
        return self._publish(roles if isinstance(roles, tuple) else tuple(roles), topic)

    def can_broadcast(self, roles: Iterable[str], scope: BroadcastScope) -> bool:
        """May a user with ``roles`` broadcast with ``scope`` (``room``, ``global``, ``filter``)?"""
        return any(scope in r.broadcast for r in self._applicable(roles))

    def can_direct(self, roles: Iterable[str]) -> bool:
        """May a user with ``roles`` send direct messages?"""
        return any(r.direct for r in self._applicable(roles))

    def can_join(self, roles: Iterable[str]) -> bool:
        """May a user with ``roles`` join and leave rooms?"""
        return any(r.rooms for r in self._applicable(roles))

    def can_presence(self, roles: Iterable[str]) -> bool:
        """May a user with ``roles`` query presence?"""
        return any(r.presence for r in self._applicable(roles))
