"""Session store conformance: save, claim, expiry, buffer cap, delete, count."""

from __future__ import annotations

import asyncio
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
