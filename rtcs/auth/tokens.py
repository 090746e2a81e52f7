"""JWT verification and minting (docs/protocol.md, "Authentication").

The verifier pins the algorithms from the configuration, caps the token length
before decoding anything, requires ``exp`` and ``sub``, checks ``aud``/``iss``
when configured, refuses a ``typ`` claim other than ``"access"`` and checks the
time claims against an explicit ``now`` (so tests and the connection actor
share one clock), including ``auth.max_token_lifetime``. Every failure is an
:class:`~rtcs.errors.AuthError` whose reason is short and never contains the
token (docs/architecture.md, "Library behaviour", lists the PyJWT traps this guards against).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import math
import time
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate

from rtcs.config import HMAC_ALGORITHMS
from rtcs.errors import AuthError, ConfigError

if TYPE_CHECKING:
    from rtcs.config import AuthSettings
    from rtcs.revocations import RevocationTable

__all__ = ["ACCESS_TYP", "MAX_SUB_LENGTH", "Identity", "TokenVerifier", "mint"]

MAX_SUB_LENGTH = 256
#: The only accepted value of a token's ``typ`` claim (compared exactly, case
#: included; an absent claim is accepted too). Not the JOSE header's ``typ``.
ACCESS_TYP = "access"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for.

    ``claims`` is a read-only copy of the token's payload (never the raw token);
    it is left out of the repr because it may hold personal data.
    """

    user: str
    roles: tuple[str, ...]
    session: str | None
    expires_at: float
    claims: Mapping[str, Any] = field(repr=False, compare=False)


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ConfigError(key, path, exc.strerror or "cannot be read") from None


def _load_public_key(path: str) -> Any:
    """Load a PEM public key, or the key of a PEM X.509 certificate."""
    data = _read(path, "auth.public_key_file")
    try:
        if b"BEGIN CERTIFICATE" in data:
            return load_pem_x509_certificate(data).public_key()
        return serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError("auth.public_key_file", path, f"not a PEM public key: {exc}") from None


def _load_jwks(path: str) -> jwt.PyJWKSet:
    data = _read(path, "auth.jwks_file")
    try:
        return jwt.PyJWKSet.from_json(data.decode("utf-8"))
    except (jwt.PyJWTError, ValueError) as exc:
        raise ConfigError("auth.jwks_file", path, f"not a usable JWK set: {exc}") from None


