"""rtcs-plugin-census: how many clients the node has, published when it changes.

Every ``interval`` seconds the plugin counts the clients connected to this node
and publishes the number on ``topic`` to this node's subscribers when it
differs from the last one published, or when that one is ``refresh`` seconds
old (so a dashboard that just subscribed learns it)::

    {"type": "message", "seq": 4, "topic": "system.census",
     "data": {"node": "web-1", "connections": 42}, "ts": 1700000000000}

The package offers the plugin through the ``rtcs.plugins`` entry point
``census`` (see pyproject.toml); an operator enables it by name::

    [plugins]
    census = true

    [plugins.census]             # or with options; both are optional
    interval = 2.0               # seconds between counts, > 0 (default 1.0)
    refresh = 60.0               # republish an unchanged count after, > 0 (default 30.0)
    topic = "ops.census"         # a concrete topic (default "system.census")

Bad options stop ``python -m rtcs`` before start-up (``validate_options``);
should one reach ``Configure`` anyway, it is logged and its default kept, since
raising in ``Configure`` would crash every incarnation (docs/plugins.md).
The deciding logic is :class:`Census`, pure and tested without actors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rtcs.errors import BadTopic
from rtcs.plugins import ROUTE_TOPIC, ActorAddress, PluginActor, ServerPublish, WakeupMessage
from rtcs.protocol.topics import validate_topic

__all__ = ["OPTIONS", "Census", "CensusDue", "CensusPlugin", "parse_options"]

TOPIC = "system.census"
INTERVAL = 1.0
REFRESH = 30.0


def _interval(value: object) -> float:
    # bool is an int; ``interval = true`` is a mistake, not 1 second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"must be a positive number of seconds, got {value!r}")
    return float(value)


def _topic(value: object) -> str:
    try:
        return validate_topic(value)
    except BadTopic:
        raise ValueError(f"must be a concrete topic (no wildcards), got {value!r}") from None


#: Option name -> its parser (returns the value, or raises ValueError saying why).
OPTIONS: dict[str, Callable[[object], Any]] = {
    "interval": _interval,
    "refresh": _interval,
    "topic": _topic,
}


def parse_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split options into ``(valid, refused)``: parsed values, and reasons. Never raises."""
    valid: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for name, value in options.items():
        parse = OPTIONS.get(name)
        if parse is None:
            refused[name] = f"unknown option (known: {', '.join(sorted(OPTIONS))})"
            continue
        try:
            valid[name] = parse(value)
        except ValueError as exc:
            refused[name] = str(exc)
    return valid, refused


class Census:
    """The pure core: which counts are worth publishing.

    ``observe(count, now)`` returns the count to publish, or None when it
    equals the last one returned less than ``refresh`` seconds before ``now``
    (a monotonic clock): changes are heard at once, and an unchanged count is
    repeated now and then for those who subscribed since.
    """

    def __init__(self, refresh: float = REFRESH) -> None:
        self.refresh = refresh
        self.last: int | None = None
        self.published_at = -math.inf

    def observe(self, count: int, now: float) -> int | None:
        """Record ``count`` seen at ``now``; return it if it is worth publishing."""
        if count == self.last and now - self.published_at < self.refresh:
            return None
        self.last, self.published_at = count, now
        return count


@dataclass(frozen=True, slots=True)
class CensusDue:
    """The plugin's timer payload: time to count again."""


class CensusPlugin(PluginActor):
    """Publishes ``{"node", "connections"}`` on its topic when the count changes.

    Options: ``interval`` and ``refresh`` (seconds, > 0) and ``topic`` (a
    concrete topic); missing ones take the class defaults. Each incarnation publishes its
    first count, so subscribers hear the number again after a restart.
    """

    interval: float = INTERVAL
    refresh: float = REFRESH
    topic: str = TOPIC

    @staticmethod
    def validate_options(options: Mapping[str, Any]) -> None:
        """Refuse bad options before the node starts (rtcs.plugins calls this).

        Raises:
            ValueError: the first refused option, as ``"name: reason"``.
        """
        _, refused = parse_options(options)
        for name, reason in refused.items():
            raise ValueError(f"{name}: {reason}")

    def __init__(self) -> None:
        super().__init__()
        self.census = Census()
        self._ticking = False

    def configured(self) -> None:
        """Take the options (a bad one is logged, its default kept); start the timer once."""
        valid, refused = parse_options(self.options)
        for option, reason in refused.items():
            self.ctx.log.error(
                "plugin option ignored", plugin=type(self).__name__, option=option, reason=reason
            )
        self.interval = valid.get("interval", type(self).interval)
        self.topic = valid.get("topic", type(self).topic)
        self.census.refresh = valid.get("refresh", type(self).refresh)
        if not self._ticking:
            self._ticking = True
            self.wakeupAfter(self.interval, CensusDue())

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        if not isinstance(msg.payload, CensusDue):
            return
        self.count()
        self.wakeupAfter(self.interval, CensusDue())

    def count(self) -> None:
        """Count this node's clients; publish the number if it changed or is due.

        Skipped while the node shuts down, and while the topic route handler
        restarts (it is not in the directory then): the next turn catches up.
        """
        ctx = self.ctx
        if ctx.shutting_down:
            return
        handler = ctx.directory.lookup(ROUTE_TOPIC)
        if handler is None:
            return
        connections = self.census.observe(ctx.sessions.attached_count(), ctx.clock())
        if connections is None:
            return
        data = {"node": ctx.node_id, "connections": connections}
        # local_only: the count describes this node; other nodes publish their own.
        self.send(handler, ServerPublish(self.topic, data, local_only=True))
