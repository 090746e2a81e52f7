"""Tests for rtcs.auth.tokens: every check of TokenVerifier.verify, and mint."""

from __future__ import annotations

import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from rtcs.auth.tokens import Identity, TokenVerifier, mint
from rtcs.config import AuthSettings, load
from rtcs.errors import AuthError, ConfigError

SECRET = "k" * 32
NOW = 1_700_000_000.0


def hs_auth(**overrides: object) -> AuthSettings:
    dotted = {"auth.secret": SECRET, **{f"auth.{k}": v for k, v in overrides.items()}}
    return load(overrides=dotted).auth


def hs_token(claims: dict[str, object], *, secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


def claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "exp": NOW + 60, "iat": NOW, **extra}


def reason(verifier: TokenVerifier, token: str, now: float = NOW) -> str:
    with pytest.raises(AuthError) as info:
        verifier.verify(token, now=now)
    assert token not in info.value.reason
    return info.value.reason


def write_pem_keys(tmp_path: Path, kind: str) -> tuple[Path, Path, object]:
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        private = ec.generate_private_key(ec.SECP256R1())
    private_path = tmp_path / f"{kind}-private.pem"
    public_path = tmp_path / f"{kind}-public.pem"
    private_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path, private


def asym_auth(
    alg: str, public: Path | None = None, private: Path | None = None, jwks: Path | None = None
) -> AuthSettings:
    overrides: dict[str, object] = {"auth.algorithms": alg, "server.host": "0.0.0.0"}
    if public is not None:
        overrides["auth.public_key_file"] = str(public)
    if private is not None:
        overrides["auth.private_key_file"] = str(private)
    if jwks is not None:
        overrides["auth.jwks_file"] = str(jwks)
    return load(overrides=overrides).auth


# --- HS256 ---------------------------------------------------------------------------


def test_valid_hs256_token() -> None:
    verifier = TokenVerifier(hs_auth())
    identity = verifier.verify(hs_token(claims(roles=["user", "admin"], session="s-1")), now=NOW)
    assert identity == Identity("alice", ("user", "admin"), "s-1", NOW + 60, {})
    assert identity.claims["sub"] == "alice"
    assert "alice" in repr(identity) and "claims" not in repr(identity)


def test_roles_absent_means_no_roles() -> None:
    identity = TokenVerifier(hs_auth()).verify(hs_token(claims()), now=NOW)
    assert identity.roles == ()
    assert identity.session is None


def test_claims_are_read_only() -> None:
    identity = TokenVerifier(hs_auth()).verify(hs_token(claims()), now=NOW)
    with pytest.raises(TypeError):
        identity.claims["sub"] = "mallory"  # type: ignore[index]


def test_expired_with_explicit_now() -> None:
    verifier = TokenVerifier(hs_auth())
    token = hs_token(claims())
    assert verifier.verify(token, now=NOW + 59).user == "alice"
    assert reason(verifier, token, now=NOW + 60) == "token expired"


def test_leeway_extends_expiry() -> None:
    verifier = TokenVerifier(hs_auth(leeway=10))
    token = hs_token(claims())
    assert verifier.verify(token, now=NOW + 65).user == "alice"
    assert reason(verifier, token, now=NOW + 70) == "token expired"


def test_wall_clock_is_the_default_now() -> None:
    verifier = TokenVerifier(hs_auth())
    assert reason(verifier, hs_token(claims()), now=None) == "token expired"  # type: ignore[arg-type]


def test_nbf_and_iat_in_the_future() -> None:
    verifier = TokenVerifier(hs_auth())
    assert reason(verifier, hs_token(claims(nbf=NOW + 10))) == "token not yet valid"
    assert reason(verifier, hs_token(claims(iat=NOW + 10))) == "token not yet valid"
    assert verifier.verify(hs_token(claims(nbf=NOW + 10)), now=NOW + 10).user == "alice"


@pytest.mark.parametrize("claim", ["exp", "sub"])
def test_missing_required_claim(claim: str) -> None:
    body = claims()
    del body[claim]
    assert reason(TokenVerifier(hs_auth()), hs_token(body)) == f"missing claim: {claim}"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"exp": "tomorrow"}, "bad exp claim"),
        ({"exp": True}, "bad exp claim"),
        ({"nbf": "now"}, "bad nbf claim"),
        ({"sub": ""}, "bad sub claim"),
        ({"sub": 42}, "bad sub claim"),
        ({"sub": "x" * 257}, "bad sub claim"),
        ({"roles": "admin"}, "bad roles claim"),
        ({"roles": ["user", 7]}, "bad roles claim"),
        ({"roles": {"admin": True}}, "bad roles claim"),
        ({"session": 12}, "bad session claim"),
    ],
)
def test_ill_typed_claims(extra: dict[str, object], expected: str) -> None:
    assert reason(TokenVerifier(hs_auth()), hs_token(claims(**extra))) == expected


