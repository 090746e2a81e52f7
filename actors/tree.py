"""The top of the actor tree, and the tree itself.

::

    SystemSupervisor                      (one-for-one by default)
      ServerActor                         (rest-for-one by default)
        ConnectionSupervisor              (one-for-one) -> WebSocketActor x N (temporary)
        RoutingSupervisor ("router")      (all-for-one) -> Topic/Direct/Room/Broadcast handlers
        MetricsCollector                  (all-for-one) -> StatsAggregator
        PluginSupervisor                  (one-for-one) -> your plugin actors

Which supervisor uses which strategy and restart intensity is configuration
(``[supervision]``). Plugins are configured in ``[plugins]`` (``rtcs.plugins``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rtcs.actors.connection_supervisor import ConnectionSupervisor
from rtcs.actors.context import (
    CONNECTIONS,
    METRICS,
    PLUGINS,
    ROUTE_BROADCAST,
    ROUTE_DIRECT,
    ROUTE_ROOM,
    ROUTE_TOPIC,
    ROUTER,
    SERVER,
    STATS,
    SYSTEM,
    NodeContext,
)
from rtcs.actors.messages import Configure
from rtcs.actors.routing import (
    BroadcastHandler,
    DirectHandler,
    RoomHandler,
    RoutingSupervisor,
    TopicHandler,
)
from rtcs.actors.stats import MetricsCollector, StatsAggregator
from rtcs.runtime.supervision import (
    ChildSpec,
    Restart,
    Strategy,
    Supervise,
    SupervisorEvent,
    SupervisorPolicy,
)
from rtcs.runtime.supervision import Supervisor as _Supervisor


class SystemSupervisor(_Supervisor):
    """The root: supervises the server; its escalation stops the node."""


class ServerActor(_Supervisor):
    """The node: connections, routing, metrics and plugins subsystems."""


class PluginSupervisor(_Supervisor):
    """Supervises plugin actors apart from rtcs's own (``[supervision.plugins]``)."""


def _policy(ctx: NodeContext, name: str) -> SupervisorPolicy:
    entry = getattr(ctx.settings.supervision, name)
    return SupervisorPolicy(Strategy(entry.strategy), entry.max_restarts, entry.within)


def build_tree(
    ctx: NodeContext,
    on_event: Callable[[SupervisorEvent], None],
    plugins: Sequence[ChildSpec] = (),
) -> Supervise:
    """The ``Supervise`` message that starts the whole tree under the root."""

    def supervise(name: str, children: tuple[ChildSpec, ...]) -> Supervise:
        return Supervise(
            name=name,
            policy=_policy(ctx, name),
            children=children,
            directory=ctx.directory,
            on_event=on_event,
            context=ctx,
        )

    configure = Configure(ctx)
    router = supervise(
        ROUTER,
        (
            ChildSpec(ROUTE_TOPIC, TopicHandler, Restart.PERMANENT, init=configure),
            ChildSpec(ROUTE_DIRECT, DirectHandler, Restart.PERMANENT, init=configure),
            ChildSpec(ROUTE_ROOM, RoomHandler, Restart.PERMANENT, init=configure),
            ChildSpec(ROUTE_BROADCAST, BroadcastHandler, Restart.PERMANENT, init=configure),
        ),
    )
    metrics = supervise(
        METRICS, (ChildSpec(STATS, StatsAggregator, Restart.PERMANENT, init=configure),)
    )
    server = supervise(
        SERVER,
        (
            ChildSpec(
                CONNECTIONS,
                ConnectionSupervisor,
                Restart.PERMANENT,
                init=supervise(CONNECTIONS, ()),
            ),
            ChildSpec(ROUTER, RoutingSupervisor, Restart.PERMANENT, init=router),
            ChildSpec(METRICS, MetricsCollector, Restart.PERMANENT, init=metrics),
            ChildSpec(
                PLUGINS,
                PluginSupervisor,
                Restart.PERMANENT,
                init=supervise(PLUGINS, tuple(plugins)),
            ),
        ),
    )
    return supervise(SYSTEM, (ChildSpec(SERVER, ServerActor, Restart.PERMANENT, init=server),))
