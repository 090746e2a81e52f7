"""Presence store conformance: connections per user, room membership, dead nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.contract.conftest import Harness


async def test_connections_are_counted_per_user(impl: Harness) -> None:
    presence = impl.presence()
    assert await presence.user_connections("alice") == 0
    assert await presence.add_connection("alice", "c-1", "n1") == 1
    assert await presence.add_connection("alice", "c-2", "n2") == 2
    assert await presence.add_connection("bob", "c-3", "n1") == 1
    assert await presence.user_connections("alice") == 2
    assert await presence.remove_connection("alice", "c-1") == 1
    assert await presence.remove_connection("alice", "c-2") == 0
    assert await presence.user_connections("alice") == 0
    assert await presence.user_connections("bob") == 1


async def test_adding_a_connection_twice_counts_it_once(impl: Harness) -> None:
    presence = impl.presence()
    await presence.add_connection("alice", "c-1", "n1")
    assert await presence.add_connection("alice", "c-1", "n1") == 1


async def test_removing_an_unknown_connection_is_harmless(impl: Harness) -> None:
    presence = impl.presence()
    assert await presence.remove_connection("ghost", "c-9") == 0
    await presence.add_connection("alice", "c-1", "n1")
    assert await presence.remove_connection("alice", "c-9") == 1


async def test_two_sessions_of_one_user_make_one_presence(impl: Harness) -> None:
    presence = impl.presence()
    assert await presence.join("lobby", "alice", "s-1", "n1") is True
    assert await presence.join("lobby", "alice", "s-2", "n2") is False
    assert await presence.members("lobby") == ["alice"]
    assert await presence.leave("lobby", "alice", "s-1") is False
    assert await presence.members("lobby") == ["alice"]
    assert await presence.leave("lobby", "alice", "s-2") is True
    assert await presence.members("lobby") == []


async def test_joining_twice_with_one_member_is_not_a_new_join(impl: Harness) -> None:
    presence = impl.presence()
    assert await presence.join("lobby", "alice", "s-1", "n1") is True
    assert await presence.join("lobby", "alice", "s-1", "n1") is False
    assert await presence.leave("lobby", "alice", "s-1") is True


async def test_leaving_when_not_a_member_is_not_a_leave(impl: Harness) -> None:
    presence = impl.presence()
    assert await presence.leave("lobby", "alice", "s-1") is False
    await presence.join("lobby", "alice", "s-1", "n1")
    assert await presence.leave("lobby", "alice", "s-other") is False
    assert await presence.leave("lobby", "bob", "s-1") is False
    assert await presence.members("lobby") == ["alice"]


async def test_members_are_sorted_and_rooms_separate(impl: Harness) -> None:
    presence = impl.presence()
    for user in ("carol", "alice", "bob"):
        await presence.join("lobby", user, f"s-{user}", "n1")
    await presence.join("kitchen", "dave", "s-dave", "n1")
    assert await presence.members("lobby") == ["alice", "bob", "carol"]
    assert await presence.members("kitchen") == ["dave"]
    assert await presence.members("empty") == []


async def test_drop_node_forgets_what_that_node_held(impl: Harness) -> None:
    presence = impl.presence()
    await presence.add_connection("alice", "c-1", "dead")
    await presence.add_connection("alice", "c-2", "live")
    await presence.add_connection("bob", "c-3", "dead")
    await presence.join("lobby", "alice", "s-1", "dead")
    await presence.join("lobby", "alice", "s-2", "live")
    await presence.join("lobby", "bob", "s-3", "dead")
    await presence.join("kitchen", "bob", "s-3", "dead")

    await presence.drop_node("dead")

    assert await presence.user_connections("alice") == 1
    assert await presence.user_connections("bob") == 0
    assert await presence.members("lobby") == ["alice"]
    assert await presence.members("kitchen") == []
    # alice's remaining member is still tracked: leaving it is the real leave.
    assert await presence.leave("lobby", "alice", "s-2") is True
    # bob is gone entirely, so joining again is a fresh join.
    assert await presence.join("kitchen", "bob", "s-4", "live") is True


async def test_presence_is_shared_between_nodes(impl: Harness) -> None:
    await impl.presence().add_connection("alice", "c-1", "n1")
    await impl.presence().join("lobby", "alice", "s-1", "n1")
    assert await impl.presence().user_connections("alice") == 1
    assert await impl.presence().members("lobby") == ["alice"]


async def test_healthy(impl: Harness) -> None:
    assert impl.presence().healthy()
