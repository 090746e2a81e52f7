"""Reading a JWT's exp without its key, and when to refresh it."""

from __future__ import annotations

import base64
import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rtcs.auth.tokens import mint
from rtcs.client._tokens import MIN_RETRY, refresh_delay, retry_delay, token_expiry
from rtcs.config import AuthSettings


def _jwt(payload: object) -> str:
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"


def test_reads_the_exp_of_a_token_rtcs_accepts() -> None:
    auth = AuthSettings(secret="s" * 32)
    token = mint(auth, "alice", ttl=90, now=1_700_000_000.5)
    assert token_expiry(token) == 1_700_000_091.0


@pytest.mark.parametrize("exp", [1_700_000_000, 1_700_000_000.25])
def test_integer_and_float_exp(exp: float) -> None:
    assert token_expiry(_jwt({"sub": "a", "exp": exp})) == exp


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not a token",
        "a.b",
        "a.b.c.d",
        "a..c",
        "a.!!!.c",
        "a." + base64.urlsafe_b64encode(b"\xff\xfe").decode() + ".c",
        _jwt([1, 2]),
        _jwt({"sub": "a"}),
        _jwt({"exp": "1700000000"}),
        _jwt({"exp": True}),
        _jwt({"exp": None}),
        _jwt({"exp": 10**400}),
    ],
)
def test_unreadable_tokens_have_no_expiry(token: str) -> None:
    assert token_expiry(token) is None


def test_non_finite_exp_is_unreadable() -> None:
    segment = base64.urlsafe_b64encode(b'{"exp": Infinity}').rstrip(b"=").decode()
    assert token_expiry(f"h.{segment}.s") is None


@given(st.text())
def test_any_text_gives_a_finite_expiry_or_none(token: str) -> None:
    exp = token_expiry(token)
    assert exp is None or math.isfinite(exp)


def test_refresh_a_margin_before_expiry() -> None:
    assert refresh_delay(1000.0, now=100.0, margin=60.0) == 840.0


def test_a_short_token_is_refreshed_after_three_quarters_of_its_life() -> None:
    assert refresh_delay(102.0, now=100.0, margin=60.0) == 1.5


def test_an_expired_token_is_refreshed_at_once() -> None:
    assert refresh_delay(90.0, now=100.0, margin=60.0) == 0.0


def test_a_failed_refresh_is_retried_while_the_token_lasts() -> None:
    assert retry_delay(160.0, now=100.0) == 30.0
    assert retry_delay(101.5, now=100.0) == MIN_RETRY
    assert retry_delay(100.5, now=100.0) is None  # expires before the next try
    assert retry_delay(90.0, now=100.0) is None
