"""Plugins: your own Thespian actors, supervised inside every rtcs node.

A plugin is an actor class named in the configuration::

    [plugins]
    audit = "mypackage.audit:AuditActor"

Each one is started under the ``ServerActor`` as a permanent child with the
plugin's name, registered in the node's directory under that name, and sent
``actors.messages.Configure(context)`` as its first message; the
``NodeContext`` gives it the settings, metrics, backends, the directory (to
find the route handlers by name) and the session registry. It is restarted
by the server's strategy like any built-in subsystem.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from thespian.actors import Actor

from actors.messages import Configure
from rtcs.errors import ConfigError
from rtcs.runtime.supervision import ChildSpec, Restart

if TYPE_CHECKING:
    from actors.context import NodeContext
    from rtcs.config import Settings

RESERVED = {"system", "server", "connections", "router", "metrics", "stats"}


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
    except ImportError as exc:
        raise ConfigError(key, target, f"cannot import {module_name}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, Actor):
        raise ConfigError(key, target, "not a thespian.actors.Actor subclass")
    return cls


def load_plugins(settings: Settings, context: NodeContext) -> list[ChildSpec]:
    """The child specs of every configured plugin, in configuration order."""
    specs = []
    for name, target in settings.plugins.items():
        if name in RESERVED or name.startswith("route."):
            raise ConfigError(f"plugins.{name}", target, "this name is reserved by rtcs")
        specs.append(
            ChildSpec(name, resolve(name, target), Restart.PERMANENT, init=Configure(context))
        )
    return specs
