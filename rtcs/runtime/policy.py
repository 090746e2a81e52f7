"""The supervision vocabulary: restart strategies, restart types, a supervisor's policy.

Pure data, importing nothing from Thespian, so the configuration
(``rtcs.config``) and the metrics (``rtcs.metrics``) name strategies from the
same enums the supervisors in :mod:`rtcs.runtime.supervision` act on. (Importing
it still runs ``rtcs/runtime/__init__.py``, which does import Thespian.)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeVar

from rtcs.errors import ConfigError

__all__ = ["Restart", "Strategy", "SupervisorPolicy"]


class Strategy(enum.StrEnum):
    """Which children a supervisor restarts when one crashes."""

    ONE_FOR_ONE = "one_for_one"
    ALL_FOR_ONE = "all_for_one"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.StrEnum):
    """When a child is restarted."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after a failure, not after a normal exit
    TEMPORARY = "temporary"  # never: forgotten when it stops


_E = TypeVar("_E", bound=enum.Enum)


def _member(enum_type: type[_E], value: object, key: str) -> _E:
    """``value`` as a member of ``enum_type`` (its value string is accepted).

    Raises:
        ConfigError: ``value`` names no member.
    """
    try:
        return enum_type(value)
    except ValueError:
        known = ", ".join(m.value for m in enum_type)
        raise ConfigError(key, value, f"expected one of {known}") from None


@dataclass(frozen=True, slots=True)
class SupervisorPolicy:
    """Restart strategy and intensity (at most ``max_restarts`` in ``within`` seconds).

    Raises:
        ConfigError: an unknown strategy, ``max_restarts`` not a whole number
            of at least 0, or ``within`` not a positive number.
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 3
    within: float = 5.0

    def __post_init__(self) -> None:
        # Accept the strategy's name too, but compare enum members later.
        object.__setattr__(self, "strategy", _member(Strategy, self.strategy, "strategy"))
        if type(self.max_restarts) is not int or self.max_restarts < 0:
            raise ConfigError("max_restarts", self.max_restarts, "must be at least 0")
        if (
            isinstance(self.within, bool)
            or not isinstance(self.within, int | float)
            or self.within <= 0
        ):
            raise ConfigError("within", self.within, "must be a positive number of seconds")
