"""Plugins: your own Thespian actors, supervised inside every rtcs node.

A plugin is an actor class named in the configuration::

    [plugins]
    audit = "mypackage.audit:AuditActor"

    [plugins.archive]            # or a table: `actor` plus the plugin's options
    actor = "mypackage.archive:ArchiveActor"
    topics = ["orders.>"]

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
from typing import TYPE_CHECKING, Any

from rtcs.actors.context import (
    RESERVED_NAMES,
    ROUTE_BROADCAST,
    ROUTE_DIRECT,
    ROUTE_ROOM,
    ROUTE_TOPIC,
    NodeContext,
)
from rtcs.actors.context import NodeActor as PluginActor
from rtcs.actors.messages import Configure, RemoteEnvelope, ServerPublish
from rtcs.errors import ConfigError
from rtcs.runtime.actor_system import Actor, ActorAddress, ActorExitRequest, WakeupMessage
from rtcs.runtime.control import Calls
from rtcs.runtime.supervision import ChildSpec, Restart

if TYPE_CHECKING:
    from rtcs.config import Settings

__all__ = [
    "ROUTE_BROADCAST",
    "ROUTE_DIRECT",
    "ROUTE_ROOM",
    "ROUTE_TOPIC",
    "Actor",
    "ActorAddress",
    "ActorExitRequest",
    "Calls",
    "Configure",
    "NodeContext",
    "PluginActor",
    "RemoteEnvelope",
    "ServerPublish",
    "WakeupMessage",
    "load_plugins",
    "resolve",
]

#: Names rtcs's own actors use; a plugin may not take one.
RESERVED = RESERVED_NAMES


def resolve(name: str, target: str) -> type[Actor]:
    """Import ``module:Class`` and check it is an actor class.

    Raises:
        ConfigError: the target is malformed, cannot be imported, or is not a
            Thespian ``Actor`` subclass.
    """
    key = f"plugins.{name}"
    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise ConfigError(key, target, "expected 'package.module:ActorClass'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any failure while importing plugin code is a config error
        reason = f"cannot import {module_name}: {type(exc).__name__}: {exc}"
        raise ConfigError(key, target, reason) from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Actor):
        raise ConfigError(key, target, "not a thespian.actors.Actor subclass")
    return cls


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
    """The child specs of every configured plugin, in configuration order.

    With ``context`` None it only checks the configuration (imports included).

    Raises:
        ConfigError: a reserved name, or a target that :func:`resolve` refuses.
    """
    specs = []
    for name, entry in settings.plugins.items():
        options = dict(entry) if isinstance(entry, Mapping) else {"actor": entry}
        target = options.pop("actor")
        if name in RESERVED or name.startswith("route."):
            raise ConfigError(f"plugins.{name}", target, "this name is reserved by rtcs")
        cls = resolve(name, target)
        _check_options(name, cls, options)
        init = Configure(context, types.MappingProxyType(options)) if context is not None else None
        specs.append(ChildSpec(name, cls, Restart.PERMANENT, init=init))
    return specs
