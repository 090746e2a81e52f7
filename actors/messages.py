"""Messages exchanged by rtcs actors, and between the gateway and actors.

Every message is a slotted dataclass, frozen except the few built for every
client frame (``ClientText``, ``RoutePublish``: freezing costs about 1 µs per
message there), which are immutable by convention; Thespian's
``ActorTypeDispatcher`` dispatches on the class name (``receiveMsg_<Name>``),
so names are unique across rtcs. Messages are passed by reference inside one
process (the asyncio-driven base never pickles), which is why some carry live
objects such as a ``Session`` or the gateway's connection handle.

Results of backend calls are not messages of their own: an actor continues
with a typed callback (``rtcs.runtime.control.Calls.call``). Timer payloads
are one class per timer, so a handler tells them apart by type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rtcs.protocol.frames import BroadcastFilter, DropReason, RequestId

if TYPE_CHECKING:
    from thespian.actors import ActorAddress

    from rtcs.actors.context import NodeContext
    from rtcs.actors.ports import ClientHandle
    from rtcs.auth.extract import HandshakeAuth
    from rtcs.auth.tokens import Identity
    from rtcs.backends.base import Envelope
    from rtcs.sessions import Session


# -- set-up ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Configure:
    """First message of every non-supervisor actor: its dependencies.

    ``options`` carries a plugin's own settings (its ``[plugins.<name>]``
    table without ``actor``); empty for rtcs's own actors.
    """

    context: NodeContext
    options: Mapping[str, Any] = field(default_factory=dict)


# -- gateway -> connection supervisor / connection actor --------------------


@dataclass(frozen=True, slots=True)
class OpenConnection:
    """A socket was upgraded; start its connection actor.

    ``identity`` is set when the handshake carried a valid token; otherwise
    the connection actor waits for a first-frame ``auth``.
    """

    handle: ClientHandle
    auth: HandshakeAuth
    identity: Identity | None


@dataclass(frozen=True, slots=True)
class StartConnection:
    """First message of a connection actor: its context and its socket."""

    context: NodeContext
    open: OpenConnection


@dataclass(slots=True)
class ClientText:
    """One text frame from the client, undecoded.

    Not frozen (one per client frame: a frozen dataclass costs about 1 µs
    more to build); treat it as immutable, like every message.
    """

    text: str
    #: ``time.perf_counter()`` when the gateway had the whole frame: where
    #: ``rtcs_routing_seconds`` starts (0.0: unknown, the handler's turn).
    received: float = 0.0


@dataclass(frozen=True, slots=True)
class SocketClosed:
    """The socket is gone (client close, network loss or server close)."""

    code: int | None


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Node shutdown: close every client with ``code`` (1001)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Drain:
    """Node shutdown, spread out: close every client with ``code``, the last
    ones ``within`` seconds from now (docs/operations.md, "Shutdown")."""

    code: int
    reason: str
    within: float


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """The shared backend became unavailable (``degraded``) or available again."""

    degraded: bool


# -- connection actor -> route handlers -------------------------------------


@dataclass(frozen=True, slots=True)
class RouteSubscribe:
    session: Session
    pattern: str
    request_id: RequestId


@dataclass(frozen=True, slots=True)
class ServerPublish:
    """A message published by the server itself (plugins), not by a client.

    Delivered to the topic's subscribers without a ``from``; with
    ``local_only`` it stays on this node, else it also goes to the broker.
    """

    topic: str
    data: Any
    local_only: bool = False


@dataclass(frozen=True, slots=True)
class RouteUnsubscribe:
    """A client's ``unsubscribe``, or (``reason`` set) the server dropping a
    subscription the session's roles no longer allow."""

    session: Session
    pattern: str
    request_id: RequestId
    reason: DropReason | None = None


@dataclass(slots=True)
class RoutePublish:
    """A client's publish, to the topic route handler. Not frozen, as :class:`ClientText`."""

    session: Session
    topic: str
    data: Any
    request_id: RequestId
    received: float = 0.0  # as ClientText.received


@dataclass(frozen=True, slots=True)
class RouteDirect:
    session: Session
    to_user: str | None
    to_connection: str | None
    data: Any
    request_id: RequestId
    received: float = 0.0  # as ClientText.received


@dataclass(frozen=True, slots=True)
class RouteJoin:
    session: Session
    room: str
    request_id: RequestId


@dataclass(frozen=True, slots=True)
class RouteLeave:
    """A client's ``leave``, or (``reason`` set) the server dropping a room
    membership the session's roles no longer allow."""

    session: Session
    room: str
    request_id: RequestId
    reason: DropReason | None = None


