"""Plugins: your own Thespian actors, supervised inside every rtcs node.

A plugin is an actor class named in the configuration::

    [plugins]
    audit = "mypackage.audit:AuditActor"

    [plugins.archive]            # or a table: `actor` plus the plugin's options
    actor = "mypackage.archive:ArchiveActor"
    topics = ["orders.>"]

or an installed package's plugin, found by name among the entry points of
the ``rtcs.plugins`` group and started only when the configuration names it::

    [plugins]
    census = true                # the entry point ``census``, no options

    [plugins.census]             # or a table: its options (no ``actor``)
    interval = 2.0
    enabled = false              # any entry can be switched off, options kept

Each one is started under the ``plugins`` supervisor (one-for-one by default,
``[supervision.plugins]``) as a permanent child with the plugin's name,
registered in the node's directory under that name, and sent
``Configure(context, options)`` as its first message, again after every
restart. The ``NodeContext`` gives it the settings, metrics, backends, the
directory (to find the route handlers by name) and the session registry.

This module is the one place plugin authors import from: :class:`PluginActor`
(a Thespian actor with ``self.ctx`` and ``self.options`` typed, and a
``configured()`` hook), the messages a plugin may send or receive, and the
directory names of the route handlers. See docs/plugins.md.
"""

from __future__ import annotations

import importlib
import types
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from rtcs.actors.context import (
    RESERVED_NAMES,
    ROUTE_BROADCAST,
    ROUTE_DIRECT,
    ROUTE_ROOM,
    ROUTE_TOPIC,
    NodeContext,
    RoutePluginSpec,
)
from rtcs.actors.context import NodeActor as PluginActor
from rtcs.actors.messages import (
    KEEP,
    Configure,
    Decision,
    RemoteEnvelope,
    RouteDecision,
    RouteRequest,
    ServerPublish,
)
from rtcs.errors import BadTopic, ConfigError
from rtcs.protocol.topics import validate_pattern
from rtcs.runtime.actor_system import Actor, ActorAddress, ActorExitRequest, WakeupMessage
from rtcs.runtime.control import Calls
from rtcs.runtime.supervision import ChildSpec, Restart

if TYPE_CHECKING:
    from rtcs.config import Settings

__all__ = [
    "GROUP",
    "KEEP",
    "ROUTE_BROADCAST",
    "ROUTE_DIRECT",
    "ROUTE_ROOM",
    "ROUTE_TOPIC",
    "Actor",
    "ActorAddress",
    "ActorExitRequest",
    "Calls",
    "Configure",
    "Decision",
    "NodeContext",
    "PluginActor",
    "RemoteEnvelope",
    "RoutePlugin",
    "RouteRequest",
    "ServerPublish",
    "WakeupMessage",
    "installed",
    "load_plugins",
    "resolve",
]

#: The entry-point group through which installed packages offer plugins.
GROUP = "rtcs.plugins"

#: Names rtcs's own actors use; a plugin may not take one.
RESERVED = RESERVED_NAMES


#: Seconds a route plugin has to answer a publish, unless it sets ``timeout``.
DEFAULT_ROUTE_TIMEOUT = 5.0
#: The longest ``timeout`` a route plugin may set.
MAX_ROUTE_TIMEOUT = 60.0


class RoutePlugin(PluginActor):
    """A route-handler plugin: sees the publishes on its topics, decides what happens.

    Subclass it and override :meth:`route`. ``topics`` (patterns) and
    ``timeout`` (seconds to answer one publish) are class attributes that
    the plugin's options ``topics`` and ``timeout`` override. The topic
    route handler asks the plugin about every publish on a matching topic
    (after the routing rules), one at a time per publisher; see
    docs/plugins.md, "Route-handler plugins".
    """

    topics: tuple[str, ...] = ()
    timeout: float = DEFAULT_ROUTE_TIMEOUT

    def receiveMsg_RouteRequest(self, msg: RouteRequest, sender: ActorAddress) -> None:
        # An exception in route() fails this publish ("internal") and is
        # logged, but does not crash the plugin: route() runs on client data,
        # and a client able to make it raise would otherwise restart the
        # plugins, then the server (supervisor intensity), at will.
        try:
            decision = self.route(msg)
        except Exception:
            self.ctx.log.error(
                "route plugin raised", plugin=type(self).__name__, topic=msg.topic, exc_info=True
            )
            self.send(msg.reply_to, RouteDecision(msg.request, msg.step, None, "crashed"))
            return
        if decision is not None:
            self.decide(msg, decision)

    def route(self, message: RouteRequest) -> Decision | None:
        """Decide about one publish: deliver (maybe changed), drop, answer, fan out.

        Return ``None`` to decide later (after a backend call, say) with
        :meth:`decide`. If it raises, the publisher gets ``internal``, the
        exception is logged, and the plugin goes on (it is not restarted).
        The default delivers the message unchanged.
        """
        return Decision()

    def decide(self, message: RouteRequest, decision: Decision) -> None:
        """Answer ``message`` with ``decision`` (once; later answers are ignored)."""
        self.send(message.reply_to, RouteDecision(message.request, message.step, decision))


