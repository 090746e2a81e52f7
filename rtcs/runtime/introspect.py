"""Read-only views of a running actor system: its supervision tree and its mailboxes.

For operators (``GET /admin/status``, the ``rtcs_actor_mailbox_messages``
gauge). A :class:`TreeView` reads actor state directly instead of asking the
actors with messages, so a view is never stuck behind a long mailbox and costs
nothing on the message path. It is built on demand: one pass over the queued
messages, one over the recipients that have some, and one over the
supervisors and their named children (the unnamed ones, one per connection,
are only counted): about 1.5 ms for a tree of 10,000 connections.

Thread rule: call it on the thread that runs the actor system's loop. Actor
turns run there one at a time, each to completion, so between two loop
callbacks no actor is halfway through a turn and what a view reads is
consistent.

Every actor is reported under a *kind*, from its class (``kind_of``), never
from anything per connection; messages queued for the system's own endpoints
(replies to the outside) or for actors that have exited count as
:data:`RUNTIME`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from thespian.actors import ActorAddress

from rtcs.runtime.policy import Strategy
from rtcs.runtime.scheduler import AsyncioSystemBase
from rtcs.runtime.supervision import Supervisor

__all__ = ["RUNTIME", "ActorView", "KindOf", "SupervisorView", "TreeView"]

#: The kind of messages queued for no actor of the application.
RUNTIME = "runtime"

#: Maps an actor class to its kind (a label from a fixed set).
KindOf = Callable[[type], str]


@dataclass(frozen=True, slots=True)
class ActorView:
    """A child that is not a supervisor: its name, kind and queued messages."""

    name: str
    kind: str
    mailbox: int


@dataclass(frozen=True, slots=True)
class SupervisorView:
    """A supervisor and, recursively, its children.

    ``children`` lists, in start order, the children published in the
    directory (``ChildSpec.register``), nested supervisors as
    :class:`SupervisorView`; the others (one per connection) are only counted,
    by kind, in ``unnamed``. ``mailbox`` counts the messages queued for the
    supervisor itself; ``mailboxes`` those for its children, by kind (named
    or not; a nested supervisor's own mailbox included, not its children's).
    ``restarts`` and ``budget_left`` are as in
    :class:`~rtcs.runtime.supervision.SupervisorState`.
    """

    name: str
    kind: str
    strategy: Strategy
    max_restarts: int
    within: float
    restarts: int
    budget_left: int
    mailbox: int
    children: tuple[ActorView | SupervisorView, ...]
    unnamed: Mapping[str, int]
    mailboxes: Mapping[str, int]


class TreeView:
    """The tree under one root supervisor, and the mailboxes of its whole system.

    Obligations: as the module says, use it on the loop thread. Once the
    system shuts down, :meth:`tree` is None and :meth:`mailboxes` empty.
    """

    __slots__ = ("_base", "_kinds", "kind_of", "root", "started", "started_at")

    def __init__(
        self,
        base: AsyncioSystemBase,
        root: ActorAddress,
        kind_of: KindOf,
        *,
        started_at: float | None = None,
        started: float | None = None,
    ) -> None:
        """``started_at`` (``time.time()``) and ``started`` (``time.monotonic()``)
        say when the tree started (default: now)."""
        self._base = base
        self.root = root
        self.kind_of = kind_of
        self.started_at = time.time() if started_at is None else started_at
        self.started = time.monotonic() if started is None else started
        self._kinds: dict[type, str] = {}

    def _kind(self, actor_class: type) -> str:
        kind = self._kinds.get(actor_class)
        if kind is None:
            kind = self._kinds[actor_class] = self.kind_of(actor_class)
        return kind

    def mailboxes(self) -> dict[str, int]:
        """Messages queued in the whole system, summed by the kind of their recipient.

        Kinds with nothing queued are absent.
        """
        base = self._base
        if not base.running:
            return {}
        sizes: dict[str, int] = {}
        for key, count in base.queued_by_recipient().items():
            instance = base.instance_at(key)
            kind = RUNTIME if instance is None else self._kind(type(instance))
            sizes[kind] = sizes.get(kind, 0) + count
        return sizes

    def tree(self, now: float | None = None) -> SupervisorView | None:
        """The root supervisor's view, with every supervisor below it; None if it is gone.

        ``now``: a ``time.monotonic()`` reading for the restart budgets.
        """
        base = self._base
        if not base.running:
            return None
        root = base.instance_at(self.root.actorAddressString)
        if not isinstance(root, Supervisor):
            return None
        queued = base.queued_by_recipient()
        at = time.monotonic() if now is None else now
        return self._supervisor(root, self.root, queued, self._by_parent(queued), at)

    def _by_parent(self, queued: Mapping[str, int]) -> dict[str, dict[str, int]]:
        """The queued messages by the recipient's parent (its address string), then kind.

        A pass over the recipients with something queued, not over every
        actor: a supervisor's thousands of idle connection actors cost nothing.
        """
        base = self._base
        by_parent: dict[str, dict[str, int]] = {}
        for key, count in queued.items():
            parent = base.parent_at(key)
            if parent is None:
                continue  # the outside world, or an actor that exited
            kind = self._kind(type(base.instance_at(key)))
            kinds = by_parent.setdefault(parent.actorAddressString, {})
            kinds[kind] = kinds.get(kind, 0) + count
        return by_parent

    def _supervisor(
        self,
        supervisor: Supervisor,
        address: ActorAddress,
        queued: Mapping[str, int],
        by_parent: Mapping[str, Mapping[str, int]],
        now: float,
    ) -> SupervisorView:
        base = self._base
        state = supervisor.state(now)
        children: list[ActorView | SupervisorView] = []
        mailboxes: dict[str, int] = {}
        for child in state.children:
            key = "" if child.address is None else child.address.actorAddressString
            instance = base.instance_at(key) if key else None
            kind = self._kind(child.actor_class if instance is None else type(instance))
            mailboxes[kind] = 0
            if isinstance(instance, Supervisor) and child.address is not None:
                children.append(self._supervisor(instance, child.address, queued, by_parent, now))
            else:
                children.append(ActorView(child.name, kind, queued.get(key, 0)))
        unnamed: dict[str, int] = {}
        for actor_class, count in state.unnamed.items():
            kind = self._kind(actor_class)
            unnamed[kind] = unnamed.get(kind, 0) + count
            mailboxes[kind] = 0
        for kind, count in by_parent.get(address.actorAddressString, {}).items():
            mailboxes[kind] = mailboxes.get(kind, 0) + count
        policy = state.policy
        return SupervisorView(
            name=state.name,
            kind=self._kind(type(supervisor)),
            strategy=policy.strategy,
            max_restarts=policy.max_restarts,
            within=policy.within,
            restarts=state.restarts,
            budget_left=state.budget_left,
            mailbox=queued.get(address.actorAddressString, 0),
            children=tuple(children),
            unnamed=unnamed,
            mailboxes=mailboxes,
        )
