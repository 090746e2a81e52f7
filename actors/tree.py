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

Once the tree is up, the root publishes a read-only view of it
(:func:`tree_view_of`: ``GET /admin/status``) and feeds
``rtcs_actor_mailbox_messages`` from it; :data:`ACTOR_KINDS` names the kind
each actor class is reported under.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rtcs.actors.connection import WebSocketActor
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
from rtcs.runtime.control import base_of
from rtcs.runtime.introspect import TreeView
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
    """The root: supervises the server; its escalation stops the node.

    Once started, it publishes the view of the tree (:func:`tree_view_of`)
    and the mailbox gauge's source. It never restarts (nothing supervises
    it), so it does that once.
    """

    def on_started(self) -> None:
        ctx = self.context
        if not isinstance(ctx, NodeContext):
            return
        try:
            base = base_of(self)
        except RuntimeError:
            return  # Thespian's stock base (unit tests of actor logic): nothing to view
        view = TreeView(base, self.myAddress, actor_kind)
        ctx.extra[_VIEW] = view
        ctx.metrics.watch_mailboxes(view.mailboxes)


class ServerActor(_Supervisor):
    """The node: connections, routing, metrics and plugins subsystems."""


class PluginSupervisor(_Supervisor):
    """Supervises plugin actors apart from rtcs's own (``[supervision.plugins]``)."""


#: The kind each of rtcs's actor classes is reported under (rtcs.metrics.ACTOR_KINDS).
ACTOR_KINDS: dict[type, str] = {
    SystemSupervisor: SYSTEM,
    ServerActor: SERVER,
    ConnectionSupervisor: CONNECTIONS,
    WebSocketActor: "connection",
    RoutingSupervisor: ROUTER,
    TopicHandler: ROUTE_TOPIC,
    DirectHandler: ROUTE_DIRECT,
    RoomHandler: ROUTE_ROOM,
    BroadcastHandler: ROUTE_BROADCAST,
    MetricsCollector: METRICS,
    StatsAggregator: STATS,
    PluginSupervisor: PLUGINS,
}
#: The kind of every other actor: those of plugins (and what they start).
PLUGIN_KIND = "plugin"

_VIEW = "rtcs.actors.tree.view"


def actor_kind(actor_class: type) -> str:
    """The kind ``actor_class`` is reported under: :data:`ACTOR_KINDS`, else "plugin"."""
    return ACTOR_KINDS.get(actor_class, PLUGIN_KIND)


def tree_view_of(ctx: NodeContext) -> TreeView | None:
    """The view of the node's actor tree (kept in ``ctx.extra``), once its root has started."""
    view = ctx.extra.get(_VIEW)
    return view if isinstance(view, TreeView) else None


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