def test_sub_of_256_characters_is_accepted() -> None:
    identity = TokenVerifier(hs_auth()).verify(hs_token(claims(sub="x" * 256)), now=NOW)
    assert identity.user == "x" * 256


def test_audience_and_issuer() -> None:
    verifier = TokenVerifier(hs_auth(audience="rtcs", issuer="https://idp.example"))
    good = claims(aud="rtcs", iss="https://idp.example")
    assert verifier.verify(hs_token(good), now=NOW).user == "alice"
    assert reason(verifier, hs_token({**good, "aud": "other"})) == "wrong audience"
    assert reason(verifier, hs_token({**good, "iss": "https://evil.example"})) == "wrong issuer"
    assert reason(verifier, hs_token(claims(iss="https://idp.example"))) == "missing claim: aud"
    assert reason(verifier, hs_token(claims(aud="rtcs"))) == "missing claim: iss"


def test_aud_in_token_is_ignored_when_no_audience_is_configured() -> None:
    assert TokenVerifier(hs_auth()).verify(hs_token(claims(aud="x")), now=NOW).user == "alice"


def test_wrong_secret() -> None:
    token = hs_token(claims(), secret="z" * 32)
    assert reason(TokenVerifier(hs_auth()), token) == "bad signature"


def test_alg_none_is_rejected() -> None:
    token = jwt.encode(claims(), "", algorithm="none")
    assert reason(TokenVerifier(hs_auth()), token) == "algorithm not allowed"


def test_algorithm_not_pinned_is_rejected() -> None:
    token = hs_token(claims(), alg="HS512", secret="k" * 64)
    assert reason(TokenVerifier(hs_auth()), token) == "algorithm not allowed"


def test_oversized_token_is_rejected_before_decoding() -> None:
    verifier = TokenVerifier(hs_auth(max_token_bytes=200))
    token = hs_token(claims(pad="x" * 300))
    assert reason(verifier, token) == "token too large"
    # The same claims in a garbage token: the cap fires before any parsing.
    assert reason(verifier, "!" * 201) == "token too large"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "a.b", "é.é.é", "eyJhbGciOiJIUzI1NiJ9.e30."])
def test_malformed_tokens(token: str) -> None:
    verifier = TokenVerifier(hs_auth())
    with pytest.raises(AuthError):
        verifier.verify(token, now=NOW)


def test_payload_that_is_not_an_object() -> None:
    token = jwt.api_jws.PyJWS().encode(b"[1, 2]", SECRET, algorithm="HS256")
    assert reason(TokenVerifier(hs_auth()), token) == "malformed token"


# --- RS256 / ES256 -------------------------------------------------------------------


@pytest.mark.parametrize(("alg", "kind"), [("RS256", "rsa"), ("ES256", "ec")])
def test_asymmetric_pem_round_trip(tmp_path: Path, alg: str, kind: str) -> None:
    private, public, _ = write_pem_keys(tmp_path, kind)
    auth = asym_auth(alg, public=public, private=private)
    token = mint(auth, "bob", roles=["user"], ttl=60, now=NOW)
    assert jwt.get_unverified_header(token)["alg"] == alg
    identity = TokenVerifier(auth).verify(token, now=NOW)
    assert (identity.user, identity.roles, identity.expires_at) == ("bob", ("user",), NOW + 60)


def test_token_signed_by_another_key_pair(tmp_path: Path) -> None:
    _, public, _ = write_pem_keys(tmp_path, "rsa")
    other = tmp_path / "other"
    other.mkdir()
    other_private, _, _ = write_pem_keys(other, "rsa")
    token = mint(asym_auth("RS256", public=public, private=other_private), "bob", now=NOW)
    assert reason(TokenVerifier(asym_auth("RS256", public=public)), token) == "bad signature"


def test_hs_token_signed_with_the_public_key_is_rejected(tmp_path: Path) -> None:
    # Key confusion: the attacker knows the RS256 public key and uses it as an
    # HMAC secret. With RS256 pinned the HS256 token never reaches verification.
    _, public, _ = write_pem_keys(tmp_path, "rsa")
    forged = jwt.api_jws.PyJWS()
    forged._algorithms["HS256"].prepare_key = lambda key: key  # type: ignore[method-assign]
    token = forged.encode(json.dumps(claims()).encode(), public.read_bytes(), algorithm="HS256")
    verifier = TokenVerifier(asym_auth("RS256", public=public))
    assert reason(verifier, token) == "algorithm not allowed"


