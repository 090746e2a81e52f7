"""RBAC as data: parsing the rbac table and the decisions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rtcs.auth.permissions import DEFAULT_RBAC, Policy, Role
from rtcs.errors import ConfigError


@pytest.fixture
def default() -> Policy:
    return Policy.default()


def test_default_policy_roles(default: Policy) -> None:
    assert set(default.roles) == {"*", "admin"}
    everyone = default.roles["*"]
    assert everyone == Role(
        name="*",
        subscribe=(">",),
        publish=(">",),
        publish_deny=("system.>",),
        broadcast=frozenset({"room"}),
        direct=True,
        rooms=True,
        presence=True,
    )


def test_default_publish(default: Policy) -> None:
    assert default.can_publish((), "chat.general")
    assert default.can_publish(["user"], "chat.general")
    assert not default.can_publish((), "system.alert")
    assert not default.can_publish(("user",), "system.a.b")
    assert default.can_publish(("admin",), "system.alert")  # admin's own rule has no deny
    assert default.can_publish(("admin", "user"), "system.alert")
    assert default.can_publish((), "system")  # "system.>" needs a segment after "system"


def test_default_subscribe_and_scopes(default: Policy) -> None:
    assert default.can_subscribe((), "system.>")
    assert default.can_subscribe((), ">")
    for scope in ("room", "global", "filter"):
        assert default.can_broadcast(("admin",), scope)
    assert default.can_broadcast((), "room")
    assert not default.can_broadcast((), "global")
    assert not default.can_broadcast(("user",), "filter")
    assert default.can_direct(())
    assert default.can_join(())
    assert default.can_presence(())


def rbac(**roles: dict[str, Any]) -> dict[str, Any]:
    return {"roles": roles}


def test_subscribe_covers_and_deny_overlaps() -> None:
    policy = Policy.from_mapping(
        rbac(
            **{
                "*": {"subscribe": ["chat.>", "news.*"], "subscribe_deny": ["chat.secret.>"]},
                "ops": {"subscribe": ["system.>"]},
            }
        )
    )
    assert policy.can_subscribe((), "chat.general")
    assert policy.can_subscribe((), "chat.*")
    assert policy.can_subscribe((), "news.sport")
    assert not policy.can_subscribe((), "news.>")  # news.* does not cover news.a.b
    assert not policy.can_subscribe((), "chat.>")  # overlaps the deny
    assert not policy.can_subscribe((), "chat.secret.plans")
    assert not policy.can_subscribe((), "*.secret.x")  # overlaps chat.secret.x
    assert not policy.can_subscribe((), "system.alert")
    assert policy.can_subscribe(("ops",), "system.alert")
    assert policy.can_subscribe(["ops", "unknown"], "system.*")
    assert not policy.can_subscribe(("unknown",), "system.alert")


def test_a_deny_in_one_role_does_not_remove_another_roles_grant() -> None:
    policy = Policy.from_mapping(
        rbac(
            **{
                "*": {"publish": [">"], "publish_deny": ["a.>"]},
                "writer": {"publish": ["a.b"]},
            }
        )
    )
    assert not policy.can_publish((), "a.b")
    assert policy.can_publish(("writer",), "a.b")
    assert not policy.can_publish(("writer",), "a.c")


def test_missing_keys_grant_nothing() -> None:
    policy = Policy.from_mapping(rbac(**{"*": {}}))
    assert not policy.can_subscribe((), "a")
    assert not policy.can_publish((), "a")
    assert not policy.can_broadcast((), "room")
    assert not policy.can_direct(())
    assert not policy.can_join(())
    assert not policy.can_presence(())
    assert not Policy.from_mapping({}).can_publish((), "a")


def test_user_placeholder_expands_to_the_users_id() -> None:
    policy = Policy.from_mapping(
        rbac(**{"*": {"subscribe": ["user.{user}.>", "chat.>"], "publish": ["user.{user}.out"]}})
    )
    assert policy.can_subscribe((), "user.alice.>", "alice")
    assert policy.can_subscribe((), "user.alice.inbox", "alice")
    assert not policy.can_subscribe((), "user.bob.>", "alice")
    assert not policy.can_subscribe((), "user.*.inbox", "alice")  # covers other users' inboxes
    assert not policy.can_subscribe((), "user.alice.>")  # no user: {user} matches nothing
    assert policy.can_subscribe((), "chat.x")
    assert policy.can_publish((), "user.bob.out", "bob")
    assert not policy.can_publish((), "user.bob.out", "alice")
    # Decisions are per user, also when cached.
    for _ in range(2):
        assert policy.can_subscribe((), "user.bob.x", "bob")
        assert not policy.can_subscribe((), "user.bob.x", "carol")


@pytest.mark.parametrize("sub", ["a.b", "", "x" * 65, "*", ">", "{user}", "a b", "é"])
def test_a_sub_that_is_not_a_segment_matches_nothing(sub: str) -> None:
    policy = Policy.from_mapping(
        rbac(
            **{
                "*": {
                    "subscribe": ["user.{user}.>"],
                    "publish": ["user.{user}"],
                    "publish_deny": ["user.{user}"],
                }
            }
        )
    )
    for pattern in ("user.a.b.>", "user.a.b", "user.a.>", "user.*.>", "user.>"):
        assert not policy.can_subscribe((), pattern, sub)
    for topic in ("user.a.b", "user.a", "user.x"):
        assert not policy.can_publish((), topic, sub)


def test_deny_lists_expand_the_placeholder_like_allow_lists() -> None:
    policy = Policy.from_mapping(
        rbac(
            **{
                "*": {
                    "subscribe": ["feed.>"],
                    "subscribe_deny": ["feed.{user}.>"],
                    "publish": ["feed.>"],
                    "publish_deny": ["feed.*.{user}"],
                }
            }
        )
    )
    assert not policy.can_subscribe((), "feed.alice.x", "alice")
    assert not policy.can_subscribe((), "feed.*.x", "alice")  # overlaps feed.alice.x
    assert policy.can_subscribe((), "feed.bob.x", "alice")
    assert not policy.can_publish((), "feed.x.alice", "alice")
    assert policy.can_publish((), "feed.x.bob", "alice")
    # A sub that is not a segment: the deny matches nothing, as an allow would.
    assert policy.can_publish((), "feed.x.y", "x.y")


def test_presence_of_rooms_without_membership() -> None:
    roles: dict[str, dict[str, Any]] = {
        "*": {"presence": True},
        "support": {"presence": True, "presence_rooms": ["help", "team-*"]},
        "mute": {"presence_rooms": ["*"]},  # needs presence too
    }
    policy = Policy.from_mapping(rbac(**roles))
    assert policy.can_presence(())
    assert not policy.can_presence_room((), "help")
    assert policy.can_presence_room(("support",), "help")
    assert policy.can_presence_room(("support",), "team-a")
    assert not policy.can_presence_room(("support",), "helpdesk")
    assert not policy.can_presence_room(("mute",), "help")
    default = Policy.default()
    assert not default.can_presence_room((), "lobby")
    assert default.can_presence_room(("admin",), "lobby")


def test_decisions_are_cached_and_consistent(default: Policy) -> None:
    for _ in range(3):
        assert not default.can_publish(("user",), "system.x")
        assert default.can_publish(["admin"], "system.x")


def test_default_mapping_is_not_aliased() -> None:
    mapping = copy.deepcopy(DEFAULT_RBAC)
    policy = Policy.from_mapping(mapping)
    mapping["roles"]["*"]["publish_deny"].clear()
    assert not policy.can_publish((), "system.x")


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ([], "rbac"),
        ({"role": {}}, "rbac.role"),
        ({"roles": []}, "rbac.roles"),
        ({"roles": {"admin": []}}, "rbac.roles.admin"),
        ({"roles": {"admin": {"publsh": [">"]}}}, "rbac.roles.admin.publsh"),
        ({"roles": {"admin": {"publish": ">"}}}, "rbac.roles.admin.publish"),
        ({"roles": {"admin": {"publish": [1]}}}, "rbac.roles.admin.publish"),
        ({"roles": {"admin": {"publish": ["a..b"]}}}, "rbac.roles.admin.publish"),
        ({"roles": {"admin": {"subscribe_deny": ["a.>.b"]}}}, "rbac.roles.admin.subscribe_deny"),
        ({"roles": {"*": {"broadcast": ["room", "everyone"]}}}, 'rbac.roles."*".broadcast'),
        ({"roles": {"admin": {"broadcast": "room"}}}, "rbac.roles.admin.broadcast"),
        ({"roles": {"admin": {"direct": "yes"}}}, "rbac.roles.admin.direct"),
        ({"roles": {"admin": {"rooms": 1}}}, "rbac.roles.admin.rooms"),
        ({"roles": {"admin": {"presence": None}}}, "rbac.roles.admin.presence"),
        ({"roles": {"": {}}}, "rbac.roles"),
        ({"roles": {"a": {"subscribe": ["user.{user}x"]}}}, "rbac.roles.a.subscribe"),
        ({"roles": {"a": {"subscribe_deny": ["x{user}"]}}}, "rbac.roles.a.subscribe_deny"),
        ({"roles": {"a": {"publish": ["{user}{user}"]}}}, "rbac.roles.a.publish"),
        ({"roles": {"a": {"publish_deny": ["a.{users}"]}}}, "rbac.roles.a.publish_deny"),
        ({"roles": {"a": {"publish": ["a.>.{user}"]}}}, "rbac.roles.a.publish"),
        ({"roles": {"a": {"presence_rooms": "x"}}}, "rbac.roles.a.presence_rooms"),
        ({"roles": {"a": {"presence_rooms": ["a b"]}}}, "rbac.roles.a.presence_rooms"),
        ({"roles": {"a": {"presence_rooms": ["a*b"]}}}, "rbac.roles.a.presence_rooms"),
    ],
)
def test_config_errors_name_the_key(mapping: Any, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy.from_mapping(mapping)
    assert info.value.key == key


def test_user_placeholder_as_a_whole_segment_loads() -> None:
    role = Policy.from_mapping(
        rbac(a={"subscribe": ["{user}", "user.{user}.>", "*.{user}"], "publish_deny": ["{user}.>"]})
    ).roles["a"]
    assert role.subscribe == ("{user}", "user.{user}.>", "*.{user}")


def test_key_prefix() -> None:
    with pytest.raises(ConfigError) as info:
        Policy.from_mapping({"roles": {"x": {"direct": 1}}}, key_prefix="auth.rbac")
    assert info.value.key == "auth.rbac.roles.x.direct"
