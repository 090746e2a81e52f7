"""The HTTP API for services: publish, direct messages and broadcasts without a WebSocket.

A backend service delivers to connected clients with one ``POST`` on the
service port. Each endpoint is the twin of a client frame of
docs/protocol.md, with the same fields (the frame's ``type`` is the path):

- ``POST /api/publish`` ``{"topic": T, "data": D}``, like ``publish``;
- ``POST /api/send`` ``{"to": {"user": U}, "data": D}`` (or
  ``{"connection": C}``), like ``send``;
- ``POST /api/broadcast`` ``{"room": R, "data": D}`` (or ``"scope":
  "global"``, or ``"filter": {"roles": [...], "users": [...]}``), like
  ``broadcast``.

Any body may carry ``"id"`` (a string or an integer, as a frame's), echoed in
the answer. Unlike a frame, a body with any other field is ``bad_request``.

Who may call: a bearer token in ``Authorization`` (:func:`rtcs.admin.authorize`)
whose roles include ``service`` or ``admin``. Then the token's roles must
allow the request exactly as on a WebSocket (``rtcs.auth.permissions``, the
same calls the connection actor makes): publish permission for the topic,
``direct`` for ``send``, the broadcast scope for ``broadcast``. A caller has
no connection that could be a room's member, so a room broadcast needs, in
place of membership, permission to join the room. The sender is the token's
``sub``: recipients see it in ``from``, routing rules see it (and the
token's roles) as the sender's.

How a request is served: its body is decoded and checked here (:func:`decode`
and :func:`check`, pure), then handed to the route handler that serves the
WebSocket request, as a request of a one-off session of the caller (the
sink of which is :class:`_Caller`): a session of no connection, in no
index, that receives nothing but its request's answer. The route handler
does what it does for a client -- routing rules, route plugins, local
delivery, the broker for other nodes -- and answers ``ack`` or ``error`` to
that session; :func:`handle` waits for that answer (at most
``limits.api_timeout`` seconds plus the longest route plugin timeout) and
turns it into the HTTP answer. So 202 means what a WebSocket ``ack`` means:
the message was delivered on this node and, where other nodes may need it,
the broker accepted it; not that anyone read it.

Answers (JSON bodies):

- 202 ``{"status": "routed", "topic": T}`` (``"to"``, ``"room"``, ``"scope"``
  or ``"filter"`` for the other endpoints, as requested), with ``"id"`` when
  the body had one and ``"answers"`` (the data of each answer) when route
  plugins answered the publisher;
- 400 ``bad_request`` (not a JSON object, strict JSON as for frames; a
  missing, unknown or ill-typed field; a bad room or user name) or
  ``bad_topic`` (an invalid topic, or a pattern);
- 401 ``unauthorized``; 403 ``forbidden`` (no ``service``/``admin`` role, or
  the roles do not allow the request);
- 404 ``offline`` (``send``: no live connection of the user, or no such
  connection, anywhere);
- 413 ``too_large`` (a body over ``limits.max_message_size``);
- 500 ``internal`` (a route plugin failed the publish);
- 503 ``unavailable`` (the shared backend is down, the routing actors are
  restarting, or routing did not answer in time: the message may then still
  be delivered);
- 404 ``not_found`` for another ``/api/`` path, 405 for another method.

Error bodies are ``{"code": C, "message": M}``, plus ``"id"`` when the body
had a valid one.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from rtcs.actors.context import ROUTE_BROADCAST, ROUTE_DIRECT, ROUTE_ROOM, ROUTE_TOPIC
from rtcs.actors.messages import RouteDirect, RoutePublish, RouteRoomBroadcast, RouteWideBroadcast
from rtcs.admin import authorize
from rtcs.errors import BadRequest, ErrorCode, Forbidden, ProtocolError, Unavailable
from rtcs.protocol import codec
from rtcs.protocol.frames import Broadcast, Publish, RequestId, Send, ServerFrame
from rtcs.protocol.http import HttpError, HttpRequest
from rtcs.sessions import Session

if TYPE_CHECKING:
    from rtcs.actors.context import NodeContext
    from rtcs.auth.permissions import Policy
    from rtcs.auth.tokens import Identity

__all__ = [
    "API_ROLES",
    "BROADCAST_PATH",
    "PATHS",
    "PUBLISH_PATH",
    "SEND_PATH",
    "STATUS",
    "ApiCommand",
    "answer",
    "check",
    "decode",
    "handle",
    "refusal",
    "target",
]

#: A token needs one of these roles to use the API at all.
API_ROLES: Final = ("service", "admin")
PUBLISH_PATH: Final = "/api/publish"
SEND_PATH: Final = "/api/send"
BROADCAST_PATH: Final = "/api/broadcast"
#: The paths served here (for any method, so that a wrong method gets 405).
PATHS: Final = frozenset({PUBLISH_PATH, SEND_PATH, BROADCAST_PATH})

#: The HTTP status that answers each wire error code.
STATUS: Final[Mapping[ErrorCode, HTTPStatus]] = {
    ErrorCode.BAD_REQUEST: HTTPStatus.BAD_REQUEST,
    ErrorCode.BAD_TOPIC: HTTPStatus.BAD_REQUEST,
    ErrorCode.FORBIDDEN: HTTPStatus.FORBIDDEN,
    ErrorCode.OFFLINE: HTTPStatus.NOT_FOUND,
    ErrorCode.RATE_LIMITED: HTTPStatus.TOO_MANY_REQUESTS,
    ErrorCode.TOO_LARGE: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    ErrorCode.LIMIT: HTTPStatus.TOO_MANY_REQUESTS,
    ErrorCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    ErrorCode.INTERNAL: HTTPStatus.INTERNAL_SERVER_ERROR,
}

#: What the API can be asked to do: the commands of the frames it mirrors.
ApiCommand: TypeAlias = Publish | Send | Broadcast
Answer: TypeAlias = tuple[HTTPStatus, dict[str, Any]]
#: How a request reaches an actor: ``tell(address, message)``, on the loop thread.
Tell: TypeAlias = Callable[[Any, object], None]

#: Each path's frame type and the fields its body may have.
_BODIES: Final[Mapping[str, tuple[str, frozenset[str]]]] = {
    PUBLISH_PATH: (Publish.TYPE, frozenset({"id", "topic", "data"})),
    SEND_PATH: (Send.TYPE, frozenset({"id", "to", "data"})),
    BROADCAST_PATH: (Broadcast.TYPE, frozenset({"id", "room", "scope", "filter", "data"})),
}
_FIELD_SHOWN = 64  # characters of an unknown field's name repeated in the error message


# -- pure: the body, and what the caller may do ------------------------------------


def decode(path: str, body: bytes, *, max_depth: int = codec.DEFAULT_MAX_DEPTH) -> ApiCommand:
    """The command the body of a ``POST`` to ``path`` (one of :data:`PATHS`) stands for.

    The body is decoded as the client frame of the same type
    (``rtcs.protocol.codec.decode``: the same field rules, strict JSON, at
    most ``max_depth`` levels of nesting), except that a field the frame
    does not have is refused instead of ignored. Its size is the caller's to
    check.

    Raises:
        BadRequest: not UTF-8, not a strict JSON object, nested too deep, an
            unknown field (``type`` included), or a missing or ill-typed one
            (carrying the body's ``id`` when it is valid).
        BadTopic: ``topic`` breaks the topic rules or is a pattern.
        KeyError: ``path`` is not an API path (a caller's bug).
    """
    type_, fields = _BODIES[path]
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("body must be a JSON object") from None
    if type(payload) is not dict:
        raise BadRequest("body must be a JSON object")
    try:
        # The frame the body stands for, decoded by the WebSocket path's own
        # decoder: NaN, Infinity and lone surrogates fail to encode here.
        frame = codec.encode_data({**payload, "type": type_})
    except (TypeError, ValueError):
        raise BadRequest("body must be strict JSON (no NaN, Infinity or lone surrogates)") from None
    command = codec.decode(frame, max_depth=max_depth)
    unknown = sorted(set(payload) - fields)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0][:_FIELD_SHOWN]!r}", request_id=command.id)
    if not isinstance(command, (Publish, Send, Broadcast)):  # pragma: no cover - _BODIES
        raise BadRequest("unknown frame type")
    return command


def check(policy: Policy, identity: Identity, command: ApiCommand) -> None:
    """Refuse ``command`` unless ``identity``'s roles allow it, as on a WebSocket.

    A room broadcast needs, in place of the room membership a caller without
    a connection cannot have, permission to join the room.

    Raises:
        Forbidden: the roles do not allow it (carrying the command's ``id``).
    """
    roles, user, rid = identity.roles, identity.user, command.id
    if isinstance(command, Publish):
        if not policy.can_publish(roles, command.topic, user):
            raise Forbidden(f"not allowed to publish to {command.topic}", request_id=rid)
    elif isinstance(command, Send):
        if not policy.can_direct(roles):
            raise Forbidden("not allowed to send direct messages", request_id=rid)
    else:
        scope = command.kind
        if not policy.can_broadcast(roles, scope):
            raise Forbidden(f"not allowed to send {scope} broadcasts", request_id=rid)
        if command.room is not None and not policy.can_join_room(roles, command.room, user):
            raise Forbidden(f"not allowed to broadcast into room {command.room}", request_id=rid)


def target(command: ApiCommand) -> dict[str, Any]:
    """Where ``command`` was addressed, as its body said (for the 202 answer)."""
    if isinstance(command, Publish):
        return {"topic": command.topic}
    if isinstance(command, Send):
        if command.to_user is not None:
            return {"to": {"user": command.to_user}}
        return {"to": {"connection": command.to_connection}}
    if command.room is not None:
        return {"room": command.room}
    if command.scope is not None:
        return {"scope": command.scope}
    only = command.filter
    assert only is not None  # Broadcast's invariant: exactly one of the three
    return {"filter": {"roles": list(only.roles), "users": list(only.users)}}


def refusal(code: ErrorCode, message: str, request_id: RequestId = None) -> Answer:
    """The answer to a refused request: the status of ``code`` and its JSON body."""
    body: dict[str, Any] = {"code": code.value, "message": message}
    if request_id is not None:
        body["id"] = request_id
    return STATUS.get(code, HTTPStatus.INTERNAL_SERVER_ERROR), body


def answer(command: ApiCommand, reply: bytes, answers: list[bytes]) -> Answer:
    """The answer to ``command`` from routing's ``reply`` frame (``ack`` or ``error``).

    ``answers`` are the ``message`` frames route plugins sent the publisher.
    """
    frame = json.loads(reply)
    if frame.get("type") != ServerFrame.ACK:
        try:
            code = ErrorCode(frame.get("code"))
        except ValueError:
            code = ErrorCode.INTERNAL
        return refusal(code, str(frame.get("message", "")), command.id)
    body: dict[str, Any] = {"status": "routed", **target(command)}
    if command.id is not None:
        body["id"] = command.id
    if answers:
        body["answers"] = [json.loads(message).get("data") for message in answers]
    return HTTPStatus.ACCEPTED, body


# -- the I/O shell -------------------------------------------------------------------------


async def handle(
    request: HttpRequest, ctx: NodeContext, tell: Tell, *, timeout: float | None = None
) -> Answer:
    """The status and JSON body answering ``request`` (a ``POST`` body); never raises.

    ``tell`` hands a message to an actor (the node's actor system, on this
    loop's thread). ``timeout`` bounds the wait for routing's answer
    (default: ``limits.api_timeout`` plus the longest route plugin timeout;
    backend calls time out well before, ``backend.redis_command_timeout``).
    """
    if request.path not in PATHS:
        return HTTPStatus.NOT_FOUND, {"code": "not_found", "message": "no such endpoint"}
    if request.method != "POST":
        return HTTPStatus.METHOD_NOT_ALLOWED, {
            "code": "method_not_allowed",
            "message": "use POST",
        }
    try:
        identity = authorize(request, ctx.verifier, API_ROLES, now=ctx.wall())
    except HttpError as exc:
        message = (
            "the token's roles include neither service nor admin"
            if exc.status == HTTPStatus.FORBIDDEN
            else "a valid bearer token is required"
        )
        return exc.status, {"code": exc.reason, "message": message}
    limits = ctx.settings.limits
    if len(request.body) > limits.max_message_size:
        return refusal(
            ErrorCode.TOO_LARGE, f"body larger than {limits.max_message_size} bytes (limit)"
        )
    try:
        command = decode(request.path, request.body, max_depth=limits.max_json_depth)
        check(ctx.policy, identity, command)
        if timeout is None:
            plugins = max((p.timeout for p in ctx.route_plugins), default=0.0)
            timeout = limits.api_timeout + plugins
        return await _route(ctx, tell, identity, command, timeout)
    except ProtocolError as exc:
        return refusal(exc.code, exc.message, exc.request_id)
    except Exception as exc:  # a bug must answer 500, never leave the request hanging
        ctx.log.error("api request failed", path=request.path, error=type(exc).__name__)
        return refusal(ErrorCode.INTERNAL, "internal error")


class _Caller:
    """The sink of a request's one-off session: it keeps what routing answers.

    ``push`` receives the request's ``ack`` or ``error`` frame (the first one
    resolves ``outcome``), ``push_message`` the answers of route plugins;
    there is no socket to close.
    """

    __slots__ = ("answers", "connection_id", "outcome")

    def __init__(self, outcome: asyncio.Future[bytes]) -> None:
        self.connection_id = ""
        self.outcome = outcome
        self.answers: list[bytes] = []

    def push(self, frame: bytes) -> bool:
        if not self.outcome.done():  # a request past its timeout is cancelled
            self.outcome.set_result(frame)
        return True

    def push_message(self, frame: bytes) -> bool:
        self.answers.append(frame)  # at most one per route plugin
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Nothing to close: the gateway answers the request."""


def _session(identity: Identity) -> Session:
    """The caller's one-off session: its user and roles, no connection, no replay buffer."""
    return Session("api-" + secrets.token_hex(8), identity.user, identity.roles, 0)


async def _route(
    ctx: NodeContext, tell: Tell, identity: Identity, command: ApiCommand, timeout: float
) -> Answer:
    """Hand ``command`` to its route handler; the answer once routing answered.

    Raises:
        Unavailable: the route handler is not running (restarting).
    """
    session = _session(identity)
    rid, now = command.id, time.perf_counter()  # where rtcs_routing_seconds starts
    message: object
    if isinstance(command, Publish):
        name, message = ROUTE_TOPIC, RoutePublish(session, command.topic, command.data, rid, now)
    elif isinstance(command, Send):
        message = RouteDirect(
            session, command.to_user, command.to_connection, command.data, rid, now
        )
        name = ROUTE_DIRECT
    elif command.room is not None:
        # Standing for the membership the room handler checks (see check()).
        session.rooms.add(command.room)
        message = RouteRoomBroadcast(session, command.room, command.data, rid, now)
        name = ROUTE_ROOM
    else:
        name = ROUTE_BROADCAST
        message = RouteWideBroadcast(session, command.filter, command.data, rid, now)
    address = ctx.directory.lookup(name)
    if address is None:
        raise Unavailable("routing is restarting, retry", request_id=rid)
    outcome: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    caller = _Caller(outcome)
    session.sink = caller
    tell(address, message)
    try:
        reply = await asyncio.wait_for(outcome, timeout)
    except TimeoutError:
        raise Unavailable(
            f"routing did not answer within {timeout:g} s; the message may still be delivered",
            request_id=rid,
        ) from None
    return answer(command, reply, caller.answers)
