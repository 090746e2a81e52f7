"""The demo page's server side: its token endpoint and the role ``demo``.

Everything here is off unless ``demo.enabled`` (default false). The page
itself, ``GET /demo``, is a packaged file (``rtcs/static/demo.html``, served
by ``rtcs.assets``): a chat with rooms and presence, and a live operator
panel fed by the node's stats topic (``Settings.stats_topic``).

**Never enable the demo in production**: ``POST /demo/token`` gives a token
to anyone who asks for a name, for any name (docs/operations.md, "Demo page").

``POST /demo/token`` with the body ``{"user": NAME}``, NAME being 1 to
:data:`MAX_NAME_LENGTH` characters of ``A-Z a-z 0-9 _ -`` (one topic segment,
so ``{user}`` patterns of ``[rbac]`` work for demo users too):

- 200 ``{"token": T, "user": NAME, "roles": ["demo"], "expires_in": S,
  "stats_topic": TOPIC, "room_prefix": "demo.", "ws_path": "/ws"}``: a token
  of role ``demo`` for NAME, valid ``demo.token_ttl`` seconds, signed with the
  node's own key, and what the page needs besides (the stats topic, where
  demo rooms live, the WebSocket path ``server.path``);
- 400 ``{"code": "bad_request", "message": M}``: the body is not a JSON
  object whose only field is such a ``user``;
- 403 ``{"code": "forbidden", ...}``: NAME was revoked (``POST /admin/revoke``)
  within this second, so a token minted now would be refused;
- 404 ``{"code": "not_found", ...}``: the demo is off, or the node cannot mint
  tokens it accepts (it holds only public keys: RS256/ES256 without
  ``auth.private_key_file``); the demo needs an HS* secret or a private key.

``GET /demo/token`` is answered 405 (by the gateway) while the demo is on.

The role ``demo`` (:func:`policy_rbac`): while the demo is on and ``[rbac]``
does not define ``demo`` itself, the node's policy gets :func:`demo_role`:
subscribe to and publish under ``demo.>``, subscribe to the stats topic,
join the rooms ``demo.*``, broadcast into them and query presence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from rtcs.auth.tokens import mint
from rtcs.errors import AuthError, BadRequest, ConfigError

if TYPE_CHECKING:
    from rtcs.auth.tokens import TokenVerifier
    from rtcs.config import Settings
    from rtcs.protocol.http import HttpRequest

__all__ = [
    "MAX_NAME_LENGTH",
    "PAGE_PATH",
    "ROLE",
    "ROOM_PREFIX",
    "TOKEN_PATH",
    "Answer",
    "check_name",
    "decode",
    "demo_role",
    "policy_rbac",
    "token_answer",
]

PAGE_PATH: Final = "/demo"
TOKEN_PATH: Final = "/demo/token"
#: The role of every demo token.
ROLE: Final = "demo"
#: Demo rooms are named ``demo.<name>``; demo topics live under ``demo.``.
ROOM_PREFIX: Final = "demo."
MAX_NAME_LENGTH: Final = 32

_NAME = re.compile(r"[A-Za-z0-9_-]+")

Answer = tuple[HTTPStatus, dict[str, Any]]


def demo_role(stats_topic: str) -> dict[str, Any]:
    """The ``[rbac]`` table of the role ``demo`` (``stats_topic``: empty for none)."""
    subscribe = [ROOM_PREFIX + ">"]
    if stats_topic:
        subscribe.append(stats_topic)
    return {
        "subscribe": subscribe,
        "publish": [ROOM_PREFIX + ">"],
        "broadcast": ["room"],
        "rooms": True,
        "join": [ROOM_PREFIX + "*"],
        "presence": True,
    }


def policy_rbac(settings: Settings) -> Mapping[str, Any]:
    """The ``[rbac]`` mapping the node's policy is built from.

    ``settings.rbac`` itself, plus the role ``demo`` (:func:`demo_role`) while
    ``demo.enabled``, unless ``settings.rbac`` defines that role (then its
    definition stands).
    """
    rbac = settings.rbac
    roles = rbac.get("roles")
    if not settings.demo.enabled or not isinstance(roles, Mapping) or ROLE in roles:
        return rbac
    with_demo = {**roles, ROLE: demo_role(settings.stats_topic)}
    return MappingProxyType({**rbac, "roles": with_demo})


def check_name(value: object) -> str:
    """Return ``value`` if it is a demo user name.

    Raises:
        BadRequest: it is not a string of 1 to :data:`MAX_NAME_LENGTH`
            characters of ``A-Z a-z 0-9 _ -``.
    """
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH or _NAME.fullmatch(value) is None:
        raise BadRequest(
            f"user must be 1 to {MAX_NAME_LENGTH} characters of A-Z, a-z, 0-9, '_' and '-'"
        )
    return value


def decode(body: bytes) -> str:
    """The user name a ``POST /demo/token`` body asks a token for.

    Raises:
        BadRequest: not a UTF-8 JSON object whose only field is ``user``, or
            a ``user`` that is not a demo user name (:func:`check_name`).
    """
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest('body must be a JSON object: {"user": NAME}') from None
    if not isinstance(payload, dict) or set(payload) != {"user"}:
        raise BadRequest('body must be a JSON object: {"user": NAME}')
    return check_name(payload["user"])


def token_answer(
    request: HttpRequest, settings: Settings, verifier: TokenVerifier, now: float
) -> Answer:
    """The status and JSON body answering ``POST /demo/token``; never raises.

    The token is minted with the node's own key (``rtcs.auth.tokens.mint``)
    and checked with its verifier before it is handed out, so a node whose
    signing key does not match what it verifies answers 404 rather than a
    useless token. ``now``: seconds since the epoch.
    """
    demo = settings.demo
    if not demo.enabled:
        return HTTPStatus.NOT_FOUND, {"code": "not_found"}
    try:
        user = decode(request.body)
    except BadRequest as exc:
        return HTTPStatus.BAD_REQUEST, {"code": exc.code.value, "message": exc.message}
    try:
        token = mint(settings.auth, user, roles=(ROLE,), ttl=demo.token_ttl, now=now)
        verifier.verify(token, now=now)
    except AuthError as exc:
        if exc.reason == "token revoked":
            return HTTPStatus.FORBIDDEN, {"code": "forbidden", "message": "this user is revoked"}
        return _cannot_mint()
    except (ConfigError, ValueError):
        return _cannot_mint()
    return HTTPStatus.OK, {
        "token": token,
        "user": user,
        "roles": [ROLE],
        "expires_in": demo.token_ttl,
        "stats_topic": settings.stats_topic,
        "room_prefix": ROOM_PREFIX,
        "ws_path": settings.server.path,
    }


def _cannot_mint() -> Answer:
    return HTTPStatus.NOT_FOUND, {
        "code": "not_found",
        "message": "this node cannot mint tokens: the demo needs an HS* secret"
        " or auth.private_key_file",
    }
