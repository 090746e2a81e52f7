"""rtcs.gateway.coalesce: when connections are flushed, and in what order."""

from __future__ import annotations

import asyncio

from rtcs.gateway.coalesce import DUE, HELD, IDLE, Coalescer
from tests.support import wait_until


class Conn:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log
        self.flush_state = IDLE
        self.flushed = asyncio.Event()

    def flush(self) -> None:
        self.log.append(self.name)
        self.flushed.set()


async def next_iteration() -> None:
    # call_soon callbacks queued now run before this sleep's wake-up.
    await asyncio.sleep(0)


async def test_due_connections_flush_once_at_the_end_of_the_iteration() -> None:
    log: list[str] = []
    coalescer = Coalescer()
    a, b = Conn("a", log), Conn("b", log)
    coalescer.due(a)
    coalescer.due(b)
    assert (a.flush_state, b.flush_state) == (DUE, DUE)
    assert log == []  # nothing is written inside the turn that pushed
    await next_iteration()
    assert log == ["a", "b"]
    assert (a.flush_state, b.flush_state) == (IDLE, IDLE)


async def test_held_connections_wait_for_the_window() -> None:
    log: list[str] = []
    coalescer = Coalescer(window=0.05)
    a = Conn("a", log)
    coalescer.hold(a)
    assert a.flush_state == HELD
    await next_iteration()
    assert log == []  # not at the end of the iteration: the window holds it
    await asyncio.wait_for(a.flushed.wait(), 1.0)
    assert log == ["a"] and a.flush_state == IDLE


async def test_a_held_connection_made_due_flushes_at_the_iteration_and_only_once() -> None:
    log: list[str] = []
    coalescer = Coalescer(window=0.05)
    a = Conn("a", log)
    coalescer.hold(a)
    coalescer.due(a)  # an ack for the same connection
    await next_iteration()
    assert log == ["a"]
    # The window's timer runs, finds it idle: no second flush.
    await wait_until(lambda: coalescer._held_timer is None, 1.0)
    assert log == ["a"]


async def test_after_flush_runs_once_the_pending_frames_were_written() -> None:
    log: list[str] = []
    coalescer = Coalescer()
    a = Conn("a", log)
    coalescer.due(a)
    coalescer.after_flush(lambda: log.append("written"))
    assert log == []
    await next_iteration()
    assert log == ["a", "written"]


async def test_after_flush_with_nothing_pending_runs_at_the_end_of_the_iteration() -> None:
    log: list[str] = []
    coalescer = Coalescer()
    coalescer.after_flush(lambda: log.append("written"))
    assert log == []
    await next_iteration()
    assert log == ["written"]


async def test_after_flush_waits_for_held_messages() -> None:
    log: list[str] = []
    coalescer = Coalescer(window=0.05)
    a = Conn("a", log)
    coalescer.hold(a)
    done = asyncio.Event()

    def written() -> None:
        log.append("written")
        done.set()

    coalescer.after_flush(written)
    await next_iteration()
    assert log == []  # the messages are still held
    await asyncio.wait_for(done.wait(), 1.0)
    assert log == ["a", "written"]
