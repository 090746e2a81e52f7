"""Messages the rtcs runtime sends to actors.

Thespian's ``ActorTypeDispatcher`` dispatches on the class name
(``receiveMsg_ChildFailed``), so every message class name here is unique
across rtcs. Messages travel by reference inside one process; they are
frozen so that no receiver can change what another receiver sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thespian.actors import ActorAddress


@dataclass(frozen=True, slots=True)
class ChildFailed:
    """Sent to an actor's parent when one of the actor's handlers failed for good.

    ``message`` is the message whose handling raised on its final delivery
    attempt and ``details`` the formatted traceback. The child is still alive:
    whether it is stopped or restarted is the parent's decision. Only
    :class:`rtcs.runtime.scheduler.AsyncioSystemBase` emits this; the stock Thespian
    bases tell the sender alone (``PoisonMessage``).
    """

    child: ActorAddress
    message: Any
    details: str

    @property
    def reason(self) -> str:
        """The last line of the traceback, e.g. ``"ValueError: bad input"``."""
        lines = [line for line in self.details.strip().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "failed"


@dataclass(frozen=True, slots=True)
class Escalated:
    """Sent by a supervisor to its parent when its restart intensity was exceeded.

    The sender has already stopped its children and is exiting; its own
    supervisor treats this like a crash of that child.
    """

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Continue:
    """An actor's own continuation, run in an ordinary actor turn.

    :meth:`rtcs.runtime.control.Calls.call` sends one when a coroutine the
    actor started has finished: ``step`` is the typed callback with the
    outcome already bound, so what runs next is checked by the type checker
    rather than looked up by name.
    """

    step: Callable[[], None]
