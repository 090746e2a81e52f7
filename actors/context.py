"""What every rtcs actor of a node shares, built once by the composition root.

Actors receive it in their ``Configure`` (or supervisors' ``Supervise``)
message and keep no other global state; a restarted actor gets the same
context and rebuilds its own state from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rtcs.auth.permissions import Policy
    from rtcs.auth.tokens import TokenVerifier
    from rtcs.backends.base import Backends
    from rtcs.backends.writebehind import BackgroundCalls, SessionWriteBehind
    from rtcs.config import Settings
    from rtcs.metrics import Metrics
    from rtcs.runtime.directory import Directory
    from rtcs.sessions import SessionRegistry


# Directory names of the routing actors; connection actors look them up on
# every request, since addresses change when an actor restarts.
ROUTE_TOPIC = "route.topic"
ROUTE_DIRECT = "route.direct"
ROUTE_ROOM = "route.room"
ROUTE_BROADCAST = "route.broadcast"
CONNECTIONS = "connections"
ROUTER = "router"
METRICS = "metrics"
PLUGINS = "plugins"
STATS = "stats"


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
    extra: dict[str, Any] = field(default_factory=dict)
