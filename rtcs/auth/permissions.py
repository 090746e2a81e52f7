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
    join = ["*"]                 # rooms it may join (missing: every room)
    join_deny = []               # rooms it may not join
    presence = true              # may query presence (of users; of rooms: see below)
    presence_rooms = []          # rooms whose presence it may query without joining

Every key of a role is optional; a missing key grants nothing, except
``join``: a role without it may join every room (given ``rooms``), as before
room patterns existed.

``{user}`` as a whole segment of a topic pattern (allow and deny lists alike)
stands for the user's id (the token's ``sub``): ``subscribe = ["user.{user}.>"]``
lets each user subscribe to their own inbox only. A user id that is not a valid
topic segment makes such a pattern match nothing, in an allow list and in a
deny list alike.

Room patterns (``join``, ``join_deny``, ``presence_rooms``) are a room name,
or a prefix followed by ``*`` (``"team-*"``; ``"*"`` is every room). A room is
joinable when a role has ``rooms``, one of its ``join`` patterns matches and
none of its ``join_deny`` patterns does. ``{user}`` in a ``join`` or
``join_deny`` pattern stands for the user's id as in topic patterns: it must be
a whole segment of the name, where ``.``, ``:`` and ``@`` separate segments
(``"dm:{user}:*"``, ``"{user}@home"``; ``"dm-{user}*"`` is an error, since it
would let ``al`` join ``dm-alice``), and a user id that is not a valid topic
segment makes the pattern match nothing, in allow and deny lists alike.

A room's presence may be queried by its members, and by a role whose
``presence_rooms`` holds the room's name or a prefix followed by ``*``
(``"team-*"``; ``"*"`` is every room); both also need ``presence``.

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

from rtcs.errors import BadRequest, BadTopic, ConfigError
from rtcs.protocol.frames import BROADCAST_KINDS, BroadcastKind, validate_room
from rtcs.protocol.topics import covers, matches, overlaps, validate_pattern, validate_topic

__all__ = [
    "BROADCAST_SCOPES",
    "DEFAULT_RBAC",
    "EVERYONE",
    "USER",
    "BroadcastScope",
    "Policy",
    "Role",
]

EVERYONE: Final = "*"
USER: Final = "{user}"  # a topic pattern segment that stands for the user's id
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
            "join": ["*"],
            "join_deny": [],
            "presence": True,
        },
        "admin": {
            "subscribe": [">"],
            "publish": [">"],
            "broadcast": ["room", "global", "filter"],
            "direct": True,
            "rooms": True,
            "presence": True,
            "presence_rooms": ["*"],
        },
    }
}

_CACHE_SIZE = 4096  # distinct (roles, topic[, user]) decisions remembered per policy


def _expand(pattern: str, user: str | None) -> str | None:
    """``pattern`` with its ``{user}`` segments replaced by ``user``.

    None (matches nothing) when ``pattern`` has a ``{user}`` segment and
    ``user`` is None or not a valid topic segment.
    """
    if USER not in pattern:
        return pattern
    segment = _user_segment(user)
    if segment is None:
        return None
    return ".".join(segment if seg == USER else seg for seg in pattern.split("."))


def _user_segment(user: str | None) -> str | None:
    """``user`` if it can stand for ``{user}``: one valid topic segment."""
    if user is None or "." in user:
        return None
    try:
        validate_topic(user)
    except BadTopic:
        return None
    return user


# Characters that separate the segments of a room name (for ``{user}``).
_ROOM_SEPARATORS = re.compile(r"([.:@])")


def _room_segments(pattern: str) -> list[str]:
    """``pattern`` split into segments and the separators between them."""
    return _ROOM_SEPARATORS.split(pattern)


def _expand_room(pattern: str, user: str | None) -> str | None:
    """Room ``pattern`` with its ``{user}`` segments replaced by ``user``.

    None (matches nothing) when ``pattern`` has a ``{user}`` segment and
    ``user`` is None or not a valid topic segment (so it holds no separator
    and cannot reach into another user's rooms).
    """
    if USER not in pattern:
        return pattern
    segment = _user_segment(user)
    if segment is None:
        return None
    return "".join(segment if seg == USER else seg for seg in _room_segments(pattern))


