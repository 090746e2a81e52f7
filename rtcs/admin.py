"""Operator endpoints that take a request body: ``POST /admin/revoke`` and
``POST /admin/rules/reload``.

The gateway hands a request whose line starts with ``POST`` to
:func:`handle` (websockets refuses request bodies); everything else stays
with websockets. Every endpoint needs a bearer token in ``Authorization``
whose roles include ``admin``; :func:`authorize` is that check, shared with
the service API (``rtcs.api``).

``POST /admin/revoke`` with ``{"user": U}`` or ``{"session": S}``:

- 200 ``{"revoked": {"user": U}, "at": T, "until": T2}``: recorded in the
  shared backend and applied on this node at once; every other node applies
  it within ``auth.revocation_poll_interval``. Sockets of U (or of session S)
  are closed with 4001; tokens of U issued at or before T (``iat``; tokens
  without ``iat`` too) are refused until T2 = T + ``auth.max_token_lifetime``.
- 400 ``{"code": "bad_request", "message": ...}``: the body is not a JSON
  object with exactly one of ``user``/``session`` as a non-empty string.
- 401 ``{"code": "unauthorized"}``: no or an invalid bearer token.
- 403 ``{"code": "forbidden"}``: the token's roles do not include ``admin``.
- 503 ``{"code": "unavailable"}``: the shared backend cannot be reached;
  nothing was revoked.
- 404 for any other path, 405 for another method on a known path.

``POST /admin/rules/reload`` (any body; :func:`reload_rules`): read the rules
file again, as SIGHUP does (docs/rules.md, "Reloading"):

- 200 ``{"reloaded": true, "version", "previous", "rules"}``: in use from the
  next publish on.
- 422 ``{"code": "bad_rules", "message", "reloaded": false, "version", ...}``:
  the file cannot be read or has a bad rule (the message names the file, the
  rule and the field); the old rules stay.
- 409 ``{"code": "no_rules_file"}``: no ``rules.file`` is configured.
- 202 ``{"reload": "requested", "workers": N}``: with ``--workers N`` the
  worker that got the request asks its parent, which passes SIGHUP on to
  every worker; each logs ``rules reloaded`` (or the failure) and
  ``rtcs_rules_info`` shows the version in use.
- 401, 403 as above.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Awaitable, Callable, Collection
from http import HTTPStatus
from typing import Any

from rtcs.auth.tokens import Identity, TokenVerifier
from rtcs.errors import AuthError, ErrorCode, Unavailable
from rtcs.protocol.http import HttpError, HttpRequest
from rtcs.revocations import RevocationKind, Revoker
from rtcs.rulesfile import Reload

__all__ = [
    "ADMIN_ROLE",
    "MAX_TARGET_LENGTH",
    "PATHS",
    "RULES_RELOAD_PATH",
    "Reloader",
    "authorize",
    "handle",
    "reload_rules",
]

ADMIN_ROLE = "admin"
MAX_TARGET_LENGTH = 256
REVOKE_PATH = "/admin/revoke"
RULES_RELOAD_PATH = "/admin/rules/reload"
#: The paths served here (for any method, so that a wrong method gets 405).
PATHS = frozenset({REVOKE_PATH, RULES_RELOAD_PATH})

Answer = tuple[HTTPStatus, dict[str, Any]]


#: Reloads the rules file here (rtcs.app.App.reload_rules).
Reloader = Callable[[], Awaitable[Reload]]


async def reload_rules(
    request: HttpRequest,
    verifier: TokenVerifier,
    reload: Reloader | None,
    workers: int = 1,
) -> Answer:
    """Answer ``POST /admin/rules/reload``; never raises.

    One process (``workers`` 1) reloads its rules file and says how it went.
    A worker of ``--workers N`` asks its parent (SIGHUP), which passes the
    signal on to every worker: each reloads, and the answer is 202.
    """
    if request.method != "POST":
        return HTTPStatus.METHOD_NOT_ALLOWED, {"code": "method_not_allowed"}
    try:
        authorize(request, verifier, (ADMIN_ROLE,))
    except HttpError as exc:
        return exc.status, {"code": exc.reason}
    if workers > 1:
        os.kill(os.getppid(), signal.SIGHUP)
        return HTTPStatus.ACCEPTED, {"reload": "requested", "workers": workers}
    if reload is None:  # the node is not serving yet
        return HTTPStatus.SERVICE_UNAVAILABLE, {"code": ErrorCode.UNAVAILABLE}
    outcome = await reload()
    if not outcome.configured:
        message = "no rules file is configured (rules.file)"
        return HTTPStatus.CONFLICT, {"code": "no_rules_file", "message": message}
    body: dict[str, Any] = {
        "reloaded": outcome.ok,
        "version": outcome.version,
        "previous": outcome.previous,
        "rules": outcome.rules,
    }
    if not outcome.ok:
        # The file was refused: the old rules stay (its version is "version").
        body.update(code="bad_rules", message=outcome.error)
        return HTTPStatus.UNPROCESSABLE_ENTITY, body
    return HTTPStatus.OK, body


async def handle(request: HttpRequest, verifier: TokenVerifier, revoker: Revoker) -> Answer:
    """The status and JSON body answering ``request``; never raises."""
    if request.path != REVOKE_PATH:
        return HTTPStatus.NOT_FOUND, {"code": "not_found"}
    if request.method != "POST":
        return HTTPStatus.METHOD_NOT_ALLOWED, {"code": "method_not_allowed"}
    try:
        authorize(request, verifier, (ADMIN_ROLE,))
    except HttpError as exc:
        return exc.status, {"code": exc.reason}
    try:
        kind, target = _revoke_body(request.body)
    except ValueError as exc:
        return HTTPStatus.BAD_REQUEST, {"code": ErrorCode.BAD_REQUEST, "message": str(exc)}
    try:
        revocation = await revoker.revoke(kind, target)
    except Unavailable:
        return HTTPStatus.SERVICE_UNAVAILABLE, {"code": ErrorCode.UNAVAILABLE}
    return HTTPStatus.OK, {
        "revoked": {kind: target},
        "at": revocation.at,
        "until": revocation.until,
    }


def authorize(
    request: HttpRequest,
    verifier: TokenVerifier,
    roles: Collection[str],
    *,
    now: float | None = None,
) -> Identity:
    """The identity of the request's bearer token, which must hold one of ``roles``.

    The token comes from the ``Authorization: Bearer`` header only and is
    checked like a WebSocket token (signature, claims, revocations) at
    ``now`` (default: the wall clock).

    Raises:
        HttpError: 401 ``unauthorized`` (no header, a repeated one, not
            ``Bearer``, or a token that fails a check); 403 ``forbidden`` (a
            valid token without any of ``roles``).
    """
    try:
        header = request.header("authorization")
    except HttpError:
        raise HttpError(HTTPStatus.UNAUTHORIZED, "unauthorized") from None
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HttpError(HTTPStatus.UNAUTHORIZED, "unauthorized")
    try:
        identity = verifier.verify(token.strip(), now=now)
    except AuthError:
        raise HttpError(HTTPStatus.UNAUTHORIZED, "unauthorized") from None
    if not any(role in identity.roles for role in roles):
        raise HttpError(HTTPStatus.FORBIDDEN, ErrorCode.FORBIDDEN)
    return identity


def _revoke_body(body: bytes) -> tuple[RevocationKind, str]:
    """``("user", U)`` or ``("session", S)`` from the JSON body.

    Raises:
        ValueError: anything else, with a message for the caller.
    """
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    keys = set(payload)
    if len(keys) != 1 or not keys <= {"user", "session"}:
        raise ValueError('body must have exactly one of "user" or "session"')
    kind: RevocationKind = "user" if "user" in keys else "session"
    target = payload[kind]
    if not isinstance(target, str) or not target or len(target) > MAX_TARGET_LENGTH:
        raise ValueError(
            f"{kind} must be a non-empty string of at most {MAX_TARGET_LENGTH} characters"
        )
    return kind, target