def _route_spec(name: str, cls: type[RoutePlugin], options: Mapping[str, Any]) -> RoutePluginSpec:
    """The route handler's view of a route plugin: its topics and timeout.

    Raises:
        ConfigError: naming ``plugins.<name>.topics`` or ``.timeout``.
    """
    topics = options.get("topics", cls.topics)
    if not isinstance(topics, (list, tuple)) or not topics:
        raise ConfigError(
            f"plugins.{name}.topics", topics, "a route plugin needs a non-empty list of topics"
        )
    for pattern in topics:
        try:
            validate_pattern(pattern)
        except BadTopic:
            raise ConfigError(
                f"plugins.{name}.topics", pattern, "not a topic or topic pattern"
            ) from None
    timeout = options.get("timeout", cls.timeout)
    if (
        isinstance(timeout, bool)
        or not isinstance(timeout, (int, float))
        or not 0 < timeout <= MAX_ROUTE_TIMEOUT
    ):
        raise ConfigError(
            f"plugins.{name}.timeout", timeout, f"must be seconds in (0, {MAX_ROUTE_TIMEOUT:g}]"
        )
    return RoutePluginSpec(name, tuple(topics), float(timeout))


def resolve(name: str, target: str) -> type[Actor]:
    """Import ``module:Class`` and check it is an actor class.

    Raises:
        ConfigError: the target is malformed, cannot be imported, or is not a
            Thespian ``Actor`` subclass.
    """
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise ConfigError(f"plugins.{name}", target, "expected 'package.module:ActorClass'")
    return _import_class(name, target, module_name, class_name, "")


def _import_class(name: str, shown: str, module_name: str, attr: str, where: str) -> type[Actor]:
    """Import ``module_name``, follow the dotted ``attr``, check it is an actor class.

    ``where`` prefixes the reason (``"entry point ...: "`` or nothing).

    Raises:
        ConfigError: naming ``plugins.<name>``, the import failure or the wrong type.
    """
    key = f"plugins.{name}"
    try:
        found: object = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing plugin code is a config error
        reason = f"{where}cannot import {module_name}: {type(exc).__name__}: {exc}"
        raise ConfigError(key, shown, reason) from None
    for part in attr.split("."):
        found = getattr(found, part, None)
    if not isinstance(found, type) or not issubclass(found, Actor):
        raise ConfigError(key, shown, f"{where}not a thespian.actors.Actor subclass")
    return found


def installed() -> dict[str, list[EntryPoint]]:
    """The installed packages' plugins: entry points of :data:`GROUP`, by name.

    Reading them imports nothing. A name offered by several distributions
    lists every offer.
    """
    found: dict[str, list[EntryPoint]] = {}
    for entry_point in entry_points(group=GROUP):
        found.setdefault(entry_point.name, []).append(entry_point)
    return found


def _describe(entry_point: EntryPoint) -> str:
    dist = entry_point.dist
    package = f"{dist.name} {dist.version}, " if dist is not None else ""
    return f"entry point {entry_point.name} = {entry_point.value} ({package}group {GROUP})"


