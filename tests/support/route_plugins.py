"""Route-handler plugins for the tests (tests/integration/test_route_plugins.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rtcs.plugins import ActorAddress, Decision, RoutePlugin, RouteRequest


@dataclass(frozen=True, slots=True)
class TestExplode:
    """Makes the plugin crash in a handler other than ``route``."""


class Upper(RoutePlugin):
    """Upper-cases ``data.text``; drops ``"spam"``; answers ``"ping"``; copies ``"fan"``."""

    topics = ("chat.>",)

    def route(self, message: RouteRequest) -> Decision | None:
        data: Any = message.data
        text = data.get("text", "") if isinstance(data, dict) else ""
        if text == "spam":
            return Decision(drop=True, answer={"refused": "spam"})
        if text == "ping":
            return Decision(drop=True, answer="pong")
        if text == "crash":
            raise RuntimeError("crash on purpose")
        if text == "hang":
            return None  # never decides
        if text == "explode later":
            self.send(self.myAddress, TestExplode())
            return None
        if text == "bad":
            return Decision(publish=(("not a topic!", 1),))
        if text == "not json":
            return Decision(data={"a set": {1, 2}}, answer="an answer", publish=(("audit.x", 1),))
        extra = (("audit.chat", {"seen": text}),) if text == "fan" else ()
        return Decision(data={**data, "text": text.upper(), "by": message.user}, publish=extra)

    def receiveMsg_TestExplode(self, msg: TestExplode, sender: ActorAddress) -> None:
        raise RuntimeError("explode on purpose")


class Tag(RoutePlugin):
    """Runs after Upper on chat.>: adds the step it saw."""

    topics = ("chat.>",)

    def route(self, message: RouteRequest) -> Decision | None:
        data: Any = message.data
        return Decision(data={**data, "tagged": data.get("text")})
