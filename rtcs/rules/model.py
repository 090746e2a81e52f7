"""The routing rules as data: frozen dataclasses built by :mod:`rtcs.rules.load`.

docs/rules.md describes the file and the meaning of every field. Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from rtcs.rules.cel import Condition

__all__ = ["Action", "Path", "Rule", "Target", "Transform"]

#: A transform path without its leading ``data``: ``data.a.b`` is ``("a", "b")``.
Path = tuple[str, ...]


class Action(enum.StrEnum):
    """What a matching rule does with the message besides transforming it."""

    DELIVER = "deliver"
    DROP = "drop"
    REROUTE = "reroute"


@dataclass(frozen=True, slots=True)
class Target:
    """Who may receive the message; ``None`` means "no restriction".

    ``roles`` admits recipients with at least one of the roles, ``users`` the
    listed user ids; a recipient must pass both. ``exclude_sender`` keeps the
    publisher's own sessions out.
    """

    roles: frozenset[str] | None = None
    users: frozenset[str] | None = None
    exclude_sender: bool = False

    def narrow(self, other: Target) -> Target:
        """Both filters at once: role and user sets intersect, exclusions add up."""
        roles = self.roles if other.roles is None else other.roles
        if self.roles is not None and other.roles is not None:
            roles = self.roles & other.roles
        users = self.users if other.users is None else other.users
        if self.users is not None and other.users is not None:
            users = self.users & other.users
        return Target(roles, users, self.exclude_sender or other.exclude_sender)

    @property
    def nobody(self) -> bool:
        """True when no recipient can pass (an empty role or user set)."""
        return (self.roles is not None and not self.roles) or (
            self.users is not None and not self.users
        )

    @property
    def restricts(self) -> bool:
        """False for the filter that admits everybody."""
        return self.roles is not None or self.users is not None or self.exclude_sender

    def admits(self, user: str, roles: Collection[str], *, is_sender: bool) -> bool:
        """Whether a recipient with ``user`` and ``roles`` passes the filter."""
        if is_sender and self.exclude_sender:
            return False
        if self.users is not None and user not in self.users:
            return False
        return self.roles is None or not self.roles.isdisjoint(roles)


#: The filter that admits everybody.
EVERYONE = Target()


@dataclass(frozen=True, slots=True)
class Transform:
    """Edits of the message data, applied in this order: ``set``, ``remove``, ``rename``.

    Each list is applied in file order. Values set are JSON values (strings,
    numbers, booleans, arrays, tables).
    """

    set: tuple[tuple[Path, Any], ...] = ()
    remove: tuple[Path, ...] = ()
    rename: tuple[tuple[Path, Path], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.remove or self.rename)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rule]]`` of the file.

    ``index`` is the rule's 0-based position in the file (ties in priority go
    to the earlier rule). ``reroute`` is set exactly when ``action`` is
    :attr:`Action.REROUTE`.
    """

    name: str
    topic: str
    priority: int = 0
    when: Condition | None = None
    target: Target = EVERYONE
    transform: Transform = Transform()
    action: Action = Action.DELIVER
    reroute: str | None = None
    stop: bool = False
    index: int = 0
