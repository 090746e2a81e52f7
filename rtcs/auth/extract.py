"""Where a connection's token comes from (docs/protocol.md, "Authentication").

Pure: takes the request path and headers of a WebSocket handshake and returns
what the gateway needs to authenticate it. Sources, in order:

1. ``Authorization: Bearer <token>``;
2. ``Sec-WebSocket-Protocol`` offering ``rtcs.v1`` and one ``rtcs.bearer.<token>``;
3. the cookie ``cookie_name``, only when :func:`cookie_allowed` (the Origin is
   in the allowlist or is the server's own origin);
4. ``?token=`` when query tokens are allowed;
5. none: the client must send an ``auth`` frame first.

A present but malformed source raises :class:`~rtcs.errors.AuthError` (HTTP
401). Bad resume parameters (``?session=&last_seq=``) raise
:class:`~rtcs.errors.BadRequest` (HTTP 400): they are a client bug, not a
credential problem. Messages never contain the token.
"""

from __future__ import annotations

import enum
import functools
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from rtcs.errors import AuthError, BadRequest
from rtcs.protocol.codec import MAX_SEQ
from rtcs.protocol.frames import BEARER_PREFIX, MAX_NAME_LENGTH, SUBPROTOCOL

__all__ = [
    "BEARER_PREFIX",
    "SUBPROTOCOL",
    "HandshakeAuth",
    "HeaderSource",
    "TokenSource",
    "cookie_allowed",
    "extract",
    "normalise_origin",
    "origin_allowed",
    "own_origin",
]


# The same bound as a session id in an ``auth`` frame.
MAX_SESSION_LENGTH = MAX_NAME_LENGTH
_MAX_QUERY_FIELDS = 32
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ORIGIN_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}

#: Request headers: a mapping (looked up case-insensitively; an object with
#: ``get_all(name)`` such as ``websockets.datastructures.Headers`` also yields
#: repeated headers) or a callable ``get(name) -> str | None``.
HeaderSource = Mapping[str, str] | Callable[[str], str | None]


class TokenSource(enum.StrEnum):
    """Where the token of a handshake was found."""

    HEADER = "header"
    SUBPROTOCOL = "subprotocol"
    COOKIE = "cookie"
    QUERY = "query"
    FRAME = "frame"


@dataclass(frozen=True, slots=True)
class HandshakeAuth:
    """The authentication material of one handshake.

    ``token`` is None when the client must authenticate with its first frame;
    ``subprotocol`` is ``"rtcs.v1"`` when the client offered it (the gateway must
    select it), else None. ``session``/``last_seq`` ask to resume on connect.
    """

    token: str | None = field(repr=False)
    source: TokenSource | None
    subprotocol: str | None
    session: str | None = None
    last_seq: int | None = None


def _header_reader(headers: HeaderSource) -> Callable[[str, str], str | None]:
    """Return ``get(name, separator)`` that joins repeated headers."""
    if not isinstance(headers, Mapping):
        getter = headers
        return lambda name, _sep: getter(name)
    get_all = getattr(headers, "get_all", None)
    if callable(get_all):

        def from_get_all(name: str, sep: str) -> str | None:
            found = list(get_all(name))
            return sep.join(found) if found else None

        return from_get_all
    lowered: dict[str, list[str]] = {}
    for key, value in headers.items():
        lowered.setdefault(key.lower(), []).append(value)

    def from_mapping(name: str, sep: str) -> str | None:
        found = lowered.get(name.lower())
        return sep.join(found) if found else None

    return from_mapping


def normalise_origin(origin: str) -> str | None:
    """Return ``scheme://host[:port]`` in lower case without a default port.

    None for anything that is not an http(s) origin (``"null"``, paths, junk).
    """
    try:
        parts = urllib.parse.urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if (
        scheme not in _DEFAULT_PORTS
        or not host
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username is not None
    ):
        return None
    if ":" in host:  # IPv6: urlsplit strips the brackets
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def own_origin(scheme: str, host_header: str | None) -> str | None:
    """The origin a browser on this server's own pages would send.

    ``scheme`` is the one the client connected with (``ws``/``wss``; ``http``
    and ``https`` are accepted too); ``host_header`` is the ``Host`` header.
    Returns the normalised ``http://host[:port]`` or ``https://…``, or None when
    there is no usable Host header or the scheme is unknown.
    """
    origin_scheme = _ORIGIN_SCHEME.get(scheme.lower())
    if origin_scheme is None or not host_header or "/" in host_header:
        return None
    return normalise_origin(f"{origin_scheme}://{host_header.strip()}")


def _allowed_set(allowed: Sequence[str], own: str | None) -> frozenset[str]:
    return _allowed_set_cached(tuple(allowed), own)


@functools.lru_cache(maxsize=256)
def _allowed_set_cached(allowed: tuple[str, ...], own: str | None) -> frozenset[str]:
    # Every handshake asks; the allowlist is configuration and ``own`` is one
    # of a few Host values, so the normalised set is computed once each.
    normalised = {normalise_origin(a) for a in allowed}
    if own is not None:
        normalised.add(normalise_origin(own))
    return frozenset(n for n in normalised if n is not None)


def origin_allowed(origin: str | None, allowed: Sequence[str], own: str | None) -> bool:
    """Whether a handshake with this ``Origin`` may open a socket (else HTTP 403).

    No Origin header (a non-browser client) is allowed; an empty allowlist
    allows any origin; otherwise the origin must be in the allowlist or equal
    the server's own origin. Case and default ports do not matter.
    """
    if origin is None or not allowed:
        return True
    normalised = normalise_origin(origin)
    return normalised is not None and normalised in _allowed_set(allowed, own)


