"""HTTP/1.1 requests with a body, for the few non-WebSocket endpoints that take one.

websockets parses the upgrade requests and the ``GET`` endpoints; it refuses a
request body. The operator endpoints (``POST /admin/revoke``) need one, so the
gateway hands the bytes of a connection whose request line starts with
``POST`` to :func:`parse_request` instead. Sans-I/O: bytes in, a request (or
"need more", or an :class:`HttpError` naming the status to answer) out, and
:func:`render_response` for the answer.

Limits are the caller's: a request line and header block of at most
``max_head`` bytes, a body of at most ``max_body`` (``Content-Length`` only;
chunked transfer coding is refused with 411/501 as HTTP allows).
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

__all__ = ["HttpError", "HttpRequest", "parse_request", "render_response"]

_MAX_HEADERS = 100


class HttpError(Exception):
    """A request that gets ``status`` and is then closed."""

    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One parsed request. Header names are lower-case; values keep their order."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive).

        Raises:
            HttpError: 400, the header appears more than once.
        """
        values = self.headers_named(name)
        if len(values) > 1:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"duplicate {name} header")
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        lower = name.lower()
        return [v for k, v in self.headers if k == lower]


def parse_request(data: bytes, *, max_head: int, max_body: int) -> HttpRequest | None:
    """The request at the start of ``data``, or None while it is incomplete.

    Raises:
        HttpError: the request is malformed (400), too big (413 / 431), or
            uses a transfer coding (501) or no length (411) for a body.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) > max_head:
            raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        return None
    if end > max_head:
        raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
    try:
        head = data[:end].decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(HTTPStatus.BAD_REQUEST, "request head is not ASCII") from None
    line, *fields = head.split("\r\n")
    parts = line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0") or not parts[0].isalpha():
        raise HttpError(HTTPStatus.BAD_REQUEST, "invalid request line")
    method, target, _ = parts
    if len(fields) > _MAX_HEADERS:
        raise HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many headers")
    headers: list[tuple[str, str]] = []
    for field in fields:
        name, sep, value = field.partition(":")
        if not sep or not name or name != name.strip() or not _is_token(name):
            raise HttpError(HTTPStatus.BAD_REQUEST, "invalid header line")
        headers.append((name.lower(), value.strip(" \t")))
    request = HttpRequest(method, "", {}, tuple(headers), b"")
    if request.headers_named("transfer-encoding"):
        raise HttpError(HTTPStatus.NOT_IMPLEMENTED, "transfer codings are not supported")
    length_text = request.header("content-length")
    if length_text is None:
        if method in ("POST", "PUT", "PATCH"):
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        length = 0
    else:
        if not length_text.isdigit() or len(length_text) > 12:
            raise HttpError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
        length = int(length_text)
    if length > max_body:
        raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
    start = end + 4
    if len(data) < start + length:
        return None
    split = urlsplit(target)
    if not split.path.startswith("/"):
        raise HttpError(HTTPStatus.BAD_REQUEST, "invalid request target")
    return HttpRequest(
        method,
        split.path,
        parse_qs(split.query, keep_blank_values=True),
        tuple(headers),
        data[start : start + length],
    )


def render_response(status: HTTPStatus, body: bytes, content_type: str) -> bytes:
    """A complete response that closes the connection."""
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _is_token(name: str) -> bool:
    return all(c in _TOKEN_CHARS for c in name)
