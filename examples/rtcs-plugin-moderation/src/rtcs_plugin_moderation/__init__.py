"""rtcs-plugin-moderation: chat messages with banned words are dropped or masked.

A route-handler plugin (``rtcs.plugins.RoutePlugin``): the topic route handler
asks it about every client publish on its topics (``chat.>`` by default),
after the routing rules. The text it looks at is ``data.text`` when the data
is an object with a string ``text``, or the data itself when it is a string;
other data is delivered as it is. A banned word is found case-insensitively,
as a whole word (``darn`` is in ``"Darn!"``, not in ``"darned"``). Then:

- ``mode = "drop"`` (the default): nobody receives the message; the publisher
  alone gets ``{"moderated": true, "reason": "banned_word"}`` as a
  ``message`` on the publish's topic, then its ``ack``. The word is not
  echoed back.
- ``mode = "mask"``: the message is delivered with each banned word replaced
  by as many ``*`` as it has characters.

With ``audit_topic`` set, every moderated message is also published there
(a fan-out, ``from`` the publisher) as
``{"topic": <original topic>, "user": <publisher>, "action": "dropped"|"masked"}``
without the text.

The package offers the plugin through the ``rtcs.plugins`` entry point
``moderation`` (see pyproject.toml); an operator enables it by name::

    [plugins.moderation]
    banned = ["darn", "heck"]    # words, whole and case-insensitive (default none)
    mode = "mask"                # "drop" (default) or "mask"
    audit_topic = "audit.moderation"   # a concrete topic (default: no audit)
    topics = ["chat.>", "lobby.*"]     # rtcs: the topics it sees (default ["chat.>"])
    timeout = 1.0                # rtcs: seconds to decide, (0, 60] (default 5)

Bad options stop ``python -m rtcs`` before start-up (``validate_options``);
should one reach ``Configure`` anyway, it is logged and its default kept, since
raising in ``Configure`` would crash every incarnation (docs/plugins.md).
The deciding logic is :func:`moderate`, pure and tested without actors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rtcs.errors import BadTopic
from rtcs.plugins import Decision, RoutePlugin, RouteRequest
from rtcs.protocol.topics import validate_topic

__all__ = [
    "ANSWER",
    "OPTIONS",
    "Moderation",
    "ModerationPlugin",
    "moderate",
    "moderation_of",
    "parse_options",
]

TOPICS = ("chat.>",)
MODES = ("drop", "mask")
#: What the publisher of a dropped message receives (never the word itself).
ANSWER: Mapping[str, Any] = {"moderated": True, "reason": "banned_word"}
#: Options rtcs itself reads and checks (rtcs.plugins): accepted, not parsed here.
RTCS_OPTIONS = frozenset({"topics", "timeout"})

Mode = Literal["drop", "mask"]


class Moderation:
    """The parsed configuration: banned words, mode and audit topic.

    ``banned`` are the words as configured; one compiled expression finds
    any of them, case-insensitively, as a whole word (not preceded or
    followed by a letter, digit or ``_``).
    """

    __slots__ = ("_pattern", "audit_topic", "banned", "mode")

    def __init__(
        self, banned: Iterable[str] = (), mode: Mode = "drop", audit_topic: str | None = None
    ) -> None:
        self.banned = tuple(banned)
        self.mode: Mode = mode
        self.audit_topic = audit_topic
        self._pattern: re.Pattern[str] | None = None
        if self.banned:
            # Longest first, so that of two banned words sharing a start the
            # longer one is masked whole.
            words = sorted({re.escape(w) for w in self.banned}, key=len, reverse=True)
            self._pattern = re.compile(rf"(?<!\w)(?:{'|'.join(words)})(?!\w)", re.IGNORECASE)

    def found(self, text: str) -> bool:
        """True if ``text`` has a banned word."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def mask(self, text: str) -> str:
        """``text`` with each banned word replaced by as many ``*`` as it has characters."""
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: "*" * len(m.group()), text)


