"""Delivery receipts in the session core (rtcs/sessions.py, docs/protocol.md
"Delivery receipts"): pure, tested synchronously with a fake clock."""

from __future__ import annotations

import json

from rtcs.backends.base import ReceiptState
from rtcs.protocol.codec import message_tail
from rtcs.sessions import SessionRegistry
from tests.support.waiting import FakeClock

TIMEOUT = 5.0
ATTEMPTS = 2


class Sink:
    def __init__(self, connection_id: str = "c-1") -> None:
        self.connection_id = connection_id
        self.frames: list[bytes] = []

    def push(self, frame: bytes) -> bool:
        self.frames.append(frame)
        return True

    def push_message(self, frame: bytes) -> bool:
        return self.push(frame)

    def close(self, code: int, reason: str = "") -> None:
        pass

    def seqs(self) -> list[int]:
        return [json.loads(frame)["seq"] for frame in self.frames]


class Timer:
    """Stands in for the connection actor's timer: records every arm."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Writes:
    """The redelivery writes of the connection actor; ``room`` of them succeed."""

    def __init__(self, room: int = 1000) -> None:
        self.room = room
        self.written: list[int] = []

    def __call__(self, seq: int, tail: bytes) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.written.append(seq)
        return True


def topic(name: str, data: object = None) -> bytes:
    return message_tail(topic=name, from_user="bob", data=data, ts=0)


class Bed:
    """One attached session with receipts wired to a fake clock and timer."""

    def __init__(self, buffer_size: int = 10) -> None:
        self.clock = FakeClock()
        self.timer = Timer()
        self.registry = SessionRegistry(buffer_size)
        self.counts = self.registry.receipt_counts
        self.sink = Sink()
        self.session = self.registry.create("alice", ())
        self.registry.attach(self.session, self.sink)

    def subscribe(self, pattern: str, receipts: bool = True) -> None:
        session = self.session
        session.subscriptions.add(pattern)
        session.want_receipts(pattern, receipts, self.counts)
        self.wire()

    def wire(self) -> None:
        receipts = self.session.receipts
        if receipts is not None and receipts.arm is None:
            receipts.wire(self.clock, self.timer, TIMEOUT, ATTEMPTS)

    def unacked(self) -> list[int]:
        receipts = self.session.receipts
        return [] if receipts is None else list(receipts.unacked)

    def redeliver(self, writes: Writes | None = None) -> list[int]:
        writes = writes if writes is not None else Writes()
        self.session.redeliver(self.clock(), writes)
        return writes.written


def test_a_session_without_receipts_has_no_receipt_state() -> None:
    bed = Bed()
    bed.subscribe("news.>", receipts=False)
    bed.session.deliver(topic("news.eu"))
    assert bed.session.receipts is None
    assert bed.counts.pending == 0
    assert bed.session.receipt_state() is None


def test_only_topic_messages_of_a_receipt_subscription_need_one() -> None:
    bed = Bed()
    bed.subscribe("news.*")
    bed.session.subscriptions.add("chat.>")
    bed.session.deliver(topic("news.eu"))  # 1: yes
    bed.session.deliver(topic("chat.x"))  # 2: another subscription
    bed.session.deliver(message_tail(room="lobby", data=1, ts=0))  # 3: a room
    bed.session.deliver(message_tail(from_user="bob", data=1, ts=0))  # 4: direct
    bed.session.deliver(topic("news.us"))  # 5: yes
    assert bed.unacked() == [1, 5]
    assert bed.counts.pending == 2


def test_a_pattern_not_yet_subscribed_needs_no_receipt() -> None:
    # The connection asks for receipts before the handler adds the subscription.
    bed = Bed()
    bed.session.subscriptions.add("news.>")
    bed.session.want_receipts("news.eu", True, bed.counts)
    bed.wire()
    bed.session.deliver(topic("news.eu"))
    assert bed.unacked() == []


def test_receipts_are_cumulative() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    for _ in range(4):
        bed.session.deliver(topic("news.eu"))
    bed.session.acknowledge(2)
    assert bed.unacked() == [3, 4]
    bed.session.acknowledge(1)  # older: nothing more
    assert bed.unacked() == [3, 4]
    bed.session.acknowledge(4)
    assert bed.unacked() == [] and bed.counts.pending == 0


def test_one_timer_per_session_armed_at_the_first_pending_message() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    for _ in range(5):
        bed.session.deliver(topic("news.eu"))
    assert bed.timer.delays == [TIMEOUT]


def test_nothing_is_redelivered_before_its_timeout() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    bed.session.deliver(topic("news.eu"))
    bed.clock.advance(1.0)
    bed.session.deliver(topic("news.eu"))
    bed.clock.advance(TIMEOUT - 1.5)
    assert bed.redeliver() == []
    # Re-armed for the first due, never sooner than a tenth of the timeout.
    assert bed.timer.delays[-1] == TIMEOUT / 10


def test_overdue_messages_come_again_in_seq_order_then_are_given_up() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    for _ in range(3):
        bed.session.deliver(topic("news.eu"))
    bed.session.acknowledge(1)
    for round_ in range(ATTEMPTS):
        bed.clock.advance(TIMEOUT)
        assert bed.redeliver() == [2, 3], round_
        assert bed.timer.delays[-1] == TIMEOUT
    assert bed.counts.redeliveries == 2 * ATTEMPTS
    bed.clock.advance(TIMEOUT)
    assert bed.redeliver() == []
    assert bed.counts.given_up == {"attempts": 2, "evicted": 0}
    assert bed.counts.pending == 0
    # Nothing awaits: the session is back to the one-test delivery.
    assert bed.session.receipts is not None  # still a receipt subscription
    bed.session.subscriptions.discard("news.>")
    assert bed.session.receipts is None


def test_a_full_outbox_leaves_the_rest_for_the_next_round() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    for _ in range(3):
        bed.session.deliver(topic("news.eu"))
    bed.clock.advance(TIMEOUT)
    assert bed.redeliver(Writes(room=1)) == [1]
    assert bed.timer.delays[-1] == TIMEOUT / 10
    bed.clock.advance(TIMEOUT / 10)
    assert bed.redeliver() == [2, 3]
    assert bed.counts.redeliveries == 3


def test_messages_pushed_out_of_the_buffer_are_given_up() -> None:
    bed = Bed(buffer_size=2)
    bed.subscribe("news.>")
    for _ in range(3):
        bed.session.deliver(topic("news.eu"))
    assert bed.unacked() == [2, 3]
    assert bed.counts.given_up["evicted"] == 1
    assert bed.counts.pending == 2


def test_without_a_replay_buffer_a_message_is_given_up_at_once() -> None:
    bed = Bed(buffer_size=0)
    bed.subscribe("news.>")
    bed.session.deliver(topic("news.eu"))
    assert bed.unacked() == []
    assert bed.counts.given_up["evicted"] == 1


def test_unsubscribing_drops_only_what_that_subscription_required() -> None:
    bed = Bed()
    bed.subscribe("news.*")
    bed.subscribe("news.eu")
    bed.subscribe("sport.>")
    bed.session.deliver(topic("news.eu"))  # 1: both news patterns
    bed.session.deliver(topic("news.us"))  # 2: news.* only
    bed.session.deliver(topic("sport.x"))  # 3
    bed.session.subscriptions.discard("news.*")
    assert bed.unacked() == [1, 3]
    bed.session.want_receipts("news.eu", False, bed.counts)  # subscribed again without
    assert bed.unacked() == [3]
    assert bed.counts.pending == 1
    assert bed.counts.given_up == {"attempts": 0, "evicted": 0}


def test_withheld_messages_no_longer_need_a_receipt() -> None:
    bed = Bed()
    bed.subscribe("vip.>")
    bed.session.deliver(topic("vip.news"))
    bed.session.withhold(["vip.>"], [], [])
    bed.clock.advance(TIMEOUT)
    assert bed.redeliver() == []
    assert bed.unacked() == [] and bed.counts.given_up["attempts"] == 0


def test_a_resume_redelivers_up_to_last_seq_and_times_the_rest_after_the_replay() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    for _ in range(3):
        bed.session.deliver(topic("news.eu"))
    bed.registry.detach(bed.session, bed.clock())
    bed.session.deliver(topic("news.eu"))  # 4, while detached
    assert bed.session.receipts is not None and bed.session.receipts.arm is None
    bed.clock.advance(60)
    sink = Sink("c-2")
    bed.registry.attach(bed.session, sink)
    bed.timer.delays.clear()
    bed.wire()
    again = bed.session.resume_receipts(2, bed.clock())
    assert [seq for seq, _ in again] == [1, 2]
    assert bed.timer.delays == [TIMEOUT]
    # 3 and 4 are replayed; their timeout starts when the replay is done.
    bed.clock.advance(1.0)
    bed.session.receipts_sent(bed.clock())
    bed.clock.advance(TIMEOUT - 1.0)
    assert bed.redeliver() == [1, 2]
    bed.clock.advance(1.0)
    assert bed.redeliver() == [3, 4]
    assert bed.counts.redeliveries == 6


def test_a_resume_gives_up_on_messages_out_of_attempts() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    bed.session.deliver(topic("news.eu"))
    for _ in range(ATTEMPTS):
        bed.clock.advance(TIMEOUT)
        bed.redeliver()
    bed.registry.detach(bed.session, bed.clock())
    bed.registry.attach(bed.session, Sink("c-2"))
    bed.wire()
    assert bed.session.resume_receipts(1, bed.clock()) == []
    assert bed.counts.given_up["attempts"] == 1


def test_the_state_kept_for_resume_restores_elsewhere() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    bed.session.subscriptions.add("plain.>")
    bed.session.deliver(topic("news.eu"))  # 1
    bed.session.deliver(topic("news.eu"))  # 2
    bed.session.deliver(topic("plain.x"))  # 3
    bed.session.acknowledge(1)
    bed.clock.advance(TIMEOUT)
    bed.redeliver()  # 2 redelivered once
    state = bed.session.receipt_state()
    assert state == ReceiptState(patterns=("news.>",), unacked=((2, 1),), upto=3)
    # Another node: the stored buffer also holds 4 and 5, delivered after the save.
    other = SessionRegistry(10)
    buffer = [*bed.session.buffer, (4, topic("news.us")), (5, topic("plain.y"))]
    restored = other.restore(
        bed.session.id,
        "alice",
        (),
        seq=5,
        buffer=buffer,
        subscriptions=["news.>", "plain.>"],
        rooms=[],
        now=0.0,
        receipts=state,
    )
    assert restored.receipts is not None
    assert [(s, e.redeliveries) for s, e in restored.receipts.unacked.items()] == [(2, 1), (4, 0)]
    assert other.receipt_counts.pending == 2
    other.remove(restored)
    assert other.receipt_counts.pending == 0


def test_a_restored_message_no_longer_buffered_is_given_up() -> None:
    registry = SessionRegistry(10)
    state = ReceiptState(patterns=("news.>",), unacked=((1, 0), (2, 0)), upto=2)
    session = registry.restore(
        "s-1",
        "alice",
        (),
        seq=2,
        buffer=[(2, topic("news.eu"))],
        subscriptions=["news.>"],
        rooms=[],
        now=0.0,
        receipts=state,
    )
    assert session.receipts is not None and list(session.receipts.unacked) == [2]
    assert registry.receipt_counts.given_up["evicted"] == 1


def test_detaching_disarms_the_timer_of_the_gone_connection() -> None:
    bed = Bed()
    bed.subscribe("news.>")
    bed.session.deliver(topic("news.eu"))
    receipts = bed.session.receipts
    assert receipts is not None and receipts.armed
    bed.registry.detach(bed.session, bed.clock())
    assert not receipts.armed and receipts.clock is None
    bed.session.deliver(topic("news.eu"))
    assert bed.timer.delays == [TIMEOUT]  # no timer while detached
    assert [e.sent_at for e in receipts.unacked.values()] == [bed.clock(), None]
