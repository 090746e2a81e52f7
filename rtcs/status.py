"""``GET /admin/status``: one node's view of itself, for operators.

Served on the WebSocket port (the gateway's ``_process_request``), and
authenticated as ``POST /admin/revoke`` is (rtcs.admin): a bearer token in
``Authorization`` whose roles include ``admin``.

- 200 with the JSON of :func:`build` (docs/operations.md, "Node status").
- 401 ``{"code": "unauthorized"}``: no or an invalid bearer token.
- 403 ``{"code": "forbidden"}``: the token's roles do not include ``admin``.
- 405 ``{"code": "method_not_allowed"}`` with ``Allow: GET`` for another method.

:func:`build` is pure: it turns the node's :class:`NodeFacts` and the actor
tree's :class:`~rtcs.runtime.introspect.SupervisorView` into the answer.
:func:`gather` reads them from a running node, without messages to the actors
(``rtcs.runtime.introspect``), so it runs in the request's own loop callback
and an answer never waits on a busy actor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from rtcs import __version__
from rtcs.actors.context import NodeContext
from rtcs.actors.tree import tree_view_of
from rtcs.admin import ADMIN_ROLE, authorize
from rtcs.auth.tokens import TokenVerifier
from rtcs.protocol.http import HttpError, HttpRequest
from rtcs.runtime.introspect import ActorView, SupervisorView

__all__ = ["ALLOW", "PATH", "NodeFacts", "answer", "build", "gather", "supervisor_json"]

PATH = "/admin/status"
ALLOW = {"Allow": "GET"}

#: Status, JSON body and the response's headers besides the content type and length.
Answer = tuple[HTTPStatus, dict[str, Any], dict[str, str]]


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """The node's scalar facts at one moment.

    ``started_at`` (seconds since the epoch) and ``uptime`` (seconds) are
    None before the actor tree has started. ``connections``: this process's
    open sockets; ``instance_connections``: those of every worker of the
    instance.
    """

    node: str
    version: str
    started_at: float | None
    uptime: float | None
    connections: int
    attached: int
    detached: int
    breaker: str
    degraded: bool
    rules_version: str
    rules_loaded: int
    backend: str
    workers: int
    instance_connections: int


def answer(
    method: str,
    authorization: Sequence[str],
    verifier: TokenVerifier,
    status: Callable[[], dict[str, Any]],
) -> Answer:
    """Answer a request for :data:`PATH`: the method first, then the token, then ``status()``.

    ``authorization``: every value of the request's ``Authorization`` header
    (two are refused as a bad credential). The token is checked, never
    logged nor echoed.

    Raises:
        Exception: only what ``status()`` raises.
    """
    headers = {"Cache-Control": "no-store"}
    if method != "GET":
        return HTTPStatus.METHOD_NOT_ALLOWED, {"code": "method_not_allowed"}, headers | ALLOW
    request = HttpRequest(
        method, PATH, {}, tuple(("authorization", value) for value in authorization), b""
    )
    try:
        authorize(request, verifier, (ADMIN_ROLE,))
    except HttpError as exc:
        return exc.status, {"code": str(exc.reason)}, headers
    return HTTPStatus.OK, status(), headers


def gather(ctx: NodeContext, connections: int) -> dict[str, Any]:
    """The status of the node running ``ctx`` (``connections``: its open sockets).

    Call it on the event-loop thread.
    """
    view = tree_view_of(ctx)
    rules = ctx.rules
    settings = ctx.settings
    facts = NodeFacts(
        node=ctx.node_id,
        version=__version__,
        started_at=None if view is None else view.started_at,
        uptime=None if view is None else time.monotonic() - view.started,
        connections=connections,
        attached=ctx.sessions.attached_count(),
        detached=ctx.sessions.detached_count(),
        breaker=ctx.metrics.breaker_now,
        degraded=ctx.degraded,
        rules_version="" if rules is None else rules.version,
        rules_loaded=0 if rules is None else len(rules),
        backend=settings.backend.kind,
        workers=settings.server.workers,
        instance_connections=connections if ctx.instance is None else ctx.instance.total(),
    )
    return build(facts, None if view is None else view.tree())


def build(facts: NodeFacts, tree: SupervisorView | None) -> dict[str, Any]:
    """The JSON body of a 200 answer (docs/operations.md, "Node status")."""
    return {
        "node": facts.node,
        "version": facts.version,
        "started_at": None if facts.started_at is None else _iso(facts.started_at),
        "uptime_seconds": None if facts.uptime is None else round(facts.uptime, 3),
        "actors": None if tree is None else supervisor_json(tree),
        "connections": facts.connections,
        "sessions": {"attached": facts.attached, "detached": facts.detached},
        "breaker": facts.breaker,
        "degraded": facts.degraded,
        "rules": {"version": facts.rules_version, "loaded": facts.rules_loaded},
        "backend": facts.backend,
        "workers": {"count": facts.workers, "connections": facts.instance_connections},
    }


def supervisor_json(view: SupervisorView) -> dict[str, Any]:
    """One supervisor and, nested, the supervisors below it.

    ``children``: the names of its named children in start order, a nested
    supervisor as an object of its own; ``unnamed_children``: how many
    children it has that have no name of their own (connection actors), by
    kind; ``mailbox``: messages waiting for it; ``mailboxes``: messages
    waiting for its children, by kind.
    """
    return {
        "name": view.name,
        "kind": view.kind,
        "strategy": view.strategy.value,
        "restarts": view.restarts,
        "intensity": {
            "max_restarts": view.max_restarts,
            "within_seconds": view.within,
            "budget_left": view.budget_left,
        },
        "children": [
            child.name if isinstance(child, ActorView) else supervisor_json(child)
            for child in view.children
        ],
        "unnamed_children": dict(view.unnamed),
        "mailbox": view.mailbox,
        "mailboxes": dict(view.mailboxes),
    }


def _iso(seconds: float) -> str:
    """A time as the logs write it: ISO 8601, UTC, microseconds."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
