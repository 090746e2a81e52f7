"""The fast HMAC path of TokenVerifier accepts exactly what PyJWT accepts.

Both decoding paths share the claim checks (``typ``, time claims, lifetime):
the last tests run the whole verification on both and check that absurd time
claims and non-access tokens are refused by each.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import time
from typing import Any

import jwt
from hypothesis import given, settings
from hypothesis import strategies as st

from rtcs import config
from rtcs.auth.tokens import Identity, TokenVerifier
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


# --- the whole verification: typ, time claims and lifetime --------------------------

LIFETIME = SETTINGS.auth.max_token_lifetime


def verified(decode: Any, token: str) -> Any:
    """The outcome of ``decode`` followed by the shared claim checks, at NOW."""
    return outcome(lambda t: VERIFIER._identity(decode(t), NOW), token)


def usable_time(value: Any) -> bool:
    """A time claim the verifier may accept: a finite number a float can hold."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


TIME_VALUES = st.one_of(
    st.sampled_from([NOW - 60, NOW, NOW + 60, NOW + LIFETIME, NOW + LIFETIME + 1]),
    st.sampled_from([10**309, -(10**309), 10**300, 1e308, -1e308, 0, True, False, None]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=1),
)
TYP_VALUES = st.one_of(
    st.sampled_from(["access", "refresh", "Access", "ACCESS", "JWT", ""]),
    st.text(max_size=6),
    st.integers(),
    st.booleans(),
    st.none(),
)


@settings(max_examples=400, deadline=None)
@given(
    st.fixed_dictionaries(
        {"sub": st.text(min_size=1, max_size=5), "exp": TIME_VALUES},
        optional={"nbf": TIME_VALUES, "iat": TIME_VALUES, "typ": TYP_VALUES},
    ),
    st.sampled_from([{}, {"kid": "k"}]),
)
def test_both_paths_apply_the_same_claim_checks(claims: dict[str, Any], header: Any) -> None:
    token = jwt.encode(claims, SECRET, algorithm="HS256", headers=header)
    ours, theirs = verified(fast, token), verified(VERIFIER._decode, token)
    assert ours == theirs, (claims, ours, theirs)
    if any(not usable_time(v) for k, v in claims.items() if k in ("exp", "nbf", "iat")):
        assert ours == ("refused",)
    if claims.get("typ", "access") != "access":
        assert ours == ("refused",)
    if ours != ("refused",):
        assert isinstance(ours[1], Identity)
        assert NOW < ours[1].expires_at <= NOW + LIFETIME


# Number spellings json.dumps never writes, and some it does.
LITERALS = ["1e400", "-1e400", "1" + "0" * 309, "-1" + "0" * 309, "1e308", "NaN", "Infinity"]
LITERALS += ["-Infinity", "true", "null", '"1"', "[]", "{}", "1.5", str(NOW - 60), str(NOW + 60)]


def signed(payload: str) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(payload.encode())
    mac = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(mac)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(LITERALS),
    st.dictionaries(st.sampled_from(["nbf", "iat"]), st.sampled_from(LITERALS)),
)
def test_absurd_number_spellings_are_refused_by_both_paths(exp: str, others: Any) -> None:
    fields = ['"sub":"a"', f'"exp":{exp}', *(f'"{k}":{v}' for k, v in others.items())]
    token = signed("{" + ",".join(fields) + "}")
    ours, theirs = verified(fast, token), verified(VERIFIER._decode, token)
    assert ours == theirs, (fields, ours, theirs)
    sane = {str(NOW - 60), "1.5"}  # for nbf and iat: in the past
    if exp != str(NOW + 60) or not set(others.values()) <= sane:
        assert ours == ("refused",)
    else:
        assert ours[0] == "ok"
    assert outcome(lambda t: VERIFIER.verify(t, now=NOW), token)[0] == ours[0]