def test_rs_token_is_rejected_by_an_hs_verifier(tmp_path: Path) -> None:
    private, public, _ = write_pem_keys(tmp_path, "rsa")
    token = mint(asym_auth("RS256", public=public, private=private), "bob", now=NOW)
    assert reason(TokenVerifier(hs_auth()), token) == "algorithm not allowed"


def test_jwks_selects_the_key_by_kid(tmp_path: Path) -> None:
    keys = []
    privates = {}
    for kid in ("k1", "k2"):
        folder = tmp_path / kid
        folder.mkdir()
        private, _, key = write_pem_keys(folder, "rsa")
        privates[kid] = private
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))  # type: ignore[attr-defined]
        keys.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": keys}))
    verifier = TokenVerifier(asym_auth("RS256", jwks=jwks))
    for kid in ("k1", "k2"):
        token = mint(asym_auth("RS256", jwks=jwks, private=privates[kid]), kid, kid=kid, now=NOW)
        assert verifier.verify(token, now=NOW).user == kid
    # Signed with k1's key but claiming k2: the signature check fails.
    wrong = mint(asym_auth("RS256", jwks=jwks, private=privates["k1"]), "x", kid="k2", now=NOW)
    assert reason(verifier, wrong) == "bad signature"
    unknown = mint(asym_auth("RS256", jwks=jwks, private=privates["k1"]), "x", kid="k9", now=NOW)
    assert reason(verifier, unknown) == "unknown key id"
    no_kid = mint(asym_auth("RS256", jwks=jwks, private=privates["k1"]), "x", now=NOW)
    assert reason(verifier, no_kid) == "token has no key id"


