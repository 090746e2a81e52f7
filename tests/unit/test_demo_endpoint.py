"""The demo's server side (rtcs.demo): names, the token endpoint, the role ``demo``,
and its settings (``[demo]``, ``metrics.stats_topic``)."""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from rtcs.auth.permissions import Policy
from rtcs.auth.tokens import TokenVerifier
from rtcs.config import Settings, load
from rtcs.demo import (
    MAX_NAME_LENGTH,
    check_name,
    decode,
    demo_role,
    policy_rbac,
    token_answer,
)
from rtcs.errors import BadRequest, ConfigError
from rtcs.protocol.http import HttpRequest
from rtcs.revocations import Revocation, RevocationTable

NOW = 1_800_000_000.0


def post(payload: Any) -> HttpRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return HttpRequest("POST", "/demo/token", {}, (), body)


def demo_settings(**overrides: Any) -> Settings:
    return load(overrides={"demo.enabled": True, **overrides})


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["alice", "a", "Bob_2", "x-y", "a" * MAX_NAME_LENGTH])
def test_good_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "a" * (MAX_NAME_LENGTH + 1), "a b", "a.b", "dm:x", "ünï", "a\n", 3, None, ["a"]]
)
def test_bad_names(name: object) -> None:
    with pytest.raises(BadRequest, match="characters"):
        check_name(name)


@given(st.one_of(st.text(max_size=40), st.integers(), st.none()))
def test_any_name_is_accepted_or_refused_with_bad_request(name: object) -> None:
    try:
        assert check_name(name) == name
    except BadRequest:
        return


@given(st.binary(max_size=64))
def test_any_body_decodes_or_is_bad_request(body: bytes) -> None:
    try:
        decode(body)
    except BadRequest:
        return


def test_decode() -> None:
    assert decode(b'{"user": "alice"}') == "alice"
    for body in (b"", b"[]", b'{"user": "alice", "x": 1}', b'{"name": "alice"}', b"\xff"):
        with pytest.raises(BadRequest):
            decode(body)


# -- the role ------------------------------------------------------------------------------


def test_no_demo_role_unless_enabled() -> None:
    settings = load()
    assert policy_rbac(settings) is settings.rbac
    assert "demo" not in Policy.from_mapping(policy_rbac(settings)).roles


def test_the_demo_role_is_added_while_enabled() -> None:
    settings = demo_settings()
    rbac = policy_rbac(settings)
    assert rbac["roles"]["demo"] == demo_role("system.stats")
    assert set(rbac["roles"]) == {"*", "admin", "demo"}
    assert "demo" not in settings.rbac["roles"]  # the settings are left alone


def test_the_demo_role_allows_what_the_page_needs() -> None:
    # With a "*" that grants nothing, the role does it alone.
    settings = demo_settings(rbac={"roles": {"*": {}}}, **{"metrics.stats_topic": "ops.live"})
    policy = Policy.from_mapping(policy_rbac(settings))
    roles = ("demo",)
    assert policy.can_join_room(roles, "demo.lobby")
    assert policy.can_broadcast(roles, "room")
    assert policy.can_presence(roles)
    assert policy.can_subscribe(roles, "ops.live")
    assert policy.can_subscribe(roles, "demo.>")
    assert policy.can_publish(roles, "demo.chat")
    assert not policy.can_join_room(roles, "lobby")
    assert not policy.can_publish(roles, "ops.live")
    assert not policy.can_subscribe(roles, ">")
    assert not policy.can_direct(roles)
    assert not policy.can_broadcast(roles, "global")


def test_a_configured_demo_role_stands() -> None:
    mine = {"subscribe": ["demo.>"]}
    settings = demo_settings(rbac={"roles": {"demo": mine}})
    assert policy_rbac(settings)["roles"]["demo"] == mine


# -- the token endpoint --------------------------------------------------------------------


def answer(settings: Settings, payload: Any, verifier: TokenVerifier | None = None) -> Any:
    verifier = verifier or TokenVerifier(settings.auth)
    return token_answer(post(payload), settings, verifier, NOW)


def test_a_token_for_the_name() -> None:
    settings = demo_settings(**{"demo.token_ttl": 60})
    status, body = answer(settings, {"user": "alice"})
    assert status == HTTPStatus.OK
    identity = TokenVerifier(settings.auth).verify(body["token"], now=NOW)
    assert (identity.user, identity.roles, identity.expires_at) == ("alice", ("demo",), NOW + 60)
    assert body == {
        "token": body["token"],
        "user": "alice",
        "roles": ["demo"],
        "expires_in": 60.0,
        "stats_topic": "system.stats",
        "room_prefix": "demo.",
        "ws_path": "/ws",
    }


