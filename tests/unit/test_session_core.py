"""The node-local session state (rtcs/sessions.py): pure, tested synchronously."""

from __future__ import annotations

import json

import pytest

from rtcs.protocol.codec import message_tail
from rtcs.sessions import (
    ConnectionIds,
    ResumeVerdict,
    Session,
    SessionRegistry,
    plan_claimed,
    plan_resume,
)


class Sink:
    def __init__(self, connection_id: str = "c-1") -> None:
        self.connection_id = connection_id
        self.frames: list[bytes] = []
        self.closed: list[int] = []

    def push(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def push_message(self, frame: bytes) -> bool:
        return self.push(frame)

    def close(self, code: int, reason: str = "") -> None:
        self.closed.append(code)


def tail(n: int) -> bytes:
    return message_tail(topic="t", data=n, ts=0)


def test_deliver_numbers_buffers_and_writes() -> None:
    session = Session("s-1", "alice", (), buffer_size=3)
    sink = Sink()
    session.sink = sink
    for n in range(5):
        session.deliver(tail(n))
    assert [json.loads(f)["seq"] for f in sink.frames] == [1, 2, 3, 4, 5]
    assert json.loads(sink.frames[0]) == {
        "type": "message",
        "seq": 1,
        "topic": "t",
        "data": 0,
        "ts": 0,
    }
    assert [seq for seq, _ in session.buffer] == [3, 4, 5]


def test_detached_delivery_buffers_and_mirrors() -> None:
    session = Session("s-1", "alice", (), buffer_size=10)
    mirrored: list[tuple[str, int]] = []
    session.mirror = lambda sid, seq, _tail: mirrored.append((sid, seq))
    session.deliver(tail(1))
    assert session.seq == 1 and mirrored == [("s-1", 1)]
    assert list(session.buffer) == [(1, tail(1))]


@pytest.mark.parametrize(
    "last_seq, expected",
    [(5, []), (4, [5]), (2, [3, 4, 5]), (1, None), (0, None), (6, None), (-1, None)],
)
def test_replay_after_is_exact_or_nothing(last_seq: int, expected: list[int] | None) -> None:
    session = Session("s-1", "alice", (), buffer_size=3)
    for n in range(5):
        session.deliver(tail(n))
    replay = session.replay_after(last_seq)
    assert (None if replay is None else [seq for seq, _ in replay]) == expected


def test_replay_of_a_fresh_session() -> None:
    assert Session("s-1", "a", (), 3).replay_after(0) == []


def test_attach_detach_and_lookups() -> None:
    registry = SessionRegistry(buffer_size=10)
    session = registry.create("alice", ("user",))
    assert session.id.startswith("s-")
    sink = Sink("c-9")
    registry.attach(session, sink)
    assert registry.by_connection("c-9") is session
    assert registry.attached_of("alice") == {session}
    with pytest.raises(RuntimeError):
        registry.attach(session, Sink("c-10"))
    registry.detach(session, now=100.0)
    assert session.sink is None and registry.by_connection("c-9") is None
    assert registry.attached_of("alice") == set()
    assert registry.detached_count() == 1 and registry.get(session.id) is session


def test_expiry_is_oldest_first_and_reattach_cancels_it() -> None:
    registry = SessionRegistry(buffer_size=10)
    first, second, third = (registry.create(u, ()) for u in ("a", "b", "c"))
    for n, session in enumerate((first, second, third)):
        registry.attach(session, Sink(f"c-{n}"))
    registry.detach(first, now=10.0)
    registry.detach(second, now=20.0)
    registry.detach(third, now=30.0)
    registry.attach(second, Sink("c-new"))
    assert registry.expired(now=35.0, ttl=10.0) == [first]
    assert registry.expired(now=45.0, ttl=10.0) == [first, third]
    registry.remove(first)
    assert registry.get(first.id) is None and registry.detached_count() == 1


def test_restore_from_a_snapshot() -> None:
    registry = SessionRegistry(buffer_size=10)
    session = registry.restore(
        "s-x",
        "bob",
        ("user",),
        seq=7,
        buffer=[(6, b"a"), (7, b"b")],
        subscriptions=["news"],
        rooms=["r"],
        now=5.0,
    )
    assert session.seq == 7 and session.replay_after(5) == [(6, b"a"), (7, b"b")]
    assert session.subscriptions == {"news"} and session.rooms == {"r"}
    assert registry.expired(now=20.0, ttl=10.0) == [session]


def test_matching_by_roles_or_users() -> None:
    registry = SessionRegistry(buffer_size=1)
    ops = registry.create("o", ("ops",))
    alice = registry.create("alice", ("user",))
    registry.create("bob", ("user",))
    assert set(registry.matching(["ops"], [])) == {ops}
    assert set(registry.matching([], ["alice"])) == {alice}
    assert set(registry.matching(["ops"], ["alice"])) == {ops, alice}


def test_connection_ids_are_unique_and_prefixed() -> None:
    first, second = ConnectionIds(), ConnectionIds()
    ids = {first() for _ in range(1000)} | {second() for _ in range(1000)}
    assert len(ids) == 2000 and all(i.startswith("c-") for i in ids)


# -- the resume decision (rtcs.sessions.plan_resume / plan_claimed) ----------------


def registry_with(
    user: str = "alice", messages: int = 5, attached: bool = False
) -> tuple[SessionRegistry, Session, Sink]:
    registry = SessionRegistry(buffer_size=3)
    session = registry.create(user, ())
    sink = Sink("c-old")
    registry.attach(session, sink)
    for n in range(messages):
        session.deliver(tail(n))
    if not attached:
        registry.detach(session, 0.0)
    return registry, session, sink


@pytest.mark.parametrize(
    "session_id, last_seq",
    [(None, None), ("s-x", None), (None, 3)],
)
def test_no_resume_asked(session_id: str | None, last_seq: int | None) -> None:
    registry, _, _ = registry_with()
    plan = plan_resume(registry, "alice", session_id, last_seq, shared=True)
    assert plan.verdict is ResumeVerdict.NOT_REQUESTED
    assert not plan.requested and not plan.resumed and plan.session is None


@pytest.mark.parametrize(
    "shared, verdict", [(False, ResumeVerdict.UNKNOWN), (True, ResumeVerdict.CLAIM)]
)
def test_a_session_not_held_here(shared: bool, verdict: ResumeVerdict) -> None:
    registry, _, _ = registry_with()
    plan = plan_resume(registry, "alice", "s-elsewhere", 0, shared=shared)
    assert plan.verdict is verdict and plan.requested and not plan.resumed


def test_another_users_session_is_never_resumed() -> None:
    registry, session, _ = registry_with()
    plan = plan_resume(registry, "mallory", session.id, 5, shared=True)
    assert plan.verdict is ResumeVerdict.OTHER_OWNER and plan.session is None


@pytest.mark.parametrize("last_seq", [1, 6, -1])
def test_a_buffer_that_cannot_replay_exactly(last_seq: int) -> None:
    registry, session, _ = registry_with()  # buffer holds seq 3, 4, 5
    plan = plan_resume(registry, "alice", session.id, last_seq, shared=False)
    assert plan.verdict is ResumeVerdict.TOO_OLD and not plan.resumed


def test_a_detached_session_resumes_with_its_replay() -> None:
    registry, session, _ = registry_with()
    plan = plan_resume(registry, "alice", session.id, 3, shared=False)
    assert plan.verdict is ResumeVerdict.RESUME and plan.resumed
    assert plan.session is session and [seq for seq, _ in plan.replay] == [4, 5]
    assert plan.previous is None


def test_an_attached_session_is_taken_over() -> None:
    registry, session, sink = registry_with(attached=True)
    plan = plan_resume(registry, "alice", session.id, 5, shared=False)
    assert plan.verdict is ResumeVerdict.TAKE_OVER and plan.resumed
    assert plan.previous is sink and plan.replay == ()
    assert session.sink is sink  # deciding changes nothing


def test_a_claim_answered_by_the_store() -> None:
    _, session, _ = registry_with()
    assert plan_claimed(None, 0).verdict is ResumeVerdict.UNKNOWN
    assert plan_claimed(session, 1).verdict is ResumeVerdict.TOO_OLD
    plan = plan_claimed(session, 4)
    assert plan.verdict is ResumeVerdict.RESUME and [s for s, _ in plan.replay] == [5]


def test_attached_delivery_is_mirrored_too() -> None:
    session = Session("s-1", "alice", (), buffer_size=10)
    sink = Sink()
    session.sink = sink
    mirrored: list[tuple[str, int]] = []
    session.mirror = lambda sid, seq, _tail: mirrored.append((sid, seq))
    session.deliver(tail(1))
    session.deliver(tail(2))
    assert len(sink.frames) == 2 and mirrored == [("s-1", 1), ("s-1", 2)]


def test_changes_of_subscriptions_and_rooms_are_reported() -> None:
    session = Session("s-1", "alice", (), buffer_size=10)
    seen: list[tuple[set[str], set[str]]] = []
    session.subscriptions.add("quiet")  # no hook yet: nothing reported
    session.on_change = lambda s: seen.append((set(s.subscriptions), set(s.rooms)))
    session.subscriptions.add("news")
    session.subscriptions.add("news")  # no change, no report
    session.rooms.add("lobby")
    session.subscriptions.discard("nothing")
    session.subscriptions.discard("quiet")
    session.rooms.update(["lobby"])
    session.rooms.update(["a", "b"])
    session.rooms.remove("a")
    session.subscriptions.clear()
    session.subscriptions.clear()
    assert seen == [
        ({"quiet", "news"}, set()),
        ({"quiet", "news"}, {"lobby"}),
        ({"news"}, {"lobby"}),
        ({"news"}, {"lobby", "a", "b"}),
        ({"news"}, {"lobby", "b"}),
        (set(), {"lobby", "b"}),
    ]


def test_attach_and_detach_clear_the_mirror_and_the_change_hook() -> None:
    registry = SessionRegistry(10)
    session = registry.create("alice", ())
    session.mirror = lambda sid, seq, _tail: None
    session.on_change = lambda s: None
    registry.attach(session, Sink())
    assert session.mirror is None and session.on_change is None
    session.mirror = lambda sid, seq, _tail: None
    session.on_change = lambda s: None
    assert registry.attached() == [session]
    registry.detach(session, 1.0)
    assert session.mirror is None and session.on_change is None
    assert registry.attached() == []


def test_a_restored_session_reports_no_change() -> None:
    registry = SessionRegistry(10)
    calls: list[Session] = []
    session = registry.restore(
        "s-1", "alice", (), seq=0, buffer=(), subscriptions=["a"], rooms=["r"], now=0.0
    )
    session.on_change = calls.append
    assert session.subscriptions == {"a"} and session.rooms == {"r"} and calls == []


def test_a_session_is_freed_without_the_cyclic_collector() -> None:
    # Its change-tracking sets must not form a reference cycle with it: at
    # thousands of sessions, cycles wait for full collections.
    import gc
    import weakref

    enabled = gc.isenabled()
    gc.disable()
    try:
        session = Session("s-1", "alice", (), buffer_size=3)
        session.subscriptions.add("t")
        ref = weakref.ref(session)
        del session
        assert ref() is None
    finally:
        if enabled:
            gc.enable()


# -- the session's own memory of publish ids ----------------------------------------------


def test_a_publish_id_is_used_within_the_window_only() -> None:
    session = Session("s-1", "alice", (), 10)
    assert not session.used_publish_id("i:1", 0.0, 60.0)
    session.note_publish_id("i:1", 0.0, 100)
    assert session.used_publish_id("i:1", 59.9, 60.0)
    assert not session.used_publish_id("s:1", 59.9, 60.0)  # 1 and "1" differ
    assert not session.used_publish_id("i:1", 60.0, 60.0)
    assert session.publish_ids == {}  # expired ids are dropped as they are passed


def test_at_most_cap_publish_ids_are_remembered_oldest_first() -> None:
    session = Session("s-1", "alice", (), 10)
    for i in range(5):
        session.note_publish_id(f"i:{i}", float(i), 3)
    assert [k for k in session.publish_ids or {}] == ["i:2", "i:3", "i:4"]
    assert not session.used_publish_id("i:0", 5.0, 60.0)
    session.note_publish_id("i:9", 6.0, 0)  # cap 0: nothing remembered
    assert not session.used_publish_id("i:9", 6.0, 60.0)