def _is_number(value: Any) -> bool:
    """True for a finite int or float (never a bool) that a float can hold.

    JSON allows integers of any size: ``10**309`` does not fit a float, and
    comparing or converting it later must not raise.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


class TokenVerifier:
    """Verifies tokens against the configured algorithms and key(s).

    Build one per process and share it: the keys are loaded once here.
    """

    def __init__(self, auth: AuthSettings) -> None:
        """Load the secret, the PEM public key and/or the JWKS file.

        ``auth`` must come from :func:`rtcs.config.load` (validated). With both a
        JWKS file and a public key, a token with a ``kid`` is checked against the
        JWKS and one without against the public key.

        Raises:
            ConfigError: a key file cannot be read or parsed, or no key is configured.
        """
        self._auth = auth
        #: Revoked users (``POST /admin/revoke``): their tokens issued at or
        #: before the revocation are refused. Set by the node; None in tools.
        self.revocations: RevocationTable | None = None
        self._algorithms = list(auth.algorithms)
        self._secret: bytes | None = None
        self._public_key: Any = None
        self._jwks: jwt.PyJWKSet | None = None
        if HMAC_ALGORITHMS.intersection(auth.algorithms):
            if not auth.secret:
                raise ConfigError("auth.secret", "", "required for HS* algorithms")
            self._secret = auth.secret.encode("utf-8")
            return
        if auth.public_key_file:
            self._public_key = _load_public_key(auth.public_key_file)
        if auth.jwks_file:
            self._jwks = _load_jwks(auth.jwks_file)
        if self._public_key is None and self._jwks is None:
            raise ConfigError("auth.public_key_file", "", "needs public_key_file or jwks_file")

    def verify(self, token: str, *, now: float | None = None) -> Identity:
        """Check ``token`` and return the identity it carries.

        ``now`` (seconds since the epoch) defaults to the wall clock; ``exp``,
        ``nbf`` and ``iat`` are checked against it with the configured leeway.

        Raises:
            AuthError: the token is too large, malformed, signed with another
                algorithm or key, not an access token (``typ``), expired, not yet
                valid, valid for longer than ``auth.max_token_lifetime``, for
                another audience or issuer, or its ``exp``, ``nbf``, ``iat``,
                ``sub``, ``roles`` or ``session`` claim is ill-typed (time
                claims must be finite numbers a float can hold).
        """
        if not isinstance(token, str) or not token:
            raise AuthError("missing token")
        # Cap before decoding: PyJWT happily decodes a 200 kB token.
        if len(token) > self._auth.max_token_bytes or (
            len(token.encode("utf-8", "surrogatepass")) > self._auth.max_token_bytes
        ):
            raise AuthError("token too large")
        now = time.time() if now is None else now
        payload = self._decode_hmac(token) if self._secret is not None else None
        if payload is None:
            payload = self._decode(token)
        return self._identity(payload, now)

    def _decode_hmac(self, token: str) -> dict[str, Any] | None:
        """Verify an HS256/384/512 token without PyJWT's per-character checks.

        Every connection is authenticated, so this is a hot path: PyJWT takes
        about 22 µs per token here, this about 5. It handles only the plain
        case (a header of ``alg``, ``typ``, ``kid``; an allowed HMAC
        algorithm; compact serialisation) and returns None for anything else,
        which PyJWT then decides. Claims are checked like :meth:`_decode`. It
        is stricter than PyJWT in one way: base64url segments must not carry
        ``=`` padding (RFC 7515 compact serialisation). A property test keeps
        the two paths in agreement.

        Raises:
            AuthError: a malformed token, a bad signature, or a claim check fails.
        """
        parts = token.split(".")
        if len(parts) != 3:
            raise AuthError("malformed token")
        header_b64, payload_b64, signature_b64 = parts
        header = _json_segment(header_b64)
        if not isinstance(header, dict) or not _PLAIN_HEADER.issuperset(header):
            return None
        alg = header.get("alg")
        if type(alg) is not str or alg not in self._algorithms or alg not in _HMAC_DIGESTS:
            return None  # PyJWT gives the precise refusal ("algorithm not allowed")
        digest = _HMAC_DIGESTS[alg]
        if not payload_b64.isascii():
            raise AuthError("malformed token")
        signed = (header_b64 + "." + payload_b64).encode("ascii")
        expected = hmac.new(self._secret, signed, digest).digest()  # type: ignore[arg-type]
        if not hmac.compare_digest(expected, _b64(signature_b64)):
            raise AuthError("bad signature")
        payload = _json_segment(payload_b64)
        if not isinstance(payload, dict):
            raise AuthError("malformed token")
        auth = self._auth
        for claim in ("exp", "sub"):
            if claim not in payload:
                raise AuthError(f"missing claim: {claim}")
        if auth.audience:
            audience = payload.get("aud")
            if audience is None:
                raise AuthError("missing claim: aud")
            audiences = [audience] if isinstance(audience, str) else audience
            if not isinstance(audiences, list) or auth.audience not in audiences:
                raise AuthError("wrong audience")
        if auth.issuer:
            if "iss" not in payload:
                raise AuthError("missing claim: iss")
            if payload["iss"] != auth.issuer:
                raise AuthError("wrong issuer")
        return payload

    def _key_for(self, token: str) -> Any:
        if self._secret is not None:
            return self._secret
        kid: Any = None
        if self._jwks is not None:
            kid = jwt.get_unverified_header(token).get("kid")
        if kid is not None and self._jwks is not None:
            try:
                return self._jwks[kid]
            except KeyError:
                raise AuthError("unknown key id") from None
        if self._public_key is not None:
            return self._public_key
        if self._jwks is not None and len(self._jwks.keys) == 1:
            return self._jwks.keys[0]
        raise AuthError("token has no key id")

    def _decode(self, token: str) -> dict[str, Any]:
        auth = self._auth
        require = ["exp", "sub"]
        if auth.audience:
            require.append("aud")
        if auth.issuer:
            require.append("iss")
        try:
            return jwt.decode(
                token,
                key=self._key_for(token),
                algorithms=self._algorithms,
                audience=auth.audience or None,
                issuer=auth.issuer or None,
                options={
                    "require": require,
                    # Time claims are checked in _identity against the caller's now.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    # "aud" is only checked when an audience is configured.
                    "verify_aud": bool(auth.audience),
                    "verify_iss": bool(auth.issuer),
                },
            )
        except AuthError:
            raise
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"missing claim: {exc.claim}") from None
        except jwt.InvalidAudienceError:
            raise AuthError("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise AuthError("wrong issuer") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError("algorithm not allowed") from None
        except jwt.InvalidSignatureError:
            raise AuthError("bad signature") from None
        except jwt.exceptions.InvalidSubjectError:
            raise AuthError("bad sub claim") from None
        except jwt.DecodeError:
            raise AuthError("malformed token") from None
        except jwt.PyJWTError:
            raise AuthError("invalid token") from None
        except (ValueError, TypeError, json.JSONDecodeError, RecursionError):
            # Malformed input can escape PyJWT as a plain ValueError/TypeError.
            raise AuthError("malformed token") from None

    def _identity(self, payload: dict[str, Any], now: float) -> Identity:
        """The claim checks both decoding paths share (docs/protocol.md, "Authentication").

        Raises:
            AuthError: a claim check fails.
        """
        # A refresh or ID token signed with the same key is not a credential here.
        if payload.get("typ", ACCESS_TYP) != ACCESS_TYP:
            raise AuthError("not an access token")
        leeway = self._auth.leeway
        exp = payload["exp"]
        if not _is_number(exp):
            raise AuthError("bad exp claim")
        if exp <= now - leeway:
            raise AuthError("token expired")
        # NumericDates are whole seconds and mint() rounds exp up, so the limit
        # is rounded up too: a token minted for exactly the limit is accepted.
        if exp > math.ceil(now + self._auth.max_token_lifetime) + leeway:
            raise AuthError("token lifetime too long")
        for claim in ("nbf", "iat"):
            if claim in payload:
                value = payload[claim]
                if not _is_number(value):
                    raise AuthError(f"bad {claim} claim")
                if value > now + leeway:
                    raise AuthError("token not yet valid")
        sub = payload["sub"]
        if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_LENGTH:
            raise AuthError("bad sub claim")
        if self.revocations is not None and self.revocations.user_refused(
            sub, payload.get("iat"), now
        ):
            raise AuthError("token revoked")
        roles = payload.get("roles", [])
        if not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles):
            raise AuthError("bad roles claim")
        session = payload.get("session")
        if session is not None and (not isinstance(session, str) or not session):
            raise AuthError("bad session claim")
        return Identity(
            user=sub,
            roles=tuple(roles),
            session=session,
            expires_at=float(exp),
            claims=types.MappingProxyType(dict(payload)),
        )


# Header fields the fast HMAC path understands; anything else goes to PyJWT.
_PLAIN_HEADER = frozenset({"alg", "typ", "kid"})
_HMAC_DIGESTS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def _b64(segment: str) -> bytes:
    """Strict base64url decoding (RFC 7515): no padding, no stray characters.

    Raises:
        AuthError: the segment is not base64url.
    """
    try:
        raw = segment.encode("ascii")
        if b"=" in raw or b"+" in raw or b"/" in raw:
            raise ValueError("not base64url")
        raw = raw.replace(b"-", b"+").replace(b"_", b"/") + b"=" * (-len(raw) % 4)
        return binascii.a2b_base64(raw, strict_mode=True)
    except (ValueError, binascii.Error, UnicodeEncodeError):
        raise AuthError("malformed token") from None


def _json_segment(segment: str) -> Any:
    try:
        return json.loads(_b64(segment))
    except (ValueError, RecursionError):
        raise AuthError("malformed token") from None


def mint(
    auth: AuthSettings,
    sub: str,
    *,
    roles: Sequence[str] = (),
    ttl: float = 3600,
    session: str | None = None,
    extra: Mapping[str, Any] | None = None,
    now: float | None = None,
    kid: str | None = None,
) -> str:
    """Mint a token that :class:`TokenVerifier` built from ``auth`` accepts.

    Signs with the first configured algorithm: HS* with ``auth.secret``,
    RS256/ES256 with ``auth.private_key_file``. Sets ``sub``, ``iat``, ``exp``
    (``now + ttl``), ``roles``, ``session`` when given, and ``aud``/``iss`` when
    configured; ``extra`` claims are added first, so these always win. ``kid``
    goes into the header (for JWKS verification).

    Raises:
        ConfigError: no secret, or no readable private key for RS256/ES256.
        ValueError: an empty or too long ``sub``, or a ``ttl`` that is not
            positive or exceeds ``auth.max_token_lifetime``.
    """
    if not sub or len(sub) > MAX_SUB_LENGTH:
        raise ValueError(f"sub must be 1 to {MAX_SUB_LENGTH} characters")
    if not ttl > 0:
        raise ValueError("ttl must be positive")
    if ttl > auth.max_token_lifetime:
        raise ValueError(
            f"ttl must not exceed auth.max_token_lifetime ({auth.max_token_lifetime} s)"
        )
    issued = time.time() if now is None else now
    claims: dict[str, Any] = dict(extra or {})
    claims.update(sub=sub, iat=int(issued), exp=math.ceil(issued + ttl), roles=list(roles))
    if session is not None:
        claims["session"] = session
    if auth.audience:
        claims["aud"] = auth.audience
    if auth.issuer:
        claims["iss"] = auth.issuer
    algorithm = auth.algorithms[0]
    key: Any
    if algorithm in HMAC_ALGORITHMS:
        if not auth.secret:
            raise ConfigError("auth.secret", "", f"required to mint {algorithm} tokens")
        key = auth.secret.encode("utf-8")
    else:
        if not auth.private_key_file:
            raise ConfigError("auth.private_key_file", "", f"required to mint {algorithm} tokens")
        data = _read(auth.private_key_file, "auth.private_key_file")
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "auth.private_key_file", auth.private_key_file, f"not a PEM private key: {exc}"
            ) from None
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)
