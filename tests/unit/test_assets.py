"""Packaged files served over HTTP (rtcs.assets): ETags and conditional answers."""

from __future__ import annotations

from http import HTTPStatus
from importlib import resources

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcs.assets import CLIENT_JS, DEMO_PAGE, Asset, answer, etag_matches, load

ETAG = '"abc"'


@pytest.mark.parametrize(
    ("values", "matches"),
    [
        ([], False),
        (['"abc"'], True),
        (['W/"abc"'], True),
        (['"x", "abc"'], True),
        (['"x"', ' "abc" '], True),
        (["*"], True),
        (['"abcd"'], False),
        (["abc"], False),
        ([""], False),
    ],
)
def test_etag_matches(values: list[str], matches: bool) -> None:
    assert etag_matches(values, ETAG) is matches


@given(st.lists(st.text(max_size=30), max_size=3))
def test_any_if_none_match_is_read_without_error(values: list[str]) -> None:
    etag_matches(values, ETAG)


def test_the_client_and_its_etag() -> None:
    packaged = resources.files("rtcs").joinpath("static", "rtcs.js").read_bytes()
    status, body, headers = answer(CLIENT_JS, []) or pytest.fail("rtcs.js not packaged")
    assert (status, body) == (HTTPStatus.OK, packaged)
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Content-Length"] == str(len(packaged))
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Access-Control-Allow-Origin"] == "*"
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    status, body, headers = answer(CLIENT_JS, [etag]) or pytest.fail("rtcs.js not packaged")
    assert (status, body, headers["ETag"]) == (HTTPStatus.NOT_MODIFIED, b"", etag)
    assert "Content-Type" not in headers and "Content-Length" not in headers


def test_the_demo_page_keeps_to_its_origin() -> None:
    status, body, headers = answer(DEMO_PAGE, []) or pytest.fail("demo.html not packaged")
    assert status == HTTPStatus.OK
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    assert "Access-Control-Allow-Origin" not in headers
    assert body.startswith(b"<!doctype html>")


def test_a_missing_file_is_none() -> None:
    assert load("no-such-file.js") is None
    assert answer(Asset("no-such-file.js", "text/plain", {}), []) is None
