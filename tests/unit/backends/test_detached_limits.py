"""The pure part of the detached-session limits (rtcs.backends.detached)."""

from __future__ import annotations

import pytest

from rtcs.backends.detached import EVICTION_REASONS, DetachedLimits
from rtcs.metrics import EVICTION_REASONS as EXPORTED_REASONS
from rtcs.metrics import Metrics
from rtcs.sessions import Session, SessionRegistry


class Sink:
    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id

    def push(self, frame: bytes) -> bool:
        return True

    def push_message(self, frame: bytes) -> bool:
        return self.push(frame)

    def close(self, code: int, reason: str = "") -> None:
        pass


def detached(registry: SessionRegistry, user: str, *sizes: int) -> Session:
    """A session of ``user`` that was attached, got messages of ``sizes`` bytes, and left."""
    session = registry.create(user, ())
    registry.attach(session, Sink(f"c-{session.id}"))
    for size in sizes:
        session.deliver(b"x" * size)
    registry.detach(session, 0.0)
    return session


def evicted(limits: DetachedLimits, registry: SessionRegistry) -> list[tuple[Session, str]]:
    return [(e.session, e.reason) for e in limits.plan(registry.detached()).evictions]


def test_a_users_oldest_detached_sessions_go_past_the_per_user_limit() -> None:
    registry = SessionRegistry(10)
    alice = [detached(registry, "alice", 1) for _ in range(4)]
    bob = [detached(registry, "bob", 1) for _ in range(2)]
    limits = DetachedLimits(max_per_user=2, max_bytes=10**6)
    assert evicted(limits, registry) == [(alice[0], "user_limit"), (alice[1], "user_limit")]
    plan = limits.plan(registry.detached())
    assert (plan.detached, plan.buffered_bytes) == (4, 4)
    assert bob[0] not in [e.session for e in plan.evictions]


def test_the_nodes_oldest_detached_sessions_go_past_the_byte_bound() -> None:
    registry = SessionRegistry(10)
    sessions = [detached(registry, f"u{i}", 100, 100) for i in range(5)]
    limits = DetachedLimits(max_per_user=10, max_bytes=450)
    plan = limits.plan(registry.detached())
    assert [(e.session, e.reason) for e in plan.evictions] == [
        (sessions[0], "node_bytes"),
        (sessions[1], "node_bytes"),
        (sessions[2], "node_bytes"),
    ]
    assert (plan.detached, plan.buffered_bytes) == (2, 400)


def test_user_evictions_come_first_and_free_their_bytes() -> None:
    registry = SessionRegistry(10)
    old = detached(registry, "alice", 300)
    kept = [detached(registry, "bob", 100), detached(registry, "alice", 100)]
    limits = DetachedLimits(max_per_user=1, max_bytes=250)
    plan = limits.plan(registry.detached())
    assert [(e.session, e.reason) for e in plan.evictions] == [(old, "user_limit")]
    assert plan.buffered_bytes == 200 and kept[0].buffer


def test_attached_sessions_never_count_or_go() -> None:
    registry = SessionRegistry(10)
    live = registry.create("alice", ())
    registry.attach(live, Sink("c-live"))
    for _ in range(5):
        live.deliver(b"x" * 1000)
    limits = DetachedLimits(max_per_user=1, max_bytes=1)
    assert limits.plan(registry.detached()).evictions == ()


def test_buffer_sizes_follow_deliveries_drops_and_replaced_buffers() -> None:
    registry = SessionRegistry(3)
    session = detached(registry, "alice", 10, 20)
    limits = DetachedLimits(max_per_user=5, max_bytes=10**6)
    assert limits.buffered_bytes(session) == 30
    session.deliver(b"y" * 5)
    assert limits.buffered_bytes(session) == 35
    session.deliver(b"z" * 1)  # the buffer holds 3: the 10 is dropped
    assert limits.buffered_bytes(session) == 26
    session.buffer = type(session.buffer)([(4, b"")], maxlen=3)  # e.g. withheld
    assert limits.buffered_bytes(session) == 0


def test_sizes_of_sessions_gone_are_forgotten() -> None:
    registry = SessionRegistry(3)
    one, two = detached(registry, "a", 10), detached(registry, "b", 10)
    limits = DetachedLimits(max_per_user=5, max_bytes=10**6)
    limits.plan(registry.detached())
    registry.remove(one)
    limits.plan(registry.detached())
    assert set(limits._sizes) == {two.id}


@pytest.mark.parametrize(("per_user", "total"), [(0, 1), (1, 0)])
def test_limits_must_be_positive(per_user: int, total: int) -> None:
    with pytest.raises(ValueError):
        DetachedLimits(per_user, total)


def test_eviction_metrics_have_bounded_reasons() -> None:
    assert tuple(EVICTION_REASONS) == EXPORTED_REASONS
    metrics = Metrics()
    for reason in EVICTION_REASONS:
        assert (
            metrics.registry.get_sample_value("rtcs_sessions_evicted_total", {"reason": reason})
            == 0
        )
    metrics.session_evicted("user_limit")
    assert (
        metrics.registry.get_sample_value("rtcs_sessions_evicted_total", {"reason": "user_limit"})
        == 1
    )
    with pytest.raises(ValueError):
        metrics.session_evicted("mallory")
