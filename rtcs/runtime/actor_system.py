"""The ``ActorSystem`` rtcs builds around its scheduler, and helpers that read an
actor's place in the tree on either system base (the stock simple base or
:class:`~rtcs.runtime.scheduler.AsyncioSystemBase`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from thespian.actors import Actor, ActorAddress, ActorExitRequest, ActorSystem, WakeupMessage

# Thespian's names that code outside the runtime and the actors uses (plugins,
# the composition root) come from here, so thespian is imported in one layer.
__all__ = [
    "Actor",
    "ActorAddress",
    "ActorExitRequest",
    "ActorSystem",
    "RtcsActorSystem",
    "WakeupMessage",
    "is_top_level",
    "parent_address",
]


class RtcsActorSystem(ActorSystem):
    """An ``ActorSystem`` whose base is built by ``make_base(self)``.

    Always behaves as ``transientUnique=True`` (no process-wide singleton) and
    never lets Thespian configure logging.
    """

    def __init__(
        self,
        make_base: Callable[[Any], Any],
        capabilities: dict[str, Any] | None = None,
    ) -> None:
        self._make_base = make_base
        super().__init__(
            systemBase=None, capabilities=capabilities, logDefs=False, transientUnique=True
        )

    def _startupActorSys(
        self,
        currentSystemBase: Any,
        systemBase: Any,
        capabilities: dict[str, Any] | None,
        logDefs: Any,
    ) -> Any:
        # What ActorSystem._startupActorSys sets, with our base in place of
        # the one it would build: the base needs systemAddress and capabilities.
        self.systemAddress = ActorAddress("/ActorSys")
        self.capabilities = dict(capabilities or {})
        self._systemBase = self._make_base(self)
        return self._systemBase

    @property
    def base(self) -> Any:
        """The system base (``None`` after shutdown)."""
        return self._systemBase


def parent_address(actor: Actor) -> ActorAddress:
    """The address of ``actor``'s parent (the system address for top-level actors).

    Works on both the stock simple base and :class:`AsyncioSystemBase`.
    """
    return actor._myRef.parent


def is_top_level(actor: Actor) -> bool:
    """Whether ``actor`` was created by the actor system rather than by an actor."""
    ref = actor._myRef
    return bool(ref.parent == ref._system.systemAddress)
