"""What every rtcs actor of a node shares, built once by the composition root.

Actors receive it in their ``Configure`` (or supervisors' ``Supervise``)
message and keep no other global state; a restarted actor gets the same
context and rebuilds its own state from it. :class:`NodeActor` and
:class:`NodeSupervisor` give it to their subclasses (and to plugins) typed,
as ``self.ctx``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from thespian.actors import ActorAddress

from rtcs.actors.messages import Configure
from rtcs.runtime.dispatch import Dispatcher
from rtcs.runtime.supervision import Supervisor

if TYPE_CHECKING:
    from rtcs.auth.permissions import Policy
    from rtcs.auth.tokens import TokenVerifier
    from rtcs.backends.base import Backends
    from rtcs.backends.writebehind import BackgroundCalls, SessionWriteBehind
    from rtcs.config import Settings
    from rtcs.metrics import Metrics
    from rtcs.revocations import Revoker
    from rtcs.rules import RuleSet
    from rtcs.runtime.directory import Directory
    from rtcs.sessions import SessionRegistry
    from rtcs.workers import ConnectionCounter


# Supervisor names: also the keys of ``[supervision.<name>]`` (rtcs.config.SUPERVISORS).
SYSTEM = "system"
SERVER = "server"
CONNECTIONS = "connections"
ROUTER = "router"
METRICS = "metrics"
PLUGINS = "plugins"
# Directory names of the routing actors; connection actors look them up on
# every request, since addresses change when an actor restarts.
ROUTE_TOPIC = "route.topic"
ROUTE_DIRECT = "route.direct"
ROUTE_ROOM = "route.room"
ROUTE_BROADCAST = "route.broadcast"
STATS = "stats"

SUPERVISOR_NAMES = (SYSTEM, SERVER, CONNECTIONS, ROUTER, METRICS, PLUGINS)
ROUTE_HANDLERS = (ROUTE_TOPIC, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_BROADCAST)
#: Names rtcs's own actors use: a plugin may not take one.
RESERVED_NAMES = frozenset((*SUPERVISOR_NAMES, *ROUTE_HANDLERS, STATS))


def _background() -> BackgroundCalls:
    from rtcs.backends.writebehind import BackgroundCalls

    return BackgroundCalls()


@dataclass(eq=False)
class NodeContext:
    """The node's shared services. Only touched on the event-loop thread."""

    settings: Settings
    node_id: str
    metrics: Metrics
    backends: Backends
    policy: Policy
    verifier: TokenVerifier
    directory: Directory
    sessions: SessionRegistry
    log: Any
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    # Set when sessions are shared with other nodes (a distributed backend):
    # detached sessions are then written behind to the shared session store.
    write_behind: SessionWriteBehind | None = None
    # Fire-and-forget backend updates (presence of connections).
    background: BackgroundCalls = field(default_factory=lambda: _background())
    shutting_down: bool = False
    # Open connections of the whole instance (every worker process), for the
    # per-node connection limit; None counts this process only.
    instance: ConnectionCounter | None = None
    # True while the shared backend's circuit breaker is not closed
    # (docs/protocol.md, "Degraded mode").
    degraded: bool = False
    # Revocations applied on this node (the verifier consults the table) and
    # the service that records and polls them (docs/security.md, "Revocation").
    revoker: Revoker | None = None
    # The routing rules in use (docs/rules.md), None without a rules file; a
    # reload replaces their contents in place (RuleSet.replace).
    rules: RuleSet | None = None
    # The route-handler plugins, in configuration order (docs/plugins.md).
    route_plugins: tuple[RoutePluginSpec, ...] = ()
    # Runs a callback once the frames pushed so far have been written (the
    # gateway's Coalescer.after_flush); at once without a gateway.
    after_write: Callable[[Callable[[], None]], None] = field(default=lambda done: done())
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoutePluginSpec:
    """A route-handler plugin as the topic route handler knows it.

    ``name`` is its directory name; ``topics`` the patterns of the publishes
    it sees; ``timeout`` the seconds it has to answer one.
    """

    name: str
    topics: tuple[str, ...]
    timeout: float


class NotConfigured(RuntimeError):
    """An actor was used before it received its node context (a bug, not a client fault)."""


class NodeActor(Dispatcher):
    """Base of rtcs's actors that are not supervisors, and of plugins.

    Its first message is :class:`~rtcs.actors.messages.Configure` (sent by
    its supervisor after every (re)start): the context becomes ``self.ctx``,
    the options ``self.options``, then :meth:`configured` runs. A subclass
    overriding ``receiveMsg_Configure`` must call this one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._ctx: NodeContext | None = None
        self.options: Mapping[str, Any] = {}

    @property
    def ctx(self) -> NodeContext:
        """The node context.

        Raises:
            NotConfigured: before ``Configure`` arrived.
        """
        ctx = self._ctx
        if ctx is None:
            raise NotConfigured(f"{type(self).__name__} has no node context yet")
        return ctx

    @property
    def configured_yet(self) -> bool:
        """True once the node context arrived."""
        return self._ctx is not None

    def receiveMsg_Configure(self, msg: Configure, sender: ActorAddress) -> None:
        self._ctx = msg.context
        self.options = msg.options
        self.configured()

    def configured(self) -> None:
        """Hook: ``self.ctx`` and ``self.options`` are set (after every (re)start)."""


class NodeSupervisor(Supervisor):
    """A supervisor whose ``Supervise.context`` is the node context, typed as ``self.ctx``."""

    @property
    def ctx(self) -> NodeContext:
        """The node context.

        Raises:
            NotConfigured: before ``Supervise`` arrived (or it carried no node context).
        """
        context = self.context
        if not isinstance(context, NodeContext):
            raise NotConfigured(f"{type(self).__name__} has no node context")
        return context