def _room_matches(pattern: str, room: str) -> bool:
    """A room pattern (a name, or a prefix followed by ``*``) against a room name."""
    return room.startswith(pattern[:-1]) if pattern.endswith("*") else room == pattern


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
    join: tuple[str, ...] = ("*",)
    join_deny: tuple[str, ...] = ()
    presence: bool = False
    presence_rooms: tuple[str, ...] = ()

    def may_subscribe(self, pattern: str, user: str | None = None) -> bool:
        """True if an allow pattern covers ``pattern`` and no deny pattern overlaps it.

        ``{user}`` segments stand for ``user`` (see the module docstring).
        """
        allow = (_expand(a, user) for a in self.subscribe)
        deny = (_expand(d, user) for d in self.subscribe_deny)
        return any(a is not None and covers(a, pattern) for a in allow) and not any(
            d is not None and overlaps(d, pattern) for d in deny
        )

    def may_publish(self, topic: str, user: str | None = None) -> bool:
        """True if an allow pattern matches ``topic`` and no deny pattern does.

        ``{user}`` segments stand for ``user`` (see the module docstring).
        """
        allow = (_expand(a, user) for a in self.publish)
        deny = (_expand(d, user) for d in self.publish_deny)
        return any(a is not None and matches(a, topic) for a in allow) and not any(
            d is not None and matches(d, topic) for d in deny
        )

    def may_join(self, room: str, user: str | None = None) -> bool:
        """True if ``rooms`` is set, a ``join`` pattern matches ``room`` and no
        ``join_deny`` pattern does.

        ``{user}`` segments stand for ``user`` (see the module docstring).
        """
        if not self.rooms:
            return False
        allow = (_expand_room(a, user) for a in self.join)
        deny = (_expand_room(d, user) for d in self.join_deny)
        return any(a is not None and _room_matches(a, room) for a in allow) and not any(
            d is not None and _room_matches(d, room) for d in deny
        )

    def may_query_room(self, room: str) -> bool:
        """True if ``presence_rooms`` names ``room`` or a prefix of it followed by ``*``."""
        return any(_room_matches(p, room) for p in self.presence_rooms)


_PATTERN_KEYS = ("subscribe", "subscribe_deny", "publish", "publish_deny")
_ROOM_PATTERN_KEYS = ("join", "join_deny")
_BOOL_KEYS = ("direct", "rooms", "presence")
_ROLE_KEYS = frozenset(
    (*_PATTERN_KEYS, *_ROOM_PATTERN_KEYS, *_BOOL_KEYS, "broadcast", "presence_rooms")
)


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
                _check_pattern(p, f"{key}.{k}")
            fields[k] = tuple(patterns)
    for k in _ROOM_PATTERN_KEYS:
        if k in m:
            patterns = _strings(m[k], f"{key}.{k}")
            for p in patterns:
                _check_room_pattern(p, f"{key}.{k}")
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
    if "presence_rooms" in m:
        rooms = _strings(m["presence_rooms"], f"{key}.presence_rooms")
        for r in rooms:
            try:
                if r != "*":
                    validate_room(r.removesuffix("*"))
            except BadRequest:
                raise ConfigError(
                    f"{key}.presence_rooms", r, "must be a room name, or a prefix followed by '*'"
                ) from None
        fields["presence_rooms"] = tuple(rooms)
    return Role(name=name, **fields)


def _check_pattern(p: str, key: str) -> None:
    """Raise ConfigError naming ``key`` unless ``p`` is a valid pattern (``{user}`` allowed)."""
    segments = p.split(".")
    if any(USER in seg and seg != USER for seg in segments):
        raise ConfigError(key, p, f"{USER} must be a whole segment")
    try:
        # Any valid segment stands in for the user id here.
        validate_pattern(".".join("u" if seg == USER else seg for seg in segments))
    except BadTopic:
        raise ConfigError(key, p, "invalid topic pattern") from None


def _check_room_pattern(p: str, key: str) -> None:
    """Raise ConfigError naming ``key`` unless ``p`` is a valid room pattern.

    A room pattern is a room name or a prefix followed by ``*`` (``"*"``:
    every room); ``{user}`` must be a whole segment (``.``, ``:`` and ``@``
    separate segments).
    """
    segments = _room_segments(p.removesuffix("*") if p.endswith("*") else p)
    if p.endswith("*") and segments[-1] == USER:
        raise ConfigError(key, p, f"{USER} must be a whole segment, not followed by '*'")
    if any(USER in seg and seg != USER for seg in segments):
        raise ConfigError(key, p, f"{USER} must be a whole segment")
    name = "".join("u" if seg == USER else seg for seg in segments)
    if p == "*":
        return
    try:
        validate_room(name)
    except BadRequest:
        raise ConfigError(
            key, p, "must be a room name, or a prefix followed by '*' ({user} allowed)"
        ) from None


