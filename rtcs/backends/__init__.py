"""Backends behind small Protocols: broker, session store, presence store.

``base`` holds the contracts and the data that crosses them; ``memory`` is the
embedded default. Every implementation runs the conformance suite in
``tests/contract``.
"""

from __future__ import annotations

from rtcs.backends.base import (
    Backends,
    Broker,
    DeliverFn,
    Envelope,
    EnvelopeKind,
    PresenceStore,
    SessionSnapshot,
    SessionStore,
)

__all__ = [
    "Backends",
    "Broker",
    "DeliverFn",
    "Envelope",
    "EnvelopeKind",
    "PresenceStore",
    "SessionSnapshot",
    "SessionStore",
]