@dataclass(frozen=True, slots=True)
class RouteRoomBroadcast:
    session: Session
    room: str
    data: Any
    request_id: RequestId
    received: float = 0.0  # as ClientText.received


@dataclass(frozen=True, slots=True)
class RouteWideBroadcast:
    """A global (``filter`` None) or filtered broadcast."""

    session: Session
    filter: BroadcastFilter | None
    data: Any
    request_id: RequestId
    received: float = 0.0  # as ClientText.received


@dataclass(frozen=True, slots=True)
class RoutePresence:
    session: Session
    room: str | None
    user: str | None
    request_id: RequestId


@dataclass(frozen=True, slots=True)
class IndexSession:
    """Index a (resumed or restored) session's subscriptions and rooms."""

    session: Session


@dataclass(frozen=True, slots=True)
class UnindexSession:
    """Remove an expired session from every routing index."""

    session: Session


@dataclass(frozen=True, slots=True)
class SessionMoved:
    """A shared session's stored record is gone or another node's: forget the
    local copy if detached.

    ``owned_elsewhere``: the record belongs to another node (the client
    resumed there). A crash-safe session still attached here then loses its
    connection too (closed with 1000) and is never saved from here again.
    """

    session_id: str
    owned_elsewhere: bool = False


@dataclass(frozen=True, slots=True)
class SessionAbsent:
    """An attached crash-safe session has no stored record (the store lost it,
    e.g. Redis restarted empty): save it again."""

    session_id: str


@dataclass(frozen=True, slots=True)
class SessionPresence:
    """A session attached (``online``) or detached: update room presence."""

    session: Session
    online: bool


# -- topic route handler <-> route-handler plugins (rtcs.plugins.RoutePlugin) ----


class _Keep:
    """The type of :data:`KEEP`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "KEEP"


#: A :class:`Decision` field left as it is: the data as received, no answer.
KEEP: Any = _Keep()


@dataclass(frozen=True, slots=True)
class Decision:
    """What a route-handler plugin decided about one publish (docs/plugins.md).

    - ``data``: the data to deliver instead (:data:`KEEP`: as received);
    - ``drop``: deliver it to nobody (the publisher is still acked);
    - ``answer``: a JSON value sent to the publisher alone, as a ``message``
      on the publish's topic, before its ``ack`` (:data:`KEEP`: none);
    - ``publish``: more messages, ``(topic, data)`` pairs, delivered from the
      same sender like publishes, without rules or route plugins.
    """

    data: Any = KEEP
    drop: bool = False
    answer: Any = KEEP
    publish: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """One publish a route-handler plugin sees; answer with :class:`RouteDecision`.

    ``user`` and ``roles`` are the publisher's; ``session`` its session id.
    ``data`` is the data as left by the rules and the plugins before this
    one: never mutate it, return a :class:`Decision` with new data instead.
    ``reply_to``, ``request`` and ``step`` address the answer.
    """

    topic: str
    data: Any
    user: str
    roles: tuple[str, ...]
    session: str
    reply_to: ActorAddress
    request: int
    step: int


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """A route-handler plugin's answer to the :class:`RouteRequest` it names.

    ``failure`` set (``decision`` then None): the plugin could not decide
    (``route`` raised: ``"crashed"``); the publisher gets ``internal``.
    """

    request: int
    step: int
    decision: Decision | None
    failure: str = ""


@dataclass(frozen=True, slots=True)
class RemoteEnvelope:
    """A message from another node, delivered locally by a route handler."""

    envelope: Envelope


# -- timers (``wakeupAfter`` payloads) -------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthDeadline:
    """A connection without a token must have sent ``auth`` by now (else 4001)."""


@dataclass(frozen=True, slots=True)
class CheckDue:
    """A connection's one timer: token expiry, then inactivity.

    ``generation`` voids a timer that a later one replaced (Thespian timers
    cannot be cancelled).
    """

    generation: int


@dataclass(frozen=True, slots=True)
class ReapDue:
    """The connection supervisor expires detached sessions whose TTL ran out."""


@dataclass(frozen=True, slots=True)
class DrainDue:
    """The connection supervisor closes the next batch of a spread-out shutdown."""


@dataclass(frozen=True, slots=True)
class SampleDue:
    """The metrics collector samples gauges and measures the loop lag."""


@dataclass(frozen=True, slots=True)
class RouteSweep:
    """The topic route handler fails the publishes whose route plugin is past its timeout."""


@dataclass(frozen=True, slots=True)
class FanoutContinue:
    """Wakeup payload: a route handler resumes a large fan-out (next loop turn)."""


# -- metrics --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatsSample:
    """A periodic sample of node counters, for the stats aggregator."""

    at: float
    connections: int
    sessions: int
    detached: int
    messages_in: float
    deliveries: float
