"""The admission bookkeeping (pure): pending caps, the node cap, crash penalties."""

from __future__ import annotations

from rtcs.actors.admission import NODE_FULL, PENALIZED, PENDING_FULL, Admission
from rtcs.config.settings import LimitsSettings
from rtcs.workers import LocalCounter

LIMITS = LimitsSettings(
    max_pending_auth=3,
    max_pending_auth_per_address=2,
    max_connections_per_node=2,
    crash_threshold=2,
    crash_penalty=10.0,
)


def test_pending_sockets_are_capped_per_node_and_per_address() -> None:
    admission = Admission(LIMITS)
    assert admission.open("c1", "a", pending=True, now=0) is None
    assert admission.open("c2", "a", pending=True, now=0) is None
    assert admission.check("a", None, 0) is PENDING_FULL
    assert admission.open("c3", "a", pending=True, now=0) is PENDING_FULL
    assert admission.open("c3", "b", pending=True, now=0) is None
    assert admission.open("c4", "c", pending=True, now=0) is PENDING_FULL  # 3 per node
    assert admission.pending == 3
    # Sockets with a handshake token are not pending.
    assert admission.open("c5", "a", pending=False, now=0) is None
    admission.closed("c1")
    assert admission.open("c6", "a", pending=True, now=0) is None


def test_the_node_cap_counts_authenticated_connections_only() -> None:
    counter = LocalCounter()
    admission = Admission(LIMITS, counter)
    for i in range(3):
        assert admission.open(f"p{i}", "a", pending=i < 2, now=0) is None
    assert admission.authenticate("p0", "alice", 0) is None  # pending -> authenticated
    assert admission.pending == 1
    assert admission.authenticate("p2", "bob", 0) is None
    assert counter.total() == 2
    assert admission.authenticate("p1", "carol", 0) is NODE_FULL
    assert admission.authenticate("p0", "alice", 0) is None  # a refresh: already in
    admission.closed("p0")
    assert counter.total() == 1
    assert admission.authenticate("p1", "carol", 0) is None
    assert admission.pending == 0


def test_crashes_past_the_threshold_penalize_the_user_for_the_penalty() -> None:
    admission = Admission(LIMITS)
    admission.open("c1", "a", pending=False, now=0)
    assert not admission.crashed("c1", "victim", 0)
    assert admission.crashed("c1", "victim", 1)  # the second within 10 s
    assert admission.check("a", "victim", 2) is PENALIZED
    assert admission.authenticate("c2", "victim", 2) is PENALIZED
    assert admission.check("a", "other", 2) is None
    assert admission.check("a", None, 2) is None  # the address is not penalized
    assert admission.check("a", "victim", 11.5) is None  # 10 s after the last crash
    # Crashes further apart than the window do not add up.
    assert not admission.crashed("c1", "slow", 0)
    assert not admission.crashed("c1", "slow", 20)


def test_crashes_before_auth_penalize_the_address() -> None:
    admission = Admission(LIMITS)
    for i in range(2):
        admission.open(f"c{i}", "10.0.0.1", pending=True, now=0)
        admission.crashed(f"c{i}", None, 0)
        admission.closed(f"c{i}")
    assert admission.open("c9", "10.0.0.1", pending=True, now=1) is PENALIZED
    assert admission.open("c9", "10.0.0.2", pending=True, now=1) is None
    assert (
        admission.open("c8", "10.0.0.1", pending=False, now=1) is None
    )  # a token: its user counts
