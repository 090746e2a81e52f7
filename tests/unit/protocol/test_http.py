"""The request parser for the HTTP endpoints that take a body."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from rtcs.protocol.http import HttpError, parse_request, render_response

LIMITS = {"max_head": 1024, "max_body": 64}


def request(head: str, body: bytes = b"") -> bytes:
    return head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


def test_a_post_with_a_json_body_is_parsed() -> None:
    raw = request(
        "POST /admin/revoke?x=1&x=2 HTTP/1.1\nHost: a\nContent-Length: 15\nAuthorization: Bearer t",
        b'{"user": "bob"}',
    )
    parsed = parse_request(raw, **LIMITS)
    assert parsed is not None
    assert (parsed.method, parsed.path, parsed.body) == (
        "POST",
        "/admin/revoke",
        b'{"user": "bob"}',
    )
    assert parsed.query == {"x": ["1", "2"]}
    assert parsed.header("AUTHORIZATION") == "Bearer t"
    assert parsed.header("missing") is None


def test_incomplete_requests_need_more() -> None:
    raw = request("POST /a HTTP/1.1\nContent-Length: 10", b"12345")
    for cut in range(len(raw) + 1):
        assert parse_request(raw[:cut], **LIMITS) is None
    assert parse_request(raw + b"67890", **LIMITS) is not None


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (request("POST /a HTTP/1.1"), HTTPStatus.LENGTH_REQUIRED),
        (request("POST /a HTTP/1.1\nTransfer-Encoding: chunked"), HTTPStatus.NOT_IMPLEMENTED),
        (request("POST /a HTTP/1.1\nContent-Length: 65"), HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (request("POST /a HTTP/1.1\nContent-Length: -1"), HTTPStatus.BAD_REQUEST),
        (request("POST /a HTTP/1.1\nContent-Length: 1e3"), HTTPStatus.BAD_REQUEST),
        (request("POST /a HTTP/1.1\nContent-Length: 1\nContent-Length: 1"), HTTPStatus.BAD_REQUEST),
        (request("POST /a HTTP/2\nContent-Length: 0"), HTTPStatus.BAD_REQUEST),
        (request("POST  /a HTTP/1.1\nContent-Length: 0"), HTTPStatus.BAD_REQUEST),
        (request("POST a HTTP/1.1\nContent-Length: 0"), HTTPStatus.BAD_REQUEST),
        (request("POST /a HTTP/1.1\nBad Header: 1"), HTTPStatus.BAD_REQUEST),
        (request("POST /a HTTP/1.1\nno-colon"), HTTPStatus.BAD_REQUEST),
        ("POST /\u00e9 HTTP/1.1\r\n\r\n".encode(), HTTPStatus.BAD_REQUEST),
        (b"POST /a HTTP/1.1\r\n" + b"X: y\r\n" * 200, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
        (request("POST /a HTTP/1.1\n" + "X: y\n" * 101 + "Content-Length: 0"), None),
    ],
)
def test_bad_requests_name_their_status(raw: bytes, status: HTTPStatus | None) -> None:
    limits = LIMITS if status is not None else {"max_head": 4096, "max_body": 64}
    with pytest.raises(HttpError) as info:
        parse_request(raw, **limits)
    expected = status or HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    assert info.value.status == expected


def test_the_response_closes_the_connection() -> None:
    raw = render_response(HTTPStatus.ACCEPTED, b'{"ok":true}', "application/json")
    head, body = raw.split(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 202 Accepted\r\n")
    assert b"Content-Length: 11" in head and b"Connection: close" in head
    assert body == b'{"ok":true}'