class Policy:
    """RBAC decisions over a fixed set of roles.

    ``roles`` arguments are the token's roles (any iterable of strings; a
    tuple avoids a copy); ``"*"`` is always added and unknown role names are
    ignored. Topic decisions are cached per policy in a bounded LRU.
    """

    __slots__ = ("_join", "_per_user", "_publish", "_roles", "_subscribe")

    def __init__(self, roles: Iterable[Role]) -> None:
        self._roles: Mapping[str, Role] = types.MappingProxyType({r.name: r for r in roles})
        # Only a policy with ``{user}`` patterns has per-user decisions: the
        # others keep one cache entry per (roles, topic) for every user.
        self._per_user = any(
            USER in p
            for r in self._roles.values()
            for p in (
                *r.subscribe,
                *r.subscribe_deny,
                *r.publish,
                *r.publish_deny,
                *r.join,
                *r.join_deny,
            )
        )
        self._subscribe: Callable[[tuple[str, ...], str, str | None], bool] = functools.lru_cache(
            maxsize=_CACHE_SIZE
        )(self._decide_subscribe)
        self._publish: Callable[[tuple[str, ...], str, str | None], bool] = functools.lru_cache(
            maxsize=_CACHE_SIZE
        )(self._decide_publish)
        self._join: Callable[[tuple[str, ...], str, str | None], bool] = functools.lru_cache(
            maxsize=_CACHE_SIZE
        )(self._decide_join)

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

    def _decide_subscribe(self, roles: tuple[str, ...], pattern: str, user: str | None) -> bool:
        return any(r.may_subscribe(pattern, user) for r in self._applicable(roles))

    def _decide_publish(self, roles: tuple[str, ...], topic: str, user: str | None) -> bool:
        return any(r.may_publish(topic, user) for r in self._applicable(roles))

    def _decide_join(self, roles: tuple[str, ...], room: str, user: str | None) -> bool:
        return any(r.may_join(room, user) for r in self._applicable(roles))

    def can_subscribe(self, roles: Iterable[str], pattern: str, user: str | None = None) -> bool:
        """May user ``user`` with ``roles`` subscribe to the valid topic or pattern ``pattern``?

        ``user`` is the token's ``sub``; ``{user}`` patterns match nothing without it.
        """
        return self._subscribe(
            roles if isinstance(roles, tuple) else tuple(roles),
            pattern,
            user if self._per_user else None,
        )

    def can_publish(self, roles: Iterable[str], topic: str, user: str | None = None) -> bool:
        """May user ``user`` with ``roles`` publish to the valid concrete ``topic``?

        ``user`` is the token's ``sub``; ``{user}`` patterns match nothing without it.
        """
        return self._publish(
            roles if isinstance(roles, tuple) else tuple(roles),
            topic,
            user if self._per_user else None,
        )

    def revoked(
        self,
        roles: Iterable[str],
        user: str | None,
        subscriptions: Iterable[str],
        rooms: Iterable[str],
    ) -> tuple[list[str], list[str]]:
        """The subscriptions and rooms a user with ``roles`` may no longer hold.

        Used when a token refresh or a resume brings new roles
        (docs/protocol.md "Permissions"): each subscription is checked as a
        ``subscribe`` and each room as a ``join``. Returns
        ``(patterns, rooms)``, each sorted.
        """
        roles = roles if isinstance(roles, tuple) else tuple(roles)
        return (
            sorted(p for p in subscriptions if not self.can_subscribe(roles, p, user)),
            sorted(r for r in rooms if not self.can_join_room(roles, r, user)),
        )

    def can_broadcast(self, roles: Iterable[str], scope: BroadcastScope) -> bool:
        """May a user with ``roles`` broadcast with ``scope`` (``room``, ``global``, ``filter``)?"""
        return any(scope in r.broadcast for r in self._applicable(roles))

    def can_direct(self, roles: Iterable[str]) -> bool:
        """May a user with ``roles`` send direct messages?"""
        return any(r.direct for r in self._applicable(roles))

    def can_join(self, roles: Iterable[str]) -> bool:
        """May a user with ``roles`` join and leave rooms at all (``rooms``)?"""
        return any(r.rooms for r in self._applicable(roles))

    def can_join_room(self, roles: Iterable[str], room: str, user: str | None = None) -> bool:
        """May user ``user`` with ``roles`` join (or stay in) the valid room ``room``?

        One role must have ``rooms``, a ``join`` pattern matching ``room`` and
        no ``join_deny`` pattern matching it. ``user`` is the token's ``sub``;
        ``{user}`` patterns match nothing without it.
        """
        return self._join(
            roles if isinstance(roles, tuple) else tuple(roles),
            room,
            user if self._per_user else None,
        )

    def can_presence(self, roles: Iterable[str]) -> bool:
        """May a user with ``roles`` query presence (of users, and of rooms it is a member of)?"""
        return any(r.presence for r in self._applicable(roles))

    def can_presence_room(self, roles: Iterable[str], room: str) -> bool:
        """May a user with ``roles`` query the presence of ``room`` without being a member?"""
        return any(r.presence and r.may_query_room(room) for r in self._applicable(roles))
