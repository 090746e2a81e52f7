"""Presence store conformance: connections per user and per id, room membership, dead nodes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import pytest

from rtcs.backends.redis import close_backends, redis_backends
from tests.support.waiting import wait_until_returns

if TYPE_CHECKING:
    from tests.contract.conftest import Harness


@runtime_checkable
class OnRedis(Protocol):
    """A harness on a Redis URL (``RedisHarness``; pytest loads conftest under
    another module name, so ``isinstance`` against the class itself fails)."""

    url: str


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


async def test_user_nodes_are_the_nodes_holding_the_users_connections(impl: Harness) -> None:
    presence = impl.presence()
    assert await presence.user_nodes("alice") == []
    await presence.add_connection("alice", "c-1", "n2")
    await presence.add_connection("alice", "c-2", "n1")
    await presence.add_connection("alice", "c-3", "n2")
    await presence.add_connection("bob", "c-4", "n3")
    assert await presence.user_nodes("alice") == ["n1", "n2"]
    await presence.remove_connection("alice", "c-1")
    assert await presence.user_nodes("alice") == ["n1", "n2"]
    await presence.remove_connection("alice", "c-3")
    assert await presence.user_nodes("alice") == ["n1"]
    await presence.drop_node("n1")
    assert await presence.user_nodes("alice") == []
    assert await presence.user_nodes("bob") == ["n3"]


async def test_adding_a_connection_twice_counts_it_once(impl: Harness) -> None:
    presence = impl.presence()
    await presence.add_connection("alice", "c-1", "n1")
    assert await presence.add_connection("alice", "c-1", "n1") == 1


async def test_removing_an_unknown_connection_is_harmless(impl: Harness) -> None:
    presence = impl.presence()
    assert await presence.remove_connection("ghost", "c-9") == 0
    await presence.add_connection("alice", "c-1", "n1")
    assert await presence.remove_connection("alice", "c-9") == 1


async def test_a_connection_is_found_on_its_node_until_removed(impl: Harness) -> None:
    presence = impl.presence()
    assert await presence.connection_node("c-1") is None
    await presence.add_connection("alice", "c-1", "n1")
    await presence.add_connection("alice", "c-2", "n2")
    assert await presence.connection_node("c-1") == "n1"
    assert await presence.connection_node("c-2") == "n2"
    await presence.remove_connection("alice", "c-1")
    assert await presence.connection_node("c-1") is None
    assert await presence.connection_node("c-2") == "n2"


async def test_an_unknown_connection_has_no_node(impl: Harness) -> None:
    presence = impl.presence()
    await presence.add_connection("alice", "c-1", "n1")
    assert await presence.connection_node("c-9") is None
    assert await presence.connection_node("") is None


async def test_a_dropped_nodes_connections_have_no_node(impl: Harness) -> None:
    presence = impl.presence()
    await presence.add_connection("alice", "c-1", "dead")
    await presence.add_connection("alice", "c-2", "live")
    await presence.add_connection("bob", "c-3", "dead")

    await presence.drop_node("dead")

    assert await presence.connection_node("c-1") is None
    assert await presence.connection_node("c-3") is None
    assert await presence.connection_node("c-2") == "live"
    # A connection the dropped node no longer held stays where it went.
    await presence.add_connection("carol", "c-4", "dead")
    await presence.add_connection("carol", "c-4", "live")
    await presence.drop_node("dead")
    assert await presence.connection_node("c-4") == "live"


async def test_a_connection_of_a_node_whose_liveness_lapsed_has_no_node(impl: Harness) -> None:
    if not isinstance(impl, OnRedis):
        pytest.skip("in-memory nodes have no heartbeat: a dead node is only ever dropped")
    # A node with a short TTL that stops beating: what a crash looks like.
    crashed = redis_backends(impl.url, heartbeat_interval=0.1, node_ttl=0.5)
    try:
        await crashed.presence.add_connection("alice", "c-1", "crashed")
        survivor = impl.presence()
        await survivor.add_connection("bob", "c-2", "alive")
        assert await survivor.connection_node("c-1") == "crashed"
    finally:
        await close_backends(crashed)  # the heartbeat stops, the entries stay
    await wait_until_returns(lambda: survivor.connection_node("c-1"), None, 2.0)
    assert await survivor.connection_node("c-2") == "alive"


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
    assert await impl.presence().connection_node("c-1") == "n1"
    assert await impl.presence().members("lobby") == ["alice"]


async def test_healthy(impl: Harness) -> None:
    assert impl.presence().healthy()