def test_unusable_key_files_are_config_errors(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a key")
    with pytest.raises(ConfigError) as info:
        TokenVerifier(asym_auth("RS256", public=bogus))
    assert info.value.key == "auth.public_key_file"
    with pytest.raises(ConfigError) as info:
        TokenVerifier(asym_auth("RS256", jwks=bogus))
    assert info.value.key == "auth.jwks_file"


# --- mint ----------------------------------------------------------------------------


def test_mint_round_trip_with_aud_iss_session_and_extra() -> None:
    auth = hs_auth(audience="rtcs", issuer="idp")
    token = mint(
        auth,
        "carol",
        roles=("a",),
        ttl=30,
        session="s-9",
        extra={"tenant": "t1", "sub": "ignored"},
        now=NOW,
    )
    identity = TokenVerifier(auth).verify(token, now=NOW + 29)
    assert (identity.user, identity.roles, identity.session) == ("carol", ("a",), "s-9")
    assert identity.claims["tenant"] == "t1"
    assert (identity.claims["aud"], identity.claims["iss"]) == ("rtcs", "idp")
    assert reason(TokenVerifier(auth), token, now=NOW + 30) == "token expired"


def test_mint_asymmetric_needs_a_private_key(tmp_path: Path) -> None:
    _, public, _ = write_pem_keys(tmp_path, "rsa")
    with pytest.raises(ConfigError) as info:
        mint(asym_auth("RS256", public=public), "bob")
    assert info.value.key == "auth.private_key_file"


@pytest.mark.parametrize(("sub", "ttl"), [("", 60), ("x" * 257, 60), ("bob", 0), ("bob", -1)])
def test_mint_rejects_bad_arguments(sub: str, ttl: float) -> None:
    with pytest.raises(ValueError):
        mint(hs_auth(), sub, ttl=ttl)


# --- typ, lifetime and absurd time claims (docs/protocol.md, "Authentication") -------

# A header field the HMAC fast path leaves to PyJWT: every check below runs on both paths.
PATHS = pytest.mark.parametrize("headers", [None, {"cty": "x"}], ids=["fast", "pyjwt"])


def raw_token(payload: str, headers: dict[str, str] | None = None) -> str:
    """An HS256 token over ``payload`` exactly as written (NaN, 1e400, 10**309 …)."""
    return jwt.api_jws.PyJWS().encode(payload.encode(), SECRET, algorithm="HS256", headers=headers)


@PATHS
@pytest.mark.parametrize("typ", ["access", None])
def test_typ_access_or_absent_is_accepted(headers: dict[str, str] | None, typ: str | None) -> None:
    body = claims() if typ is None else claims(typ=typ)
    token = jwt.encode(body, SECRET, algorithm="HS256", headers=headers)
    assert jwt.get_unverified_header(token)["typ"] == "JWT"  # the header's typ is another thing
    assert TokenVerifier(hs_auth()).verify(token, now=NOW).user == "alice"


@PATHS
@pytest.mark.parametrize(
    "typ", ["refresh", "Access", "ACCESS", "id", "", None, 1, True, ["access"]]
)
def test_typ_other_than_access_is_refused(headers: dict[str, str] | None, typ: object) -> None:
    token = jwt.encode(claims(typ=typ), SECRET, algorithm="HS256", headers=headers)
    assert reason(TokenVerifier(hs_auth()), token) == "not an access token"


def test_typ_refresh_is_refused_with_asymmetric_keys(tmp_path: Path) -> None:
    private, public, _ = write_pem_keys(tmp_path, "ec")
    auth = asym_auth("ES256", public=public, private=private)
    token = mint(auth, "bob", extra={"typ": "refresh"}, now=NOW)
    assert reason(TokenVerifier(auth), token) == "not an access token"


@PATHS
def test_max_token_lifetime(headers: dict[str, str] | None) -> None:
    verifier = TokenVerifier(hs_auth())
    limit = verifier._auth.max_token_lifetime
    assert limit == 86400
    longest = jwt.encode(claims(exp=NOW + limit), SECRET, algorithm="HS256", headers=headers)
    assert verifier.verify(longest, now=NOW).user == "alice"
    longer = jwt.encode(claims(exp=NOW + limit + 1), SECRET, algorithm="HS256", headers=headers)
    assert reason(verifier, longer) == "token lifetime too long"
    assert verifier.verify(longer, now=NOW + 1).user == "alice"  # once it is close enough


def test_max_token_lifetime_is_configurable_and_leeway_extends_it() -> None:
    token = hs_token(claims(exp=NOW + 70))
    assert reason(TokenVerifier(hs_auth(max_token_lifetime=60)), token) == "token lifetime too long"
    strict_with_leeway = TokenVerifier(hs_auth(max_token_lifetime=60, leeway=10))
    assert strict_with_leeway.verify(token, now=NOW).user == "alice"


@pytest.mark.parametrize("issued", [NOW, NOW + 0.25, NOW + 0.999])
def test_a_token_minted_for_the_whole_lifetime_is_accepted(issued: float) -> None:
    # mint() rounds exp up to a whole second; the limit is rounded up alike.
    auth = hs_auth(max_token_lifetime=60)
    token = mint(auth, "alice", ttl=60, now=issued)
    assert TokenVerifier(auth).verify(token, now=issued).user == "alice"


def test_mint_refuses_a_ttl_beyond_the_lifetime_limit() -> None:
    with pytest.raises(ValueError, match="max_token_lifetime"):
        mint(hs_auth(max_token_lifetime=60), "alice", ttl=61)


ABSURD = ["1" + "0" * 309, "-1" + "0" * 309, "1e400", "-1e400", "NaN", "Infinity", "-Infinity"]
ABSURD += ["true", "false", '"1700000000"', "[1700000000]", '{"v": 1}']


@PATHS
@pytest.mark.parametrize("value", ABSURD)
def test_absurd_exp_is_a_clean_refusal(headers: dict[str, str] | None, value: str) -> None:
    token = raw_token(f'{{"sub": "alice", "exp": {value}}}', headers)
    assert reason(TokenVerifier(hs_auth()), token) == "bad exp claim"


@PATHS
@pytest.mark.parametrize("claim", ["nbf", "iat"])
@pytest.mark.parametrize("value", ABSURD)
def test_absurd_nbf_and_iat_are_a_clean_refusal(
    headers: dict[str, str] | None, claim: str, value: str
) -> None:
    token = raw_token(f'{{"sub": "alice", "exp": {int(NOW) + 60}, "{claim}": {value}}}', headers)
    assert reason(TokenVerifier(hs_auth()), token) == f"bad {claim} claim"


@PATHS
def test_huge_but_finite_time_claims_are_refused(headers: dict[str, str] | None) -> None:
    verifier = TokenVerifier(hs_auth())
    far = raw_token('{"sub": "alice", "exp": 1e308}', headers)
    assert reason(verifier, far) == "token lifetime too long"
    big_int = raw_token('{"sub": "alice", "exp": 1' + "0" * 300 + "}", headers)
    assert reason(verifier, big_int) == "token lifetime too long"
    future = raw_token(f'{{"sub": "alice", "exp": {int(NOW) + 60}, "nbf": 1e308}}', headers)
    assert reason(verifier, future) == "token not yet valid"


@PATHS
def test_null_exp_is_refused(headers: dict[str, str] | None) -> None:
    # PyJWT treats a null required claim as missing; the fast path as ill-typed.
    token = raw_token('{"sub": "alice", "exp": null}', headers)
    assert reason(TokenVerifier(hs_auth()), token) in {"missing claim: exp", "bad exp claim"}


def test_an_integer_too_long_for_json_is_malformed() -> None:
    # Python refuses to parse integers of more than 4300 digits.
    token = raw_token('{"sub": "alice", "exp": 1' + "0" * 5000 + "}")
    assert reason(TokenVerifier(hs_auth(max_token_bytes=16384)), token) == "malformed token"