def _from_entry_point(name: str, offers: Mapping[str, list[EntryPoint]]) -> type[Actor]:
    """The actor class of the installed plugin ``name``.

    Raises:
        ConfigError: naming ``plugins.<name>``: no installed package offers it,
            several do, or the entry point is broken (cannot be imported, or
            is not an actor class), naming the entry point and its package.
    """
    key = f"plugins.{name}"
    found = offers.get(name, [])
    if not found:
        known = ", ".join(sorted(offers)) or "none"
        raise ConfigError(
            key,
            True,
            f"no installed package has an entry point {name!r} in group {GROUP}"
            f" (installed: {known}); install it, or set actor = 'package.module:ActorClass'",
        )
    if len({entry_point.value for entry_point in found}) > 1:
        offered = "; ".join(_describe(entry_point) for entry_point in found)
        raise ConfigError(
            key, True, f"several installed packages offer it: {offered}; set actor to choose one"
        )
    entry_point = found[0]
    where = f"{_describe(entry_point)}: "
    if not entry_point.attr:
        raise ConfigError(
            key, entry_point.value, f"{where}names a module, expected 'package.module:ActorClass'"
        )
    return _import_class(name, entry_point.value, entry_point.module, entry_point.attr, where)


def _parse(entry: Any) -> tuple[str | None, bool, dict[str, Any]]:
    """Split one ``[plugins]`` value into ``(class target, enabled, options)``.

    The value is ``"module:Class"``, ``true``/``false`` (the installed plugin
    of that name, no options) or a table (``actor`` optional: without it, the
    installed plugin; ``enabled`` optional, true by default; the rest are the
    options). rtcs.config.validation has checked the types.
    """
    if isinstance(entry, bool):
        return None, entry, {}
    if isinstance(entry, Mapping):
        options = dict(entry)
        return options.pop("actor", None), bool(options.pop("enabled", True)), options
    return str(entry), True, {}


def _check_options(name: str, cls: type[Actor], options: Mapping[str, Any]) -> None:
    """Let the plugin refuse bad options before start-up, if it wants to.

    A plugin class may define ``validate_options(options) -> None`` (a
    classmethod or staticmethod) raising ``ValueError("option: reason")``; the
    first refusal stops start-up with a ConfigError naming
    ``plugins.<name>``.
    """
    validate = getattr(cls, "validate_options", None)
    if validate is None:
        return
    try:
        validate(types.MappingProxyType(dict(options)))
    except ValueError as exc:
        raise ConfigError(f"plugins.{name}", dict(options), str(exc)) from None


def load_plugins(settings: Settings, context: NodeContext | None) -> list[ChildSpec]:
    """The child specs of every enabled plugin, in configuration order.

    An entry with a class (``"module:Class"`` or ``actor``) is imported from
    it; one without (``name = true``, or a table without ``actor``) is the
    installed package's plugin: the entry point ``name`` of :data:`GROUP`.
    Installed plugins the configuration does not name are not started (with a
    ``context``, each is logged once at info level). With ``context`` None it
    only checks the configuration (imports included). With a ``context``,
    ``context.route_plugins`` becomes the :class:`RoutePlugin` subclasses'
    specs, in configuration order.

    Raises:
        ConfigError: a reserved name, a target that :func:`resolve` refuses,
            an entry point that is missing, ambiguous or broken, options
            the plugin's ``validate_options`` refuses, or a route plugin's
            bad ``topics`` or ``timeout``.
    """
    specs = []
    routes = []
    offers = installed()
    for name, entry in settings.plugins.items():
        target, enabled, options = _parse(entry)
        if name in RESERVED or name.startswith("route."):
            shown = entry if target is None else target
            raise ConfigError(f"plugins.{name}", shown, "this name is reserved by rtcs")
        if not enabled:
            continue
        cls = _from_entry_point(name, offers) if target is None else resolve(name, target)
        _check_options(name, cls, options)
        if issubclass(cls, RoutePlugin):
            routes.append(_route_spec(name, cls, options))
        init = Configure(context, types.MappingProxyType(options)) if context is not None else None
        specs.append(ChildSpec(name, cls, Restart.PERMANENT, init=init))
    if context is not None:
        context.route_plugins = tuple(routes)
        for name, found in sorted(offers.items()):
            if name not in settings.plugins:
                described = "; ".join(_describe(entry_point) for entry_point in found)
                context.log.info("plugin installed, not enabled", plugin=name, offer=described)
    return specs
