"""Erlang/OTP-style supervision built on Thespian's signals.

Thespian tells a parent when a child exits (``ChildActorExited``) and, on the
asyncio base, when one of its handlers failed for good
(:class:`~rtcs.runtime.messages.ChildFailed`); it has no restart policy. The
:class:`Supervisor` adds one:

- strategy on a crash: ONE_FOR_ONE restarts the crashed child; ALL_FOR_ONE
  stops every other child and restarts all; REST_FOR_ONE restarts the crashed
  child and every child started after it. Restarts happen in start order.
- restart type per child: PERMANENT always restarted; TRANSIENT only after a
  failure (not after it exited on its own); TEMPORARY never (forgotten).
- intensity: more than ``max_restarts`` restarts within ``within`` seconds
  stops every child and escalates to the parent (:class:`Escalated`), whose
  supervisor treats it as a crash of that child; a top-level supervisor
  reports ``kind="escalated"`` through ``on_event`` instead. Either way the
  supervisor first reports ``kind="gave_up"`` (metrics count escalations
  with it). Only restarts count: a crash of a TEMPORARY child (or a
  TRANSIENT one that exited normally) restarts nothing, so a storm of
  connection-actor crashes a client can trigger stays with those
  connections and never reaches the parent
  (tests/unit/runtime/test_supervision_storms.py).

A crash is a ``ChildFailed`` or ``Escalated`` from a child, or a
``ChildActorExited`` the supervisor did not cause; children it stops on
purpose (restarts, ``stop_child``, shutdown) are not crashes. A failed child
is still alive in Thespian, so the supervisor stops it before replacing it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from thespian.actors import (
    Actor,
    ActorAddress,
    ActorExitRequest,
    ChildActorExited,
)

from rtcs.runtime.actor_system import is_top_level, parent_address
from rtcs.runtime.directory import Directory
from rtcs.runtime.dispatch import Dispatcher
from rtcs.runtime.messages import ChildFailed, Escalated
from rtcs.runtime.policy import Restart, Strategy, SupervisorPolicy, _member

__all__ = [
    "ChildSpec",
    "ChildState",
    "EventKind",
    "Restart",
    "Strategy",
    "Supervise",
    "Supervisor",
    "SupervisorEvent",
    "SupervisorPolicy",
    "SupervisorState",
]

_log = logging.getLogger("rtcs.runtime")

EventKind = Literal["started", "restarted", "stopped", "gave_up", "escalated"]


@dataclass(frozen=True, slots=True)
class ChildSpec:
    """How to (re)create one child.

    ``init``, if not ``None``, is sent to the child as its first message after
    every (re)creation: it carries the child's dependencies and configuration,
    so a restarted child rebuilds its state from it.
    """

    name: str
    actor_class: type[Actor]
    restart: Restart = Restart.PERMANENT
    init: Any = None
    # Whether the child's address is published in the directory under ``name``.
    # Dynamic children nobody looks up by name (connection actors) skip it.
    register: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "restart", _member(Restart, self.restart, "restart"))


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """What a supervisor did to a child; for metrics and for shutting down on escalation.

    ``kind``: ``started``, ``restarted`` (one per restarted child), ``stopped``;
    ``gave_up`` when the supervisor's restart intensity was exceeded by the
    crash of ``child`` (it stopped its children and escalates, whatever its
    level); ``escalated`` right after, from a top-level supervisor only
    (nobody above it: the application decides).
    """

    supervisor: str
    strategy: Strategy
    child: str
    kind: EventKind
    reason: str


@dataclass(frozen=True, slots=True)
class Supervise:
    """The first message a :class:`Supervisor` receives: it then starts ``children`` in order.

    ``context`` is opaque to the runtime: shared dependencies that subclasses
    read as ``self.context`` (a restarted supervisor gets the same one).

    Raises:
        ValueError: two children share a name.
    """

    name: str
    policy: SupervisorPolicy
    children: tuple[ChildSpec, ...]
    directory: Directory | None = None
    on_event: Callable[[SupervisorEvent], None] | None = None
    context: Any = None

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.children]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"supervisor {self.name!r}: duplicate child names {duplicates}")


@dataclass(frozen=True, slots=True)
class ChildState:
    """A named child as its supervisor sees it (:meth:`Supervisor.state`).

    ``address`` is None while the child is being replaced.
    """

    name: str
    actor_class: type[Actor]
    restart: Restart
    address: ActorAddress | None


@dataclass(frozen=True, slots=True)
class SupervisorState:
    """A supervisor's policy, restart counts and children, at one moment.

    ``restarts``: crashes it answered with a restart since it (re)started
    (each counts once, whatever the strategy restarted with it: the unit of
    the restart intensity); ``budget_left``: how many more it may restart
    within the current window of ``policy.within`` seconds before it gives
    up and escalates. ``children``: the children published in the directory
    (``ChildSpec.register``), in start order; ``unnamed``: how many others
    it has (one per connection, for the connection supervisor), by class.
    """

    name: str
    policy: SupervisorPolicy
    restarts: int
    budget_left: int
    children: tuple[ChildState, ...]
    unnamed: Mapping[type[Actor], int]


@dataclass(slots=True)
class _Child:
    spec: ChildSpec
    address: ActorAddress | None = None
    key: str = field(default="")  # actorAddressString of ``address``


class Supervisor(Dispatcher):
    """An actor that starts, watches and restarts its children.

    Send it :class:`Supervise` first. Subclasses may add ``receiveMsg_X``
    handlers, read ``self.context``, start and stop dynamic children with
    :meth:`start_child` and :meth:`stop_child`, and override the hooks
    :meth:`on_started`, :meth:`on_child_started`, :meth:`on_child_crashed` and
    :meth:`on_child_exited`. A subclass overriding one of the ``receiveMsg_``
    handlers below must call the base handler.
    """

    def __init__(self) -> None:
        super().__init__()
        self._policy = SupervisorPolicy()
        self._supervisor_name = type(self).__name__
        self._directory: Directory | None = None
        self._on_event: Callable[[SupervisorEvent], None] | None = None
        self.context: Any = None
        self._configured = False
        self._stopping = False
        # Start order is dict order; a restarted child keeps its place.
        self._children: dict[str, _Child] = {}
        self._names_by_key: dict[str, str] = {}
        # Children told to exit whose ChildActorExited has not arrived yet.
        self._retiring: set[str] = set()
        self._restarts: deque[float] = deque()
        self._restart_count = 0

    # ------------------------------------------------------------ public API

    @property
    def supervisor_name(self) -> str:
        """The name given by :class:`Supervise` (the class name before that)."""
        return self._supervisor_name

    @property
    def policy(self) -> SupervisorPolicy:
        """The restart policy in force."""
        return self._policy

    def child_address(self, name: str) -> ActorAddress | None:
        """The current address of child ``name``, or ``None`` if there is none."""
        child = self._children.get(name)
        return None if child is None else child.address

    def child_names(self) -> list[str]:
        """Names of the current children, in start order."""
        return list(self._children)

    def state(self, now: float | None = None) -> SupervisorState:
        """Its policy, restart counts and children (in start order), read now.

        ``now`` is a ``time.monotonic()`` reading (default: the current one).
        Read-only. From outside the actor, call it on the thread that runs
        the actor system, between turns (``rtcs.runtime.introspect``).
        """
        if now is None:
            now = time.monotonic()
        horizon = now - self._policy.within
        recent = sum(1 for at in self._restarts if at >= horizon)
        named: list[ChildState] = []
        unnamed: dict[type[Actor], int] = {}
        for name, child in self._children.items():
            spec = child.spec
            if spec.register:
                named.append(ChildState(name, spec.actor_class, spec.restart, child.address))
            else:  # one per connection: only counted
                unnamed[spec.actor_class] = unnamed.get(spec.actor_class, 0) + 1
        return SupervisorState(
            name=self._supervisor_name,
            policy=self._policy,
            restarts=self._restart_count,
            budget_left=max(0, self._policy.max_restarts - recent),
            children=tuple(named),
            unnamed=unnamed,
        )

    def start_child(self, spec: ChildSpec) -> ActorAddress:
        """Create a child from ``spec``, after the existing ones in start order.

        Raises:
            ValueError: a child named ``spec.name`` already exists.
        """
        if spec.name in self._children:
            raise ValueError(f"supervisor {self._supervisor_name!r}: child {spec.name!r} exists")
        self._children[spec.name] = _Child(spec)
        return self._start(spec.name, "started", "started")

    def stop_child(self, name: str) -> None:
        """Stop child ``name`` on purpose and forget it; unknown names are ignored."""
        child = self._children.pop(name, None)
        if child is None:
            return
        self._retire(child)
        self._emit(name, "stopped", "stopped on request")

    def on_started(self) -> None:
        """Hook: :class:`Supervise` was handled and the initial children started."""

    def on_child_started(self, name: str, address: ActorAddress) -> None:
        """Hook: child ``name`` was (re)created at ``address`` (``init`` already sent)."""

    def on_child_crashed(self, name: str, reason: str) -> None:
        """Hook: child ``name`` failed (ChildFailed or Escalated), before the policy applies."""

    def on_child_exited(self, name: str) -> None:
        """Hook: child ``name`` exited without being asked to, before the policy applies."""

    # ------------------------------------------------------------- handlers

    def receiveMsg_Supervise(self, msg: Supervise, sender: ActorAddress) -> None:
        if self._configured:
            _log.warning("supervisor %s ignored a second Supervise", self._supervisor_name)
            return
        self._configured = True
        self._supervisor_name = msg.name
        self._policy = msg.policy
        self._directory = msg.directory
        self._on_event = msg.on_event
        self.context = msg.context
        for spec in msg.children:
            self.start_child(spec)
        self.on_started()

    def receiveMsg_ChildFailed(self, msg: ChildFailed, sender: ActorAddress) -> None:
        name = self._names_by_key.get(msg.child.actorAddressString)
        if name is not None and not self._stopping:
            self._crashed(name, msg.reason, failed=True, alive=True)

    def receiveMsg_Escalated(self, msg: Escalated, sender: ActorAddress) -> None:
        name = self._names_by_key.get(sender.actorAddressString)
        if name is not None and not self._stopping:
            self._crashed(name, f"escalated: {msg.reason}", failed=True, alive=True)

    def receiveMsg_ChildActorExited(self, msg: ChildActorExited, sender: ActorAddress) -> None:
        key = msg.childAddress.actorAddressString
        if key in self._retiring:
            self._retiring.discard(key)
            return
        name = self._names_by_key.get(key)
        if name is not None and not self._stopping:
            self._crashed(name, "exited", failed=False, alive=False)

    def receiveMsg_ActorExitRequest(self, msg: ActorExitRequest, sender: ActorAddress) -> None:
        self._stopping = True
        self._stop_all("shutdown", emit=True)

    # ------------------------------------------------------------- internals

    def _start(self, name: str, kind: EventKind, reason: str) -> ActorAddress:
        child = self._children[name]
        spec = child.spec
        address = self.createActor(spec.actor_class)
        child.address = address
        child.key = address.actorAddressString
        self._names_by_key[child.key] = name
        if spec.init is not None:
            self.send(address, spec.init)
        if self._directory is not None and spec.register:
            self._directory.register(name, address)
        self.on_child_started(name, address)
        self._emit(name, kind, reason)
        return address

    def _detach(self, child: _Child) -> None:
        """Forget the child's current address (the actor is gone or going)."""
        if child.address is None:
            return
        self._names_by_key.pop(child.key, None)
        if self._directory is not None:
            self._directory.unregister(child.spec.name, child.address)
        child.address = None
        child.key = ""

    def _retire(self, child: _Child) -> None:
        """Stop a live child on purpose: its ChildActorExited is then not a crash."""
        address = child.address
        if address is None:
            return
        self._retiring.add(child.key)
        self._detach(child)
        self.send(address, ActorExitRequest())

    def _stop_all(self, reason: str, *, emit: bool) -> None:
        # Reverse start order, as OTP stops children.
        for name in reversed(list(self._children)):
            self._retire(self._children[name])
            if emit:
                self._emit(name, "stopped", reason)
        self._children.clear()

    def _crashed(self, name: str, reason: str, *, failed: bool, alive: bool) -> None:
        child = self._children[name]
        if failed:
            self.on_child_crashed(name, reason)
        else:
            self.on_child_exited(name)
        if alive:
            self._retire(child)
        else:
            self._detach(child)
        restart = child.spec.restart
        # Forgotten before the intensity check: only restarts count toward it.
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not failed):
            del self._children[name]
            self._emit(name, "stopped", reason)
            return
        if self._intensity_exceeded():
            self._escalate(name, f"{name}: {reason}")
            return
        self._restart_count += 1
        names = list(self._children)
        strategy = self._policy.strategy
        if strategy is Strategy.ONE_FOR_ONE:
            affected = [name]
        elif strategy is Strategy.ALL_FOR_ONE:
            affected = names
        else:
            affected = names[names.index(name) :]
        for other in reversed(affected):
            if other != name:
                self._retire(self._children[other])
        cause = f"{name}: {reason}"
        for other in affected:
            if other != name and self._children[other].spec.restart is Restart.TEMPORARY:
                del self._children[other]
                self._emit(other, "stopped", cause)
            else:
                self._start(other, "restarted", cause)

    def _intensity_exceeded(self) -> bool:
        now = time.monotonic()
        self._restarts.append(now)
        horizon = now - self._policy.within
        while self._restarts and self._restarts[0] < horizon:
            self._restarts.popleft()
        return len(self._restarts) > self._policy.max_restarts

    def _escalate(self, child: str, reason: str) -> None:
        self._stopping = True
        self._stop_all(reason, emit=False)
        _log.error("supervisor %s escalates: %s", self._supervisor_name, reason)
        self._emit(child, "gave_up", reason)
        if is_top_level(self):
            self._emit(child, "escalated", reason)
        else:
            self.send(parent_address(self), Escalated(self._supervisor_name, reason))
        self.send(self.myAddress, ActorExitRequest())

    def _emit(self, child: str, kind: EventKind, reason: str) -> None:
        hook = self._on_event
        if hook is None:
            return
        event = SupervisorEvent(self._supervisor_name, self._policy.strategy, child, kind, reason)
        try:
            hook(event)
        except Exception:
            # Observability must not change supervision decisions.
            _log.exception("supervisor %s: on_event hook failed", self._supervisor_name)
