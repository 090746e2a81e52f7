"""Files rtcs serves from its own package over plain HTTP (``GET``, no auth).

- ``GET /client/rtcs.js``: the JavaScript client (docs/client-js.md), always;
- ``GET /demo``: the demo page, only with ``demo.enabled`` (``rtcs.demo``).

Each file is read once from the installed package (``importlib.resources``,
``rtcs/static/``) and kept with its ETag, a hash of its bytes. Answers carry
``Cache-Control: no-cache`` (browsers keep the file and ask again each time,
so an upgraded rtcs is picked up at once), the ``ETag``, and
``X-Content-Type-Options: nosniff``; a request whose ``If-None-Match`` names
the ETag (or is ``*``) gets 304 without a body. The client may be imported
as a module by pages of any origin (``Access-Control-Allow-Origin: *``: it
is a public file, and the header exposes nothing else); the demo page
forbids anything but its own origin (``Content-Security-Policy``).

Pure apart from reading the packaged files; the gateway turns an
:data:`Answer` into its HTTP response.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from types import MappingProxyType
from typing import Final

__all__ = [
    "CLIENT_JS",
    "CLIENT_PATH",
    "DEMO_PAGE",
    "Answer",
    "Asset",
    "answer",
    "etag_matches",
    "load",
]

#: Where the JavaScript client is served.
CLIENT_PATH: Final = "/client/rtcs.js"

#: Status, body and headers (the content type and length included, when there is a body).
Answer = tuple[HTTPStatus, bytes, dict[str, str]]

_COMMON: Final = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

#: What the demo page may load and connect to: its own origin only (the
#: WebSocket included), inline styles and its inline module script.
_DEMO_POLICY: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline';"
    " img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none';"
    " frame-ancestors 'none'"
)


@dataclass(frozen=True, slots=True)
class Asset:
    """A packaged file as it is served: where it lives, its type and extra headers."""

    name: str  # under rtcs/static/
    content_type: str
    headers: Mapping[str, str]


#: The JavaScript client (an ES module).
CLIENT_JS: Final = Asset(
    "rtcs.js",
    "text/javascript; charset=utf-8",
    MappingProxyType({"Access-Control-Allow-Origin": "*"}),
)
#: The demo page (HTML with its CSS and script inline).
DEMO_PAGE: Final = Asset(
    "demo.html",
    "text/html; charset=utf-8",
    MappingProxyType({"Content-Security-Policy": _DEMO_POLICY, "Referrer-Policy": "no-referrer"}),
)


@functools.cache
def load(name: str) -> tuple[bytes, str] | None:
    """The bytes of ``rtcs/static/<name>`` and their ETag, read once; None when the
    package lacks the file."""
    try:
        body = importlib.resources.files("rtcs").joinpath("static", name).read_bytes()
    except OSError:
        return None
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: Sequence[str], etag: str) -> bool:
    """Whether the ``If-None-Match`` header values name ``etag`` (RFC 9110, 13.1.2).

    The comparison is weak (``W/"x"`` matches ``"x"``); ``*`` matches any.
    """
    for value in if_none_match:
        for tag in value.split(","):
            tag = tag.strip()
            if tag == "*" or tag.removeprefix("W/") == etag:
                return True
    return False


def answer(asset: Asset, if_none_match: Sequence[str]) -> Answer | None:
    """The answer to ``GET`` of ``asset``: 200 with the file, or 304; None when the
    package lacks the file (the caller answers 404)."""
    loaded = load(asset.name)
    if loaded is None:
        return None
    body, etag = loaded
    headers = {**_COMMON, "ETag": etag, **asset.headers}
    if etag_matches(if_none_match, etag):
        return HTTPStatus.NOT_MODIFIED, b"", headers
    headers["Content-Type"] = asset.content_type
    headers["Content-Length"] = str(len(body))
    return HTTPStatus.OK, body, headers