def test_not_found_while_disabled() -> None:
    status, body = answer(load(), {"user": "alice"})
    assert (status, body) == (HTTPStatus.NOT_FOUND, {"code": "not_found"})


@pytest.mark.parametrize("payload", [{"user": "a b"}, {"user": 1}, b"nope", {"user": "x", "y": 1}])
def test_bad_bodies(payload: Any) -> None:
    status, body = answer(demo_settings(), payload)
    assert (status, body["code"]) == (HTTPStatus.BAD_REQUEST, "bad_request")
    assert "token" not in body


def _es256(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "private.pem", tmp_path / "public.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


def test_a_node_with_only_a_public_key_cannot_mint(tmp_path: Path) -> None:
    _, public = _es256(tmp_path)
    settings = demo_settings(
        **{"auth.algorithms": "ES256", "auth.public_key_file": str(public), "server.host": "::"}
    )
    status, body = answer(settings, {"user": "alice"})
    assert (status, body["code"]) == (HTTPStatus.NOT_FOUND, "not_found")
    assert "HS* secret" in body["message"]


def test_a_node_with_its_private_key_mints(tmp_path: Path) -> None:
    private, public = _es256(tmp_path)
    settings = demo_settings(
        **{
            "auth.algorithms": "ES256",
            "auth.public_key_file": str(public),
            "auth.private_key_file": str(private),
            "server.host": "::",
        }
    )
    status, body = answer(settings, {"user": "alice"})
    assert status == HTTPStatus.OK
    assert TokenVerifier(settings.auth).verify(body["token"], now=NOW).user == "alice"


def test_a_private_key_that_does_not_match_is_not_used(tmp_path: Path) -> None:
    _, public = _es256(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = _es256(tmp_path / "other")
    settings = demo_settings(
        **{
            "auth.algorithms": "ES256",
            "auth.public_key_file": str(public),
            "auth.private_key_file": str(other),
            "server.host": "::",
        }
    )
    status, _ = answer(settings, {"user": "alice"})
    assert status == HTTPStatus.NOT_FOUND


def test_a_user_revoked_this_second_gets_no_token() -> None:
    settings = demo_settings()
    verifier = TokenVerifier(settings.auth)
    verifier.revocations = RevocationTable()
    verifier.revocations.add(Revocation("user", "mallory", at=NOW, until=NOW + 60))
    status, body = answer(settings, {"user": "mallory"}, verifier)
    assert (status, body["code"]) == (HTTPStatus.FORBIDDEN, "forbidden")
    assert answer(settings, {"user": "alice"}, verifier)[0] == HTTPStatus.OK


# -- settings --------------------------------------------------------------------------------


def test_demo_settings_and_the_stats_topic() -> None:
    assert (load().demo.enabled, load().demo.token_ttl) == (False, 600.0)
    assert load().stats_topic == ""
    assert Settings().stats_topic == ""
    on = load(environ={"RTCS_DEMO_ENABLED": "1", "RTCS_DEMO_TOKEN_TTL": "30"})
    assert (on.demo.enabled, on.demo.token_ttl, on.stats_topic) == (True, 30.0, "system.stats")
    mine = load(environ={"RTCS_METRICS_STATS_TOPIC": "ops.live"})
    assert mine.stats_topic == "ops.live"
    assert mine.with_overrides(**{"demo.enabled": True}).stats_topic == "ops.live"


@pytest.mark.parametrize(
    ("overrides", "key", "value"),
    [
        ({"demo.token_ttl": 0}, "demo.token_ttl", 0.0),
        ({"demo.enabled": True, "demo.token_ttl": 90000}, "demo.token_ttl", 90000.0),
        ({"metrics.stats_topic": "ops.>"}, "metrics.stats_topic", "ops.>"),
        ({"metrics.stats_topic": "a..b"}, "metrics.stats_topic", "a..b"),
    ],
)
def test_bad_demo_values_name_their_key(overrides: dict[str, Any], key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load(overrides=overrides)
    assert (info.value.key, info.value.value) == (key, value)


def test_the_token_lifetime_limit_matters_only_with_the_demo_on() -> None:
    assert load(overrides={"auth.max_token_lifetime": 60}).demo.token_ttl == 600.0


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load(environ={"RTCS_DEMO_ENABLED": "maybe"})
    assert info.value.key == "RTCS_DEMO_ENABLED"