def cookie_allowed(origin: str | None, allowed: Sequence[str], own: str | None) -> bool:
    """Whether a cookie token may be used: only from a browser on an allowed origin.

    Requires an Origin header that is in the allowlist or equals the server's
    own origin, so another site cannot ride on the user's cookie (cross-site
    WebSocket hijacking).
    """
    if origin is None:
        return False
    normalised = normalise_origin(origin)
    return normalised is not None and normalised in _allowed_set(allowed, own)


def _bearer(value: str) -> str:
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise AuthError("unsupported authorization scheme")
    token = token.strip()
    if not token:
        raise AuthError("empty bearer token")
    return token


def _offered_subprotocols(value: str | None) -> list[str]:
    if value is None:
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def _subprotocol_token(offered: Sequence[str]) -> str | None:
    tokens = [item[len(BEARER_PREFIX) :] for item in offered if item.startswith(BEARER_PREFIX)]
    if not tokens:
        return None
    if len(tokens) > 1:
        raise AuthError("more than one bearer subprotocol")
    if SUBPROTOCOL not in offered:
        # The server can only select rtcs.v1; it must never echo the bearer one.
        raise AuthError(f"bearer subprotocol requires {SUBPROTOCOL}")
    if not tokens[0]:
        raise AuthError("empty bearer subprotocol")
    return tokens[0]


def _cookie(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    for pair in value.split(";"):
        key, sep, cookie = pair.partition("=")
        if sep and key.strip() == name:
            cookie = cookie.strip()
            if len(cookie) >= 2 and cookie[0] == cookie[-1] == '"':
                cookie = cookie[1:-1]
            # An empty cookie is a logged-out browser: fall through to other sources.
            return cookie or None
    return None


def _parse_query(path: str) -> dict[str, list[str]]:
    # The request target is a path with an optional query: no need for the
    # whole of urlsplit (a handshake hot path).
    _, mark, rest = path.partition("?")
    if not mark:
        return {}
    query = rest.partition("#")[0]
    try:
        return urllib.parse.parse_qs(
            query, keep_blank_values=True, max_num_fields=_MAX_QUERY_FIELDS
        )
    except ValueError:
        raise BadRequest("too many query parameters") from None


def _single(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if values is None:
        return None
    if len(values) > 1:
        raise BadRequest(f"more than one {name} parameter")
    return values[0]


def _resume(query: Mapping[str, list[str]]) -> tuple[str | None, int | None]:
    session = _single(query, "session")
    last_seq_text = _single(query, "last_seq")
    if session is None and last_seq_text is None:
        return None, None
    if session is None or last_seq_text is None:
        raise BadRequest("session and last_seq go together")
    if (
        not session
        or len(session) > MAX_SESSION_LENGTH
        or not session.isascii()
        or not session.isprintable()
        or " " in session
    ):
        raise BadRequest("bad session")
    if (
        not last_seq_text.isascii()
        or not last_seq_text.isdigit()
        or len(last_seq_text) > 19
        or int(last_seq_text) > MAX_SEQ
    ):
        raise BadRequest("bad last_seq")
    return session, int(last_seq_text)


def extract(
    *,
    path: str,
    headers: HeaderSource,
    scheme: str,
    allowed_origins: Sequence[str],
    cookie_name: str,
    allow_query_token: bool,
) -> HandshakeAuth:
    """Find the token of a handshake, in docs/protocol.md order.

    ``path`` is the request target with its query string; ``scheme`` is ``ws``
    or ``wss`` (for the server's own origin, from the ``Host`` header). The
    caller still checks :func:`origin_allowed` (HTTP 403) and verifies the token.

    Raises:
        AuthError: a present source is malformed: a non-Bearer or empty
            ``Authorization``, several or empty ``rtcs.bearer.`` subprotocols,
            one without ``rtcs.v1``, an empty or repeated ``?token=``, or a
            ``?token=`` when query tokens are disabled and no earlier source
            supplied a token.
        BadRequest: bad resume parameters: ``session`` without ``last_seq`` or
            the reverse, a repeated or malformed one, too many query parameters.
    """
    get = _header_reader(headers)
    query = _parse_query(path)
    session, last_seq = _resume(query)
    offered = _offered_subprotocols(get("sec-websocket-protocol", ","))
    subprotocol = SUBPROTOCOL if SUBPROTOCOL in offered else None

    def found(token: str | None, source: TokenSource | None) -> HandshakeAuth:
        return HandshakeAuth(token, source, subprotocol, session, last_seq)

    authorization = get("authorization", ",")
    if authorization is not None:
        return found(_bearer(authorization), TokenSource.HEADER)
    token = _subprotocol_token(offered)
    if token is not None:
        return found(token, TokenSource.SUBPROTOCOL)
    cookie = get("cookie", "; ")
    # Only a cookie needs the origin checks (and the server's own origin).
    if cookie is not None and cookie_allowed(
        get("origin", ","), allowed_origins, own_origin(scheme, get("host", ","))
    ):
        token = _cookie(cookie, cookie_name)
        if token is not None:
            return found(token, TokenSource.COOKIE)
    query_tokens = query.get("token")
    if query_tokens is not None:
        if not allow_query_token:
            # Refuse loudly rather than fall through to a first-frame timeout.
            raise AuthError("query tokens are disabled")
        if len(query_tokens) > 1:
            raise AuthError("more than one query token")
        if not query_tokens[0]:
            raise AuthError("empty query token")
        return found(query_tokens[0], TokenSource.QUERY)
    return found(None, None)