@dataclass(frozen=True, slots=True)
class _Text:
    """Where a publish's text is: ``data.text`` (``field``) or the data itself."""

    text: str
    field: bool


def _text_of(data: Any) -> _Text | None:
    if isinstance(data, str):
        return _Text(data, field=False)
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return _Text(data["text"], field=True)
    return None


def moderate(moderation: Moderation, topic: str, user: str, data: Any) -> Decision:
    """Decide about one publish of ``user`` on ``topic``: deliver, drop or mask.

    Pure: no actor, no I/O, ``data`` never mutated (a masked object is a
    copy). A clean message, or data without text, is delivered unchanged.
    """
    found = _text_of(data)
    if found is None or not moderation.found(found.text):
        return Decision()
    if moderation.mode == "drop":
        action, decision = "dropped", Decision(drop=True, answer=dict(ANSWER))
    else:
        masked = moderation.mask(found.text)
        action = "masked"
        decision = Decision(data={**data, "text": masked} if found.field else masked)
    if moderation.audit_topic is None:
        return decision
    audit = {"topic": topic, "user": user, "action": action}
    return Decision(
        data=decision.data,
        drop=decision.drop,
        answer=decision.answer,
        publish=((moderation.audit_topic, audit),),
    )


# -- options ---------------------------------------------------------------------


def _banned(value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of words, got {value!r}")
    for word in value:
        if not isinstance(word, str) or not word or any(c.isspace() for c in word):
            raise ValueError(f"must be a list of words (no spaces), got {word!r} in it")
    return tuple(value)


def _mode(value: object) -> Mode:
    if value == "drop":
        return "drop"
    if value == "mask":
        return "mask"
    raise ValueError(f"must be one of {', '.join(repr(m) for m in MODES)}, got {value!r}")


def _audit_topic(value: object) -> str:
    try:
        return validate_topic(value)
    except BadTopic:
        raise ValueError(f"must be a concrete topic (no wildcards), got {value!r}") from None


#: Option name -> its parser (returns the value, or raises ValueError saying why).
OPTIONS: dict[str, Callable[[object], Any]] = {
    "banned": _banned,
    "mode": _mode,
    "audit_topic": _audit_topic,
}


def parse_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split options into ``(valid, refused)``: parsed values, and reasons. Never raises.

    ``topics`` and ``timeout`` are rtcs's (it checks them and routes
    accordingly): accepted and left out of ``valid``.
    """
    valid: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for name, value in options.items():
        if name in RTCS_OPTIONS:
            continue
        parse = OPTIONS.get(name)
        if parse is None:
            known = ", ".join(sorted({*OPTIONS, *RTCS_OPTIONS}))
            refused[name] = f"unknown option (known: {known})"
            continue
        try:
            valid[name] = parse(value)
        except ValueError as exc:
            refused[name] = str(exc)
    return valid, refused


def moderation_of(valid: Mapping[str, Any]) -> Moderation:
    """The :class:`Moderation` of parsed options (missing ones take the defaults)."""
    return Moderation(valid.get("banned", ()), valid.get("mode", "drop"), valid.get("audit_topic"))


# -- the actor --------------------------------------------------------------------


class ModerationPlugin(RoutePlugin):
    """Drops (and answers the publisher) or masks publishes with banned words.

    Options: ``banned``, ``mode``, ``audit_topic`` (this plugin's), ``topics``
    and ``timeout`` (rtcs's, see :class:`rtcs.plugins.RoutePlugin`). It
    decides in the same turn; nothing is kept between publishes.
    """

    topics = TOPICS

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
        self.moderation = Moderation()

    def configured(self) -> None:
        """Take the options (a bad one is logged, its default kept)."""
        valid, refused = parse_options(self.options)
        for option, reason in refused.items():
            self.ctx.log.error(
                "plugin option ignored", plugin=type(self).__name__, option=option, reason=reason
            )
        self.moderation = moderation_of(valid)

    def route(self, message: RouteRequest) -> Decision:
        return moderate(self.moderation, message.topic, message.user, message.data)
