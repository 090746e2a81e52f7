"""The fast HMAC path of TokenVerifier accepts exactly what PyJWT accepts."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcs import config
from rtcs.auth.tokens import TokenVerifier
from rtcs.errors import AuthError

SETTINGS = config.load(None, {}, {"auth.algorithms": ["HS256", "HS512"], "auth.secret": "k" * 64})
VERIFIER = TokenVerifier(SETTINGS.auth)
SECRET = SETTINGS.auth.secret
NOW = int(time.time())
ALPHABET = "ABCabcxyz0189-_=+/. \u00e9"


def outcome(decide: Any, token: str) -> Any:
    try:
        return ("ok", decide(token))
    except AuthError:
        return ("refused",)


def fast(token: str) -> Any:
    payload = VERIFIER._decode_hmac(token)
    return VERIFIER._decode(token) if payload is None else payload


def tokens() -> st.SearchStrategy[str]:
    claims = st.fixed_dictionaries(
        {"sub": st.text(min_size=1, max_size=5), "exp": st.just(NOW + 60)},
        optional={"roles": st.lists(st.text(max_size=3), max_size=2), "aud": st.text(max_size=3)},
    )
    header = st.fixed_dictionaries({}, optional={"kid": st.text(max_size=3), "cty": st.just("x")})
    key = st.sampled_from([SECRET, SECRET + "x"])
    alg = st.sampled_from(["HS256", "HS384", "HS512"])
    return st.builds(
        lambda c, h, k, a: jwt.encode(c, k, algorithm=a, headers=h), claims, header, key, alg
    )


@st.composite
def mutated(draw: st.DrawFn) -> str:
    token = draw(tokens())
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(token)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        ch = draw(st.sampled_from(ALPHABET))
        if op == "replace" and i < len(token):
            token = token[:i] + ch + token[i + 1 :]
        elif op == "insert":
            token = token[:i] + ch + token[i:]
        elif i < len(token):
            token = token[:i] + token[i + 1 :]
    return token


@settings(max_examples=400, deadline=None)
@given(mutated())
def test_fast_path_agrees_with_pyjwt(token: str) -> None:
    ours, theirs = outcome(fast, token), outcome(VERIFIER._decode, token)
    if ours != theirs:
        # The one difference allowed: rtcs is stricter about base64url
        # padding ("=" is not part of the compact serialisation, RFC 7515).
        assert ours == ("refused",) and "=" in token, (ours, theirs)


def test_padding_is_refused_although_pyjwt_tolerates_it() -> None:
    token = jwt.encode({"sub": "a", "exp": NOW + 60}, SECRET, algorithm="HS256") + "="
    assert outcome(fast, token) == ("refused",)


@settings(max_examples=100, deadline=None)
@given(
    st.one_of(
        st.none(), st.integers(), st.lists(st.just("HS256")), st.dictionaries(st.text(), st.text())
    )
)
def test_a_non_string_alg_is_refused_cleanly(alg: Any) -> None:
    header = base64.urlsafe_b64encode(json.dumps({"alg": alg}).encode()).rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(b'{"sub":"a","exp":9999999999}').rstrip(b"=").decode()
    token = f"{header}.{payload}.c2ln"
    assert outcome(fast, token) == ("refused",)
    assert outcome(VERIFIER.verify, token) == ("refused",)


def test_a_non_ascii_segment_is_refused_cleanly() -> None:
    header, _, signature = jwt.encode({"sub": "a", "exp": NOW + 60}, SECRET).split(".")
    token = f"{header}.\u00e9.{signature}"
    assert outcome(fast, token) == ("refused",)
    assert outcome(VERIFIER.verify, token) == ("refused",)


def test_alg_none_and_foreign_algorithms_are_refused() -> None:
    # "" is PyJWT's typed spelling of "no key" (alg none turns it into None).
    unsigned = jwt.encode({"sub": "a", "exp": NOW + 60}, "", algorithm="none")
    assert outcome(fast, unsigned) == ("refused",)
    hs384 = jwt.encode({"sub": "a", "exp": NOW + 60}, SECRET, algorithm="HS384")
    assert outcome(fast, hs384) == ("refused",)  # not in auth.algorithms
