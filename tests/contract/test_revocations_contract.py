"""The revocation log's contract, on every implementation (memory, Redis, Redis Cluster)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from rtcs.backends.memory import memory_backends
from rtcs.backends.redis import close_backends, redis_backends
from rtcs.revocations import Revocation, RevocationStore
from tests.support.redis_server import shared_cluster, shared_server


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
async def store(request: pytest.FixtureRequest) -> AsyncIterator[RevocationStore]:
    if request.param == "memory":
        found = memory_backends().revocations
        assert found is not None
        yield found
        return
    url = shared_server().url if request.param == "redis" else shared_cluster().url
    # A prefix of its own per test: the log is one key per deployment.
    backends = redis_backends(url, prefix=f"rev-{uuid.uuid4().hex}")
    assert backends.revocations is not None
    try:
        yield backends.revocations
    finally:
        await close_backends(backends)


def rev(target: str, at: float = 100.0, kind: str = "user") -> Revocation:
    return Revocation("user" if kind == "user" else "session", target, at, at + 50.0)


async def test_entries_come_back_in_order_after_a_sequence_number(store: RevocationStore) -> None:
    assert await store.since(0, 10) == []
    seqs = [await store.revoke(rev(f"u{i}", 100.0 + i), 60.0) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    everything = await store.since(0, 10)
    assert [s for s, _ in everything] == seqs
    assert [r for _, r in everything] == [rev(f"u{i}", 100.0 + i) for i in range(5)]
    assert [r.target for _, r in await store.since(seqs[2], 10)] == ["u3", "u4"]
    assert await store.since(seqs[-1], 10) == []


async def test_reads_are_paged_by_limit(store: RevocationStore) -> None:
    for i in range(7):
        await store.revoke(rev(f"u{i}"), 60.0)
    first = await store.since(0, 3)
    second = await store.since(first[-1][0], 3)
    third = await store.since(second[-1][0], 3)
    assert [r.target for _, r in first + second + third] == [f"u{i}" for i in range(7)]
    assert len(third) == 1


async def test_equal_revocations_are_distinct_entries(store: RevocationStore) -> None:
    a = await store.revoke(rev("bob"), 60.0)
    b = await store.revoke(rev("bob"), 60.0)
    assert b > a
    assert len(await store.since(0, 10)) == 2


async def test_sessions_and_users_keep_their_kind(store: RevocationStore) -> None:
    await store.revoke(rev("s-1", kind="session"), 60.0)
    await store.revoke(rev("bob"), 60.0)
    kinds = [(r.kind, r.target) for _, r in await store.since(0, 10)]
    assert kinds == [("session", "s-1"), ("user", "bob")]
    assert store.healthy()
