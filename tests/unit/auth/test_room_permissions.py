"""Room patterns (``join`` / ``join_deny``) and what a role downgrade revokes:
pure, tested synchronously (rtcs/auth/permissions.py)."""

from __future__ import annotations

from typing import Any

import pytest

from rtcs.auth.permissions import Policy, Role
from rtcs.errors import ConfigError


def policy(**roles: dict[str, Any]) -> Policy:
    return Policy.from_mapping({"roles": roles})


def test_the_default_policy_joins_every_room() -> None:
    default = Policy.default()
    for room in ("lobby", "game:42", "team@acme.eu", "a" * 128):
        assert default.can_join_room((), room, "alice")
        assert default.can_join_room(("admin",), room)


def test_a_role_without_join_keeps_joining_every_room() -> None:
    # Policies written before room patterns keep their meaning.
    assert Role(name="r", rooms=True).may_join("anything")
    assert policy(**{"*": {"rooms": True}}).can_join_room((), "anything")
    assert not policy(**{"*": {}}).can_join_room((), "anything")  # no "rooms"
    assert not policy(**{"*": {"join": ["*"]}}).can_join_room((), "lobby")  # still no "rooms"


def test_names_prefixes_and_deny() -> None:
    p = policy(
        **{
            "*": {"rooms": True, "join": ["lobby", "team-*"], "join_deny": ["team-secret*"]},
            "ops": {"rooms": True, "join": ["*"]},
        }
    )
    assert p.can_join_room((), "lobby")
    assert not p.can_join_room((), "lobby2")
    assert p.can_join_room((), "team-red")
    assert p.can_join_room((), "team-")  # a room name may end at the prefix
    assert not p.can_join_room((), "team-secret")
    assert not p.can_join_room((), "team-secrets")
    assert not p.can_join_room((), "other")
    # One role's deny never takes away what another role grants.
    assert p.can_join_room(("ops",), "team-secret")
    assert p.can_join_room(["ops", "unknown"], "other")


def test_user_placeholder_in_room_patterns() -> None:
    p = policy(
        **{
            "*": {
                "rooms": True,
                "join": ["dm:{user}:*", "{user}@home", "team.*"],
                "join_deny": ["team.{user}"],
            }
        }
    )
    assert p.can_join_room((), "dm:alice:1", "alice")
    assert p.can_join_room((), "alice@home", "alice")
    assert not p.can_join_room((), "dm:bob:1", "alice")
    assert not p.can_join_room((), "bob@home", "alice")
    assert not p.can_join_room((), "dm:alice:1", None)  # no user: matches nothing
    assert p.can_join_room((), "team.bob", "alice")
    assert not p.can_join_room((), "team.alice", "alice")  # the deny expands too
    # Not a topic segment: {user} matches nothing, in allow and deny lists alike.
    assert not p.can_join_room((), "dm:a.b:1", "a.b")
    assert not p.can_join_room((), "dm:a:b:1", "a:b")
    assert p.can_join_room((), "team.a:b", "a:b")  # the deny matched nothing either
    # Decisions are cached per user: another user gets their own answer.
    assert p.can_join_room((), "dm:bob:1", "bob")


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("dm-{user}*", "whole segment"),  # would let "al" join "dm-alice"
        ("{user}*", "not followed by '*'"),
        ("dm:{user}x", "whole segment"),
        ("a*b", "room name"),
        ("", "room name"),
        ("bad room", "room name"),
        ("x" * 129, "room name"),
    ],
)
def test_bad_room_patterns_name_their_key(pattern: str, why: str) -> None:
    for key in ("join", "join_deny"):
        with pytest.raises(ConfigError) as info:
            policy(**{"ops": {key: [pattern]}})
        assert info.value.key == f"rbac.roles.ops.{key}"
        assert why in str(info.value)
    with pytest.raises(ConfigError):
        policy(**{"ops": {"join": "lobby"}})  # not a list


def test_revoked_lists_what_new_roles_no_longer_allow() -> None:
    p = policy(
        **{
            "*": {"subscribe": ["public.>"], "rooms": True, "join": ["lobby"]},
            "vip": {"subscribe": ["vip.>", "user.{user}.>"], "rooms": True, "join": ["vip-*"]},
        }
    )
    subscriptions = ["vip.news", "public.a", "public.>", "user.alice.inbox", ">"]
    rooms = ["vip-room", "lobby", "other"]
    assert p.revoked(("vip",), "alice", subscriptions, rooms) == ([">"], ["other"])
    assert p.revoked((), "alice", subscriptions, rooms) == (
        [">", "user.alice.inbox", "vip.news"],
        ["other", "vip-room"],
    )
    assert p.revoked(("vip",), "alice", [], []) == ([], [])
