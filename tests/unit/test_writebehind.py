"""The session write-behind (rtcs/backends/writebehind.py) on the memory store."""

from __future__ import annotations

from dataclasses import dataclass, field

from rtcs.backends.base import SessionSnapshot
from rtcs.backends.memory.sessions import MemorySessionStore
from rtcs.backends.writebehind import SessionWriteBehind
from tests.support import FakeClock

TTL = 10.0


def snap(node: str, seq: int = 0, session_id: str = "s-1") -> SessionSnapshot:
    return SessionSnapshot(session_id, "alice", ("news",), (), seq, (), node)


@dataclass
class Reports:
    lost: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)


def crash_safe(
    store: MemorySessionStore, clock: FakeClock, node: str = "n1"
) -> tuple[SessionWriteBehind, Reports]:
    reports = Reports()
    write_behind = SessionWriteBehind(
        store,
        3,
        reports.lost.append,
        node=node,
        ttl=TTL,
        crash_safe=True,
        on_moved=reports.moved.append,
        on_absent=reports.absent.append,
        clock=clock,
    )
    return write_behind, reports


async def test_attached_notes_are_written_in_one_batch_and_keep_the_session_alive() -> None:
    clock = FakeClock()
    store = MemorySessionStore(clock)
    write_behind, reports = crash_safe(store, clock)
    write_behind.save(snap("n1"), TTL)
    for seq in (1, 2, 3, 4):
        write_behind.note_attached("s-1", seq, b"m%d" % seq)
    await write_behind.flush()
    clock.advance(TTL * 0.9)
    write_behind.keep_alive(["s-1"], TTL / 3)  # written 9 s ago: touched
    await write_behind.flush()
    clock.advance(TTL * 0.9)
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None and claimed.seq == 4
    assert claimed.buffer == ((2, b"m2"), (3, b"m3"), (4, b"m4"))
    assert reports == Reports()


async def test_moved_and_absent_are_reported() -> None:
    clock = FakeClock()
    store = MemorySessionStore(clock)
    write_behind, reports = crash_safe(store, clock)
    await store.save(snap("n2"), TTL)
    write_behind.note_attached("s-1", 1, b"x")  # another node's record
    write_behind.note_attached("s-2", 1, b"x")  # no record at all
    write_behind.note("s-3", 1, b"x")  # detached, no record: lost
    write_behind.save(snap("n1", 5), TTL)  # a plain save of another node's: moved
    await write_behind.flush()
    assert reports == Reports(lost=["s-3"], moved=["s-1", "s-1"], absent=["s-2"])
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None and claimed.node == "n2" and claimed.seq == 0


async def test_a_take_over_save_wins() -> None:
    clock = FakeClock()
    store = MemorySessionStore(clock)
    write_behind, reports = crash_safe(store, clock)
    await store.save(snap("n2", 7), TTL)
    write_behind.save(snap("n1", 8), TTL, take_over=True)
    write_behind.note_attached("s-1", 9, b"nine")
    await write_behind.flush()
    assert reports == Reports()
    claimed = await store.claim("s-1", "alice")
    assert claimed is not None and (claimed.node, claimed.seq) == ("n1", 9)


async def test_keep_alive_touches_only_what_was_not_written_lately() -> None:
    clock = FakeClock()
    store = MemorySessionStore(clock)
    write_behind, reports = crash_safe(store, clock)
    write_behind.save(snap("n1", session_id="s-a"), TTL)
    write_behind.save(snap("n1", session_id="s-b"), TTL)
    await write_behind.flush()
    clock.advance(TTL * 0.5)
    write_behind.note_attached("s-a", 1, b"x")
    await write_behind.flush()
    clock.advance(TTL * 0.2)  # s-b written 7 s ago, s-a 2 s ago
    write_behind.keep_alive(["s-a", "s-b", "s-gone"], TTL / 3)
    await write_behind.flush()
    assert reports.absent == ["s-gone"]
    clock.advance(TTL * 0.9)  # s-a expires (written 11 s ago), s-b was touched 9 s ago
    assert await store.claim("s-a", "alice") is None
    assert await store.claim("s-b", "alice") is not None
