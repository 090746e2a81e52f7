"""Session store conformance: save, claim, expiry, buffer cap, delete, count."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING

import pytest

from rtcs.backends.base import SessionSnapshot

if TYPE_CHECKING:
    from tests.contract.conftest import Harness

TTL = 1.0  # short, so an implementation with real TTLs stays quick


def snap(
    session_id: str = "s-1",
    user: str = "alice",
    seq: int = 3,
    buffer: tuple[tuple[int, bytes], ...] = ((2, b"two"), (3, b"three")),
) -> SessionSnapshot:
    return SessionSnapshot(
        session_id=session_id,
        user=user,
        subscriptions=("news.*", "chat.>"),
        rooms=("lobby",),
        seq=seq,
        buffer=buffer,
        node="n1",
    )


async def test_claim_returns_what_was_saved_once(impl: Harness) -> None:
    store = impl.sessions()
    saved = snap(buffer=((1, b"\x00\xff"), (2, b"")))
    await store.save(saved, TTL)
    assert await store.claim("s-1", "alice") == saved
    assert await store.claim("s-1", "alice") is None
    assert await store.count() == 0


async def test_claim_of_an_unknown_session_is_none(impl: Harness) -> None:
    assert await impl.sessions().claim("s-nope", "alice") is None


async def test_wrong_user_gets_nothing_and_the_session_stays(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    assert await store.claim("s-1", "mallory") is None
    assert await store.count() == 1
    assert await store.claim("s-1", "alice") == snap()


async def test_a_session_expires_after_its_ttl(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    await impl.advance(TTL * 0.25)
    assert await store.count() == 1
    await impl.advance(TTL)
    assert await store.count() == 0
    assert await store.claim("s-1", "alice") is None


async def test_an_expired_session_cannot_be_claimed(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    await impl.advance(TTL * 1.5)
    assert await store.claim("s-1", "alice") is None


async def test_save_replaces_and_restarts_the_ttl(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(seq=1), TTL)
    await impl.advance(TTL * 0.6)
    await store.save(snap(seq=9), TTL)
    await impl.advance(TTL * 0.6)
    assert await store.count() == 1
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None and claimed.seq == 9


async def test_non_positive_ttl_is_refused(impl: Harness) -> None:
    with pytest.raises(ValueError):
        await impl.sessions().save(snap(), 0)


async def test_append_to_an_unknown_session_is_false(impl: Harness) -> None:
    assert await impl.sessions().append("s-nope", 1, b"x", 10) is False


async def test_append_keeps_the_newest_up_to_cap(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(seq=0, buffer=()), TTL)
    for seq in range(1, 8):
        assert await store.append("s-1", seq, f"m{seq}".encode(), 3) is True
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None
    assert claimed.buffer == ((5, b"m5"), (6, b"m6"), (7, b"m7"))
    assert claimed.seq == 7


async def test_append_keeps_the_saved_buffer_oldest_first(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    assert await store.append("s-1", 4, b"four", 10)
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None
    assert claimed.buffer == ((2, b"two"), (3, b"three"), (4, b"four"))
    assert claimed.seq == 4


async def test_append_to_an_expired_session_is_false(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    await impl.advance(TTL * 1.5)
    assert await store.append("s-1", 4, b"four", 10) is False


async def test_append_does_not_extend_the_ttl(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    await impl.advance(TTL * 0.6)
    assert await store.append("s-1", 4, b"four", 10)
    await impl.advance(TTL * 0.6)
    assert await store.claim("s-1", "alice") is None


async def test_delete_forgets_and_tolerates_unknown_ids(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    await store.delete("s-1")
    await store.delete("s-never")
    assert await store.claim("s-1", "alice") is None
    assert await store.count() == 0


async def test_count_counts_live_sessions(impl: Harness) -> None:
    store = impl.sessions()
    for i in range(5):
        await store.save(snap(session_id=f"s-{i}"), TTL)
    await store.claim("s-0", "alice")
    await store.delete("s-1")
    assert await store.count() == 3


async def test_concurrent_claims_hand_the_session_out_once(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    results = await asyncio.gather(*(store.claim("s-1", "alice") for _ in range(5)))
    assert [r for r in results if r is not None] == [snap()]


async def test_a_session_saved_by_one_node_is_claimed_by_another(impl: Harness) -> None:
    await impl.sessions().save(snap(), TTL)
    assert await impl.sessions().claim("s-1", "alice") == snap()


async def test_healthy(impl: Harness) -> None:
    assert impl.sessions().healthy()


# -- owned records and mirroring (session.crash_safe) ---------------------------------


def owned(node: str, session_id: str = "s-1", seq: int = 3) -> SessionSnapshot:
    return replace(snap(session_id=session_id, seq=seq), node=node)


async def test_save_reports_that_it_stored(impl: Harness) -> None:
    store = impl.sessions()
    assert await store.save(snap(), TTL) is True
    assert await store.save(snap(seq=4), TTL) is True  # its own record: replaced


async def test_another_nodes_plain_save_is_refused_and_take_over_wins(impl: Harness) -> None:
    store = impl.sessions()
    assert await store.save(owned("n1", seq=3), TTL)
    assert await store.save(owned("n2", seq=9), TTL) is False
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None and (claimed.node, claimed.seq) == ("n1", 3)
    await store.save(owned("n1", seq=3), TTL)
    assert await store.save(owned("n2", seq=9), TTL, take_over=True) is True
    assert await store.save(owned("n1", seq=4), TTL) is False  # n1 lost it for good
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None and (claimed.node, claimed.seq) == ("n2", 9)


async def test_an_expired_record_of_another_node_does_not_block_a_save(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(owned("n1"), TTL)
    await impl.advance(TTL * 1.5)
    assert await store.save(owned("n2"), TTL) is True


async def test_mirror_appends_in_order_and_reports_absent_and_moved(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(owned("n1", "s-a", seq=0), TTL)
    await store.save(replace(owned("n1", "s-b", seq=0), buffer=()), TTL)
    await store.save(owned("n2", "s-c"), TTL)
    entries = [
        ("s-a", 4, b"a4"),
        ("s-b", 1, b"b1"),
        ("s-c", 4, b"c4"),
        ("s-a", 5, b"a5"),
        ("s-x", 1, b"x1"),
    ]
    absent, moved = await store.mirror("n1", TTL, 10, entries)
    assert (absent, moved) == ({"s-x"}, {"s-c"})
    a = await store.claim("s-a", "alice")
    assert a is not None and a.seq == 5
    assert a.buffer == ((2, b"two"), (3, b"three"), (4, b"a4"), (5, b"a5"))
    b = await store.claim("s-b", "alice")
    assert b is not None and (b.seq, b.buffer) == (1, ((1, b"b1"),))
    c = await store.claim("s-c", "alice")
    assert c is not None and c.seq == 3 and c.buffer == snap().buffer  # untouched
    assert await store.claim("s-x", "alice") is None  # nothing created


async def test_mirror_keeps_the_newest_up_to_cap_and_never_lowers_seq(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(owned("n1", seq=10), TTL)
    entries = [("s-1", seq, f"m{seq}".encode()) for seq in (4, 5, 6)]
    assert await store.mirror("n1", TTL, 2, entries) == (set(), set())
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None
    assert claimed.buffer == ((5, b"m5"), (6, b"m6")) and claimed.seq == 10


async def test_mirror_with_a_zero_cap_keeps_no_buffer(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(owned("n1"), TTL)
    assert await store.mirror("n1", TTL, 0, [("s-1", 4, b"x")]) == (set(), set())
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None and claimed.buffer == () and claimed.seq == 4


async def test_mirror_moves_the_expiry_on(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(owned("n1"), TTL)
    await impl.advance(TTL * 0.6)
    await store.mirror("n1", TTL, 10, [("s-1", 4, b"four")])
    await impl.advance(TTL * 0.6)  # past the saved expiry
    assert await store.count() == 1
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None and claimed.buffer[-1] == (4, b"four")


async def test_mirror_without_ttl_keeps_the_expiry(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(owned("n1"), TTL)
    await impl.advance(TTL * 0.6)
    assert await store.mirror("n1", None, 10, [("s-1", 4, b"four")]) == (set(), set())
    await impl.advance(TTL * 0.6)
    assert await store.claim("s-1", "alice") is None


async def test_mirror_of_nothing_and_bad_arguments(impl: Harness) -> None:
    store = impl.sessions()
    assert await store.mirror("n1", TTL, 10, []) == (set(), set())
    with pytest.raises(ValueError):
        await store.mirror("n1", TTL, -1, [("s-1", 1, b"x")])
    with pytest.raises(ValueError):
        await store.mirror("n1", 0, 10, [("s-1", 1, b"x")])


async def test_touch_moves_the_expiry_of_own_records_only(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(owned("n1", "s-a"), TTL)
    await store.save(owned("n2", "s-b"), TTL)
    await impl.advance(TTL * 0.6)
    absent, moved = await store.touch("n1", TTL, ["s-a", "s-b", "s-x"])
    assert (absent, moved) == ({"s-x"}, {"s-b"})
    await impl.advance(TTL * 0.6)
    assert await store.claim("s-b", "alice") is None  # not moved on: expired
    claimed = await store.claim("s-a", "alice")
    assert claimed is not None and claimed.buffer == snap().buffer
    assert await store.touch("n1", TTL, []) == (set(), set())
    with pytest.raises(ValueError):
        await store.touch("n1", 0, ["s-a"])


# -- publish de-duplication (first_publish) ---------------------------------------------

WINDOW = 1.0  # seconds: short, so an implementation with real TTLs stays quick


async def test_first_publish_then_duplicates(impl: Harness) -> None:
    store = impl.sessions()
    assert await store.first_publish("s-1", "p-1", WINDOW, 10) is True
    assert await store.first_publish("s-1", "p-1", WINDOW, 10) is False
    assert await store.first_publish("s-1", "p-1", WINDOW, 10) is False
    assert await store.first_publish("s-1", "p-2", WINDOW, 10) is True
    # Another node sees what this one recorded.
    assert await impl.sessions().first_publish("s-1", "p-2", WINDOW, 10) is False


async def test_first_publish_is_forgotten_after_the_window(impl: Harness) -> None:
    store = impl.sessions()
    assert await store.first_publish("s-1", "p-1", WINDOW, 10) is True
    await impl.advance(WINDOW * 0.25)
    assert await store.first_publish("s-1", "p-1", WINDOW, 10) is False
    # A duplicate does not extend the window: polling is harmless. Bounded:
    # the id must be new again within a few windows.
    advanced = WINDOW * 0.25
    while not await store.first_publish("s-1", "p-1", WINDOW, 10):
        assert advanced < WINDOW * 4, "the publish id was never forgotten"
        await impl.advance(WINDOW / 20)
        advanced += WINDOW / 20
    assert advanced >= WINDOW * 0.9
    assert await store.first_publish("s-1", "p-1", WINDOW, 10) is False  # recorded again


async def test_first_publish_remembers_at_most_cap_ids_oldest_forgotten(impl: Harness) -> None:
    store = impl.sessions()
    for i in range(5):
        assert await store.first_publish("s-1", f"p-{i}", WINDOW * 10, 3) is True
    # p-0 and p-1 were forgotten (oldest first); p-2..p-4 are remembered.
    for i in (2, 3, 4):
        assert await store.first_publish("s-1", f"p-{i}", WINDOW * 10, 3) is False
    assert await store.first_publish("s-1", "p-0", WINDOW * 10, 3) is True  # now p-2 goes
    assert await store.first_publish("s-1", "p-2", WINDOW * 10, 3) is True
    assert await store.first_publish("s-1", "p-4", WINDOW * 10, 3) is False


async def test_first_publish_with_a_zero_cap_remembers_nothing(impl: Harness) -> None:
    store = impl.sessions()
    assert await store.first_publish("s-1", "p-1", WINDOW, 0) is True
    assert await store.first_publish("s-1", "p-1", WINDOW, 0) is True


async def test_first_publish_sessions_are_independent(impl: Harness) -> None:
    store = impl.sessions()
    assert await store.first_publish("s-a", "p-1", WINDOW, 1) is True
    assert await store.first_publish("s-b", "p-1", WINDOW, 1) is True
    assert await store.first_publish("s-b", "p-2", WINDOW, 1) is True  # evicts s-b's p-1 only
    assert await store.first_publish("s-a", "p-1", WINDOW, 1) is False
    assert await store.first_publish("s-b", "p-1", WINDOW, 1) is True


async def test_first_publish_is_independent_of_the_session_record(impl: Harness) -> None:
    store = impl.sessions()
    await store.save(snap(), TTL)
    assert await store.first_publish("s-1", "p-1", WINDOW, 10) is True
    assert await store.claim("s-1", "alice") == snap()
    await store.delete("s-1")
    assert await store.first_publish("s-1", "p-1", WINDOW, 10) is False
    assert await store.count() == 0  # not a session


async def test_first_publish_copes_with_huge_and_odd_ids(impl: Harness) -> None:
    store = impl.sessions()
    huge = "x" * 1_000_000
    assert await store.first_publish("s-1", huge, WINDOW, 10) is True
    assert await store.first_publish("s-1", huge, WINDOW, 10) is False
    assert await store.first_publish("s-1", huge + "y", WINDOW, 10) is True
    for odd in ("", "é\u2028", "a}b{c", "#" + "0" * 64):
        assert await store.first_publish("s-1", odd, WINDOW, 10) is True
        assert await store.first_publish("s-1", odd, WINDOW, 10) is False


async def test_concurrent_first_publishes_let_one_through(impl: Harness) -> None:
    store = impl.sessions()
    # One call first: what is checked here is the script's atomicity, not a
    # brand-new cluster client's first connections racing each other.
    assert await store.first_publish("s-0", "warm-up", WINDOW, 10) is True
    results = await asyncio.gather(
        *(store.first_publish("s-1", "p-1", WINDOW, 10) for _ in range(5))
    )
    assert sorted(results) == [False, False, False, False, True]


async def test_first_publish_refuses_bad_arguments(impl: Harness) -> None:
    store = impl.sessions()
    with pytest.raises(ValueError):
        await store.first_publish("s-1", "p-1", 0, 10)
    with pytest.raises(ValueError):
        await store.first_publish("s-1", "p-1", WINDOW, -1)
