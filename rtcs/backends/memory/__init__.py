"""In-memory backends: the embedded single-node default, and simulated nodes.

``memory_backends()`` gives one node everything it needs. Passing one shared
``MemoryHub`` to several calls builds simulated nodes of one cluster in a
process: their brokers reach each other and they share sessions and presence,
as nodes sharing a Redis server would.
"""

from __future__ import annotations

from rtcs.backends.base import Backends
from rtcs.backends.memory.broker import MemoryBroker, MemoryHub
from rtcs.backends.memory.presence import MemoryPresenceStore
from rtcs.backends.memory.revocations import MemoryRevocationStore
from rtcs.backends.memory.sessions import MemorySessionStore

__all__ = [
    "MemoryBroker",
    "MemoryHub",
    "MemoryPresenceStore",
    "MemoryRevocationStore",
    "MemorySessionStore",
    "memory_backends",
]


def memory_backends(hub: MemoryHub | None = None) -> Backends:
    """Build the backends of one node.

    Without ``hub``: a non-distributed broker and private stores (single node).
    With ``hub``: a broker on the hub and the hub's shared stores, so every
    node built from the same hub sees the same sessions and presence.
    """
    if hub is None:
        return Backends(
            broker=MemoryBroker(),
            sessions=MemorySessionStore(),
            presence=MemoryPresenceStore(),
            revocations=MemoryRevocationStore(),
        )
    return Backends(
        broker=MemoryBroker(hub),
        sessions=hub.sessions,
        presence=hub.presence,
        revocations=hub.revocations,
    )
