"""Tests for rtcs.auth.extract: token sources, their order, origins, resume params."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from rtcs.auth.extract import (
    HandshakeAuth,
    TokenSource,
    cookie_allowed,
    extract,
    normalise_origin,
    origin_allowed,
    own_origin,
)
from rtcs.errors import AuthError, BadRequest

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln"
OTHER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJib2IifQ.b3RoZXI"


def run(
    headers: Mapping[str, str] | None = None,
    *,
    path: str = "/ws",
    scheme: str = "ws",
    allowed: Sequence[str] = (),
    query: bool = True,
) -> HandshakeAuth:
    return extract(
        path=path,
        headers={"Host": "rtcs.example:8765", **(headers or {})},
        scheme=scheme,
        allowed_origins=allowed,
        cookie_name="rtcs_token",
        allow_query_token=query,
    )


# --- each source ---------------------------------------------------------------------


def test_authorization_header() -> None:
    auth = run({"Authorization": f"Bearer {TOKEN}"})
    assert (auth.token, auth.source, auth.subprotocol) == (TOKEN, TokenSource.HEADER, None)


def test_header_names_and_scheme_are_case_insensitive() -> None:
    auth = run({"authorization": f"bearer   {TOKEN} "})
    assert (auth.token, auth.source) == (TOKEN, TokenSource.HEADER)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Basic dXNlcjpwYXNz", "unsupported authorization scheme"),
        ("Bearer", "empty bearer token"),
        ("Bearer   ", "empty bearer token"),
        ("", "unsupported authorization scheme"),
    ],
)
def test_malformed_authorization_header(value: str, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        run({"Authorization": value})
    assert info.value.reason == reason


def test_subprotocol_token() -> None:
    auth = run({"Sec-WebSocket-Protocol": f"rtcs.v1, rtcs.bearer.{TOKEN}"})
    assert (auth.token, auth.source, auth.subprotocol) == (
        TOKEN,
        TokenSource.SUBPROTOCOL,
        "rtcs.v1",
    )


def test_subprotocol_without_token_selects_rtcs_v1() -> None:
    auth = run({"Sec-WebSocket-Protocol": "chat, rtcs.v1"})
    assert (auth.token, auth.source, auth.subprotocol) == (None, None, "rtcs.v1")


def test_other_subprotocols_select_nothing() -> None:
    assert run({"Sec-WebSocket-Protocol": "chat, superchat"}).subprotocol is None


@pytest.mark.parametrize(
    ("offered", "reason"),
    [
        (f"rtcs.bearer.{TOKEN}", "bearer subprotocol requires rtcs.v1"),
        (f"rtcs.v1, rtcs.bearer.{TOKEN}, rtcs.bearer.{OTHER}", "more than one bearer subprotocol"),
        ("rtcs.v1, rtcs.bearer.", "empty bearer subprotocol"),
    ],
)
def test_malformed_subprotocol_token(offered: str, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        run({"Sec-WebSocket-Protocol": offered})
    assert info.value.reason == reason
    assert TOKEN not in str(info.value)


def test_cookie_from_own_origin() -> None:
    auth = run({"Origin": "http://rtcs.example:8765", "Cookie": f"a=1; rtcs_token={TOKEN}; b=2"})
    assert (auth.token, auth.source) == (TOKEN, TokenSource.COOKIE)


def test_cookie_from_allowlisted_origin() -> None:
    auth = run(
        {"Origin": "https://APP.example:443", "Cookie": f'rtcs_token="{TOKEN}"'},
        allowed=["https://app.example"],
    )
    assert (auth.token, auth.source) == (TOKEN, TokenSource.COOKIE)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example", "Cookie": f"rtcs_token={TOKEN}"},
        {"Cookie": f"rtcs_token={TOKEN}"},  # no Origin: not a browser, no ambient cookie
        {"Origin": "https://rtcs.example:8765", "Cookie": f"rtcs_token={TOKEN}"},  # wrong scheme
    ],
)
def test_cookie_from_other_origins_is_ignored(headers: dict[str, str]) -> None:
    auth = run(headers, allowed=["https://app.example"])
    assert (auth.token, auth.source) == (None, None)


def test_empty_or_other_cookie_falls_through() -> None:
    origin = {"Origin": "http://rtcs.example:8765"}
    assert run({**origin, "Cookie": "rtcs_token="}).token is None
    assert run({**origin, "Cookie": f"other={TOKEN}"}).token is None


def test_query_token() -> None:
    auth = run(path=f"/ws?token={TOKEN}")
    assert (auth.token, auth.source) == (TOKEN, TokenSource.QUERY)


def test_query_token_disabled() -> None:
    with pytest.raises(AuthError) as info:
        run(path=f"/ws?token={TOKEN}", query=False)
    assert info.value.reason == "query tokens are disabled"
    # A header token makes the (disabled) query token irrelevant.
    auth = run({"Authorization": f"Bearer {OTHER}"}, path=f"/ws?token={TOKEN}", query=False)
    assert auth.token == OTHER


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/ws?token=", "empty query token"),
        (f"/ws?token={TOKEN}&token={OTHER}", "more than one query token"),
    ],
)
def test_malformed_query_token(path: str, reason: str) -> None:
    with pytest.raises(AuthError) as info:
        run(path=path)
    assert info.value.reason == reason


def test_no_token_means_first_frame_auth() -> None:
    auth = run()
    assert auth == HandshakeAuth(None, None, None, None, None)


# --- order of precedence -------------------------------------------------------------


def test_precedence_header_subprotocol_cookie_query() -> None:
    everything = {
        "Authorization": "Bearer h",
        "Sec-WebSocket-Protocol": "rtcs.v1, rtcs.bearer.s",
        "Origin": "http://rtcs.example:8765",
        "Cookie": "rtcs_token=c",
    }
    path = "/ws?token=q"
    assert (run(everything, path=path).token, run(everything, path=path).subprotocol) == (
        "h",
        "rtcs.v1",
    )
    del everything["Authorization"]
    assert run(everything, path=path).token == "s"
    del everything["Sec-WebSocket-Protocol"]
    assert run(everything, path=path).token == "c"
    del everything["Cookie"]
    assert run(everything, path=path).token == "q"


def test_callable_headers_and_repeated_headers() -> None:
    values = {"authorization": f"Bearer {TOKEN}", "sec-websocket-protocol": "rtcs.v1"}
    auth = extract(
        path="/ws",
        headers=lambda name: values.get(name.lower()),
        scheme="ws",
        allowed_origins=(),
        cookie_name="rtcs_token",
        allow_query_token=True,
    )
    assert (auth.token, auth.subprotocol) == (TOKEN, "rtcs.v1")

    class Headers(dict[str, str]):
        """Looks like websockets' Headers: repeated values through get_all."""

        def get_all(self, name: str) -> list[str]:
            return {"sec-websocket-protocol": ["chat", f"rtcs.v1, rtcs.bearer.{TOKEN}"]}.get(
                name.lower(), []
            )

    auth = extract(
        path="/ws",
        headers=Headers(),
        scheme="ws",
        allowed_origins=(),
        cookie_name="rtcs_token",
        allow_query_token=True,
    )
    assert (auth.token, auth.source) == (TOKEN, TokenSource.SUBPROTOCOL)


