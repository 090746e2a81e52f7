"""Who may connect: the pending-auth caps, the node cap and crash penalties.

One :class:`Admission` per node context (:func:`admission_of`), shared by the
gateway (which knows client addresses: :meth:`Admission.open` and
:meth:`Admission.closed`), the connection supervisor (handshake tokens and
crashes) and the connection actor (a first-frame ``auth`` that succeeded).
Plain bookkeeping, no I/O: callers pass ``now`` and close the socket with
the code they get back.

- A socket without a handshake token is *pending* until its first-frame
  ``auth`` succeeds: at most ``limits.max_pending_auth`` of them per node
  process and ``limits.max_pending_auth_per_address`` per client address.
  The gateway asks :meth:`Admission.check` during the handshake (HTTP 429)
  and :meth:`Admission.open` once upgraded (4031: handshakes run
  concurrently). Pending sockets do not count toward
  ``limits.max_connections_per_node``.
- The node cap counts authenticated connections (of the whole instance, with
  workers): it is applied when a connection authenticates, at the handshake
  or on its first-frame ``auth``, else 4031.
- Crash penalty: ``limits.crash_threshold`` connection-actor crashes of one
  user (of one client address for connections that had not authenticated)
  within ``limits.crash_penalty`` seconds refuse that user's (that address's
  unauthenticated) new connections until ``crash_penalty`` seconds after its
  last crash: HTTP 429 at the handshake, else 4029.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtcs.errors import CloseCode

if TYPE_CHECKING:
    from rtcs.actors.context import NodeContext
    from rtcs.config.settings import LimitsSettings
    from rtcs.workers import ConnectionCounter

__all__ = ["Admission", "Refusal", "admission_of"]

_KEY = "rtcs.admission"
#: Crash records kept before expired ones are swept (bounded memory under a
#: storm from many addresses).
_SWEEP_AT = 4096


@dataclass(frozen=True, slots=True)
class Refusal:
    """A connection is not admitted: close it with ``code`` and ``reason``."""

    code: int
    reason: str


NODE_FULL = Refusal(int(CloseCode.CONNECTION_LIMIT), "connection limit reached")
PENDING_FULL = Refusal(int(CloseCode.CONNECTION_LIMIT), "too many unauthenticated connections")
PENALIZED = Refusal(int(CloseCode.RATE_LIMITED), "too many crashes, retry later")


class Admission:
    """The node's connection bookkeeping. Only used on the event-loop thread."""

    def __init__(self, limits: LimitsSettings, counter: ConnectionCounter | None = None) -> None:
        self._limits = limits
        self._counter = counter
        self._address: dict[str, str] = {}  # connection id -> client address
        self._pending: set[str] = set()
        self._pending_by_address: dict[str, int] = {}
        self._authenticated: set[str] = set()
        # "u:<user>" or "a:<address>" -> recent crash times, and the penalty's end.
        self._crashes: dict[str, deque[float]] = {}
        self._penalized_until: dict[str, float] = {}

    # -- counts ----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Sockets of this process waiting for their first-frame ``auth``."""
        return len(self._pending)

    @property
    def authenticated(self) -> int:
        """Authenticated connections of this process."""
        return len(self._authenticated)

    def authenticated_total(self) -> int:
        """Authenticated connections of the whole instance (every worker)."""
        counter = self._counter
        return len(self._authenticated) if counter is None else counter.total()

    # -- the gateway ----------------------------------------------------------------

    def check(self, address: str, user: str | None, now: float) -> Refusal | None:
        """Would a handshake from ``address`` (with a token of ``user``, or
        none) be refused? The same rules as :meth:`open` and
        :meth:`authenticate` minus the node cap, without counting anything.
        """
        if user is not None:
            return PENALIZED if self._penalized(f"u:{user}", now) else None
        if self._penalized(f"a:{address}", now):
            return PENALIZED
        limits = self._limits
        if len(self._pending) >= limits.max_pending_auth:
            return PENDING_FULL
        if self._pending_by_address.get(address, 0) >= limits.max_pending_auth_per_address:
            return PENDING_FULL
        return None

    def open(
        self, connection_id: str, address: str, *, pending: bool, now: float
    ) -> Refusal | None:
        """A socket from ``address`` was upgraded; ``pending``: it carried no token.

        Returns None when it may proceed (it is then tracked until
        :meth:`closed`), else why not.
        """
        if pending:
            refusal = self.check(address, None, now)
            if refusal is not None:
                return refusal
            self._pending.add(connection_id)
            self._pending_by_address[address] = self._pending_by_address.get(address, 0) + 1
        self._address[connection_id] = address
        return None

    def closed(self, connection_id: str) -> None:
        """The socket is gone (every :meth:`open` that returned None gets one call)."""
        self._unpend(connection_id)
        self._address.pop(connection_id, None)
        if connection_id in self._authenticated:
            self._authenticated.discard(connection_id)
            self._count()

    # -- authentication -------------------------------------------------------------

    def authenticate(self, connection_id: str, user: str, now: float) -> Refusal | None:
        """``user`` authenticated on the connection: count it against the node cap.

        Returns None when admitted (no longer pending), else the refusal: the
        node is full (4031) or the user is serving a crash penalty (4029).
        A connection already authenticated (a token refresh) is admitted.
        """
        if connection_id in self._authenticated:
            return None
        if self._penalized(f"u:{user}", now):
            return PENALIZED
        if self.authenticated_total() >= self._limits.max_connections_per_node:
            return NODE_FULL
        self._unpend(connection_id)
        self._authenticated.add(connection_id)
        self._count()
        return None

    # -- crashes --------------------------------------------------------------------

    def crashed(self, connection_id: str, user: str | None, now: float) -> bool:
        """The connection's actor crashed; returns True when this starts a penalty."""
        if user is not None:
            key = f"u:{user}"
        else:
            address = self._address.get(connection_id)
            if address is None:
                return False
            key = f"a:{address}"
        window = self._limits.crash_penalty
        if len(self._crashes) >= _SWEEP_AT:
            self._sweep(now)
        times = self._crashes.setdefault(key, deque())
        times.append(now)
        while times and times[0] <= now - window:
            times.popleft()
        if len(times) >= self._limits.crash_threshold:
            started = key not in self._penalized_until or self._penalized_until[key] <= now
            self._penalized_until[key] = now + window
            return started
        return False

    def _penalized(self, key: str, now: float) -> bool:
        until = self._penalized_until.get(key)
        if until is None:
            return False
        if until <= now:
            del self._penalized_until[key]
            return False
        return True

    def _sweep(self, now: float) -> None:
        horizon = now - self._limits.crash_penalty
        for key in [k for k, times in self._crashes.items() if not times or times[-1] <= horizon]:
            del self._crashes[key]
        for key in [k for k, until in self._penalized_until.items() if until <= now]:
            del self._penalized_until[key]

    # -- internals ------------------------------------------------------------------

    def _unpend(self, connection_id: str) -> None:
        if connection_id not in self._pending:
            return
        self._pending.discard(connection_id)
        address = self._address.get(connection_id, "")
        left = self._pending_by_address.get(address, 0) - 1
        if left > 0:
            self._pending_by_address[address] = left
        else:
            self._pending_by_address.pop(address, None)

    def _count(self) -> None:
        if self._counter is not None:
            self._counter.set(len(self._authenticated))


def admission_of(ctx: NodeContext) -> Admission:
    """The node's :class:`Admission`, created on first use (kept in ``ctx.extra``)."""
    found = ctx.extra.get(_KEY)
    if isinstance(found, Admission):
        return found
    made = Admission(ctx.settings.limits, ctx.instance)
    ctx.extra[_KEY] = made
    return made


def admit_authenticated(ctx: NodeContext, connection_id: str, user: str) -> Refusal | None:
    """:meth:`Admission.authenticate` with the node's clock (for the connection actor)."""
    return admission_of(ctx).authenticate(connection_id, user, ctx.clock())
