"""An example rtcs plugin: the node's heartbeat, published on ``system.heartbeat``.

Every ``interval`` seconds the plugin echoes the node's pulse to the clients of
this node subscribed to ``system.heartbeat`` (or to a pattern matching it,
such as ``system.>``)::

    {"type": "message", "seq": 7, "topic": "system.heartbeat",
     "data": {"node": "web-1", "beat": 3, "connections": 42}, "ts": 1700000000000}

Enable it with the directory holding this file on ``sys.path``
(``PYTHONPATH=examples/plugins``) and either form::

    [plugins]
    heartbeat = "echo_plugin:HeartbeatPlugin"

    [plugins.heartbeat]              # with options; both are optional
    actor = "echo_plugin:HeartbeatPlugin"
    interval = 2.5                   # seconds, > 0 (default 5.0)
    topic = "node.pulse"             # a concrete topic (default "system.heartbeat")

How it works, and why (docs/plugins.md):

- rtcs starts the plugin under the ``plugins`` supervisor and sends it
  ``actors.messages.Configure(context, options)`` first, again after every
  restart; all its state is rebuilt from that message.
- A wrong option is logged as an error naming it, and its default is used:
  raising in ``Configure`` would crash every incarnation, and the restarts
  would escalate past the plugins supervisor to the whole server.
- It never touches sessions or sockets. It hands each beat to the topic route
  handler, found by name in the directory on every beat (its address changes
  when it restarts), as a ``ServerPublish``: the handler encodes it once and
  delivers it to the subscribers without a ``from``, in order with client
  publishes, in chunks for large fan-outs. ``local_only=True`` keeps it off
  the broker: a heartbeat describes one node, so each node's clients hear
  their own node.
- Clients cannot fake it: the default ``[rbac]`` policy denies publishing to
  ``system.>`` to everyone but admins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rtcs.errors import BadTopic
from rtcs.plugins import ROUTE_TOPIC, ActorAddress, PluginActor, ServerPublish, WakeupMessage
from rtcs.protocol.topics import validate_topic

TOPIC = "system.heartbeat"


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


# Option name -> its parser (returns the value, or raises ValueError saying why).
OPTIONS: dict[str, Callable[[object], Any]] = {"interval": _interval, "topic": _topic}


def parse_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split a plugin's options into the valid ones and the refused ones.

    Returns ``(valid, refused)``: ``valid`` maps each well-formed option in
    :data:`OPTIONS` to its parsed value; ``refused`` maps every other given
    option (malformed or unknown) to the reason it was refused. Never raises.
    """
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


@dataclass(frozen=True, slots=True)
class Beat:
    """The plugin's timer payload: time for the next heartbeat."""


class HeartbeatPlugin(PluginActor):
    """Publishes ``{"node", "beat", "connections"}`` on its topic periodically.

    Options (``Configure.options``): ``interval`` in seconds (> 0) and
    ``topic`` (a concrete topic); missing ones take the class defaults below.
    Malformed or unknown ones stop ``python -m rtcs`` before start-up
    (:meth:`validate_options`); should one reach ``Configure`` anyway (a
    plugin built by hand), it is logged as an error and ignored. ``beat``
    counts from 1 in each incarnation of the actor, so a client sees it start
    over after the plugin was restarted.
    """

    interval: float = 5.0
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
        self.beats = 0
        self._ticking = False

    def configured(self) -> None:
        """Take the options; start the timer on the first ``Configure`` only.

        Never raises on bad options (see the module docstring): each refused
        option is logged with its name and reason, and its default is kept.
        """
        valid, refused = parse_options(self.options)
        for option, reason in refused.items():
            self.ctx.log.error(
                "plugin option ignored",
                plugin=type(self).__name__,
                option=option,
                reason=reason,
            )
        self.interval = valid.get("interval", type(self).interval)
        self.topic = valid.get("topic", type(self).topic)
        if not self._ticking:
            self._ticking = True
            self.wakeupAfter(self.interval, Beat())

    def receiveMsg_WakeupMessage(self, msg: WakeupMessage, sender: ActorAddress) -> None:
        if not isinstance(msg.payload, Beat):
            return
        self.beat()
        # Re-armed after the beat: if the beat raises, the supervisor replaces
        # this actor, and the new one starts its own timer on Configure.
        self.wakeupAfter(self.interval, Beat())

    def beat(self) -> None:
        """Send one heartbeat to the topic route handler, for this node's clients only.

        Skipped while the node shuts down, and while the topic handler is being
        restarted (it is not in the directory then): a heartbeat is worth
        nothing late.
        """
        ctx = self.ctx
        if ctx.shutting_down:
            return
        handler = ctx.directory.lookup(ROUTE_TOPIC)
        if handler is None:
            return
        self.beats += 1
        data = {
            "node": ctx.node_id,
            "beat": self.beats,
            "connections": ctx.sessions.attached_count(),
        }
        self.send(handler, ServerPublish(self.topic, data, local_only=True))
