"""Withholding buffered messages after a role downgrade (rtcs/sessions.py,
``Session.withhold``) and the codec helper it reads tails with: pure."""

from __future__ import annotations

from rtcs.protocol.codec import message_tail, tail_target
from rtcs.sessions import Session, SessionRegistry, plan_resume


def session_with(*tails: bytes) -> Session:
    session = Session("s-1", "alice", (), buffer_size=10)
    for tail in tails:
        session.deliver(tail)
    return session


TOPIC = message_tail(topic="vip.news", from_user="bob", data=1, ts=0)
PUBLIC = message_tail(topic="public.a", data=2, ts=0)
ROOM = message_tail(room="vip-room", from_user="bob", data=3, ts=0)
DIRECT = message_tail(from_user="bob", data=4, ts=0)
GLOBAL = message_tail(room="*", from_user="root", data=5, ts=0)


def test_tail_target() -> None:
    assert tail_target(TOPIC) == ("topic", "vip.news")
    assert tail_target(ROOM) == ("room", "vip-room")
    assert tail_target(GLOBAL) == ("room", "*")
    assert tail_target(DIRECT) is None
    assert tail_target(b'"topic":"unterminated') is None


def test_withheld_messages_are_skipped_by_every_later_replay() -> None:
    session = session_with(TOPIC, PUBLIC, ROOM, DIRECT, GLOBAL)
    withheld = session.withhold(["vip.>"], ["public.>"], ["vip-room"])
    assert withheld == {1, 3}
    assert [seq for seq, _ in session.replay_after(0) or []] == [2, 4, 5]
    assert session.replay_after(2) == [(4, DIRECT), (5, GLOBAL)]
    assert session.replay_after(5) == []
    assert session.seq == 5  # seq numbers are kept: the client sees a gap
    # Withheld once, withheld for good (the bodies are gone).
    assert session.withhold([], [], []) == set()
    assert all(tail for seq, tail in session.buffer if seq not in withheld)
    assert all(not tail for seq, tail in session.buffer if seq in withheld)


def test_a_message_still_matched_by_a_kept_subscription_is_replayed() -> None:
    session = session_with(TOPIC, PUBLIC)
    assert session.withhold([">"], ["public.*"], []) == {1}
    assert session.replay_after(0) == [(2, PUBLIC)]


def test_nothing_dropped_changes_nothing() -> None:
    session = session_with(TOPIC, ROOM)
    buffer = session.buffer
    assert session.withhold([], ["vip.>"], []) == set()
    assert session.buffer is buffer
    assert session.withhold(["other.>"], [], ["other"]) == set()
    assert len(session.replay_after(0) or []) == 2


def test_the_buffer_bound_is_kept() -> None:
    session = Session("s-1", "alice", (), buffer_size=2)
    for tail in (TOPIC, PUBLIC, TOPIC):
        session.deliver(tail)
    session.withhold(["vip.>"], [], [])
    session.deliver(PUBLIC)
    assert [seq for seq, _ in session.buffer] == [3, 4]
    assert session.replay_after(2) == [(4, PUBLIC)]


def test_resume_plan_replays_around_withheld_messages() -> None:
    registry = SessionRegistry(buffer_size=10)
    session = registry.create("alice", ())
    for tail in (TOPIC, PUBLIC, ROOM):
        session.deliver(tail)
    registry.detach(session, 0.0)
    session.withhold(["vip.news"], [], ["vip-room"])
    plan = plan_resume(registry, "alice", session.id, 0, shared=False)
    assert plan.resumed and plan.replay == ((2, PUBLIC),)