def test_repr_hides_the_token() -> None:
    auth = run({"Authorization": f"Bearer {TOKEN}"})
    assert TOKEN not in repr(auth)
    assert "header" in repr(auth)


# --- resume parameters ---------------------------------------------------------------


def test_session_and_last_seq() -> None:
    auth = run({"Authorization": f"Bearer {TOKEN}"}, path="/ws?session=s-abc&last_seq=42")
    assert (auth.session, auth.last_seq) == ("s-abc", 42)
    assert run(path="/ws?session=s-1&last_seq=0").last_seq == 0


@pytest.mark.parametrize(
    "query",
    [
        "session=s-1",
        "last_seq=3",
        "session=s-1&last_seq=-1",
        "session=s-1&last_seq=1.5",
        "session=s-1&last_seq=abc",
        "session=s-1&last_seq=",
        "session=s-1&last_seq=%EF%BC%91",  # a full-width digit
        "session=s-1&last_seq=99999999999999999999",
        "session=&last_seq=1",
        "session=a%20b&last_seq=1",
        f"session={'s' * 257}&last_seq=1",
        "session=s-1&last_seq=9223372036854775808",  # past 2**63 - 1, as in an auth frame
        "session=s-1&session=s-2&last_seq=1",
        "&".join(f"p{i}=1" for i in range(40)),
    ],
)
def test_bad_resume_parameters_are_bad_requests(query: str) -> None:
    with pytest.raises(BadRequest):
        run(path=f"/ws?{query}")


# --- origins -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "expected"),
    [
        ("HTTPS://App.Example:443", "https://app.example"),
        ("http://app.example:80/", "http://app.example"),
        ("http://app.example:8080", "http://app.example:8080"),
        ("http://[::1]:8765", "http://[::1]:8765"),
        ("null", None),
        ("file://x", None),
        ("https://app.example/path", None),
        ("https://user@app.example", None),
        ("http://app.example:99999", None),
    ],
)
def test_normalise_origin(origin: str, expected: str | None) -> None:
    assert normalise_origin(origin) == expected


def test_own_origin() -> None:
    assert own_origin("ws", "Rtcs.Example:80") == "http://rtcs.example"
    assert own_origin("wss", "rtcs.example") == "https://rtcs.example"
    assert own_origin("wss", "rtcs.example:8443") == "https://rtcs.example:8443"
    assert own_origin("ws", None) is None
    assert own_origin("ws", "") is None
    assert own_origin("gopher", "rtcs.example") is None


def test_origin_allowed() -> None:
    own = "http://rtcs.example:8765"
    allowed = ["https://app.example"]
    assert origin_allowed(None, allowed, own)  # non-browser client
    assert origin_allowed("https://evil.example", [], own)  # empty allowlist: any
    assert origin_allowed("https://app.example:443", allowed, own)
    assert origin_allowed("http://RTCS.example:8765", allowed, own)
    assert not origin_allowed("https://evil.example", allowed, own)
    assert not origin_allowed("null", allowed, own)
    assert not origin_allowed("http://rtcs.example:8765", allowed, None)


def test_cookie_allowed() -> None:
    own = "https://rtcs.example"
    assert cookie_allowed("https://rtcs.example:443", [], own)
    assert cookie_allowed("https://app.example", ["https://app.example"], own)
    assert not cookie_allowed(None, ["https://app.example"], own)
    assert not cookie_allowed("https://evil.example", [], own)  # empty allowlist: own only
    assert not cookie_allowed("null", [], own)
    assert not cookie_allowed("https://rtcs.example", [], None)
