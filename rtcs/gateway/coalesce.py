"""Write coalescing: each connection's frames of one loop iteration leave in one write.

A ``ConnectionHandle`` does not write a frame to its transport when an actor
pushes it: it appends the framed bytes to its own pending list and asks the
node's :class:`Coalescer` to flush it. The coalescer flushes every connection
with pending frames once per loop iteration (a ``call_soon`` callback, which
runs after the callbacks of the current iteration: the actors' turns that
produced the frames), so a burst, a replay or several topics' messages to one
connection cost one ``transport.write`` (one system call) instead of one per
frame. A C server measured 70-74k deliveries/s at one message per system call
and over 1M/s at 20 (docs/performance.md).

``limits.batch_window_ms`` > 0 lets message frames wait up to that long for
more: a connection holding only messages is flushed by a timer. A frame that
is not a message (an ack, an error, a reply) makes its connection due at the
end of the iteration, with the messages before it, so replies are never held
past the iteration and a connection's frames never change order.

``after_flush`` runs a callback once what is pending now has been written:
the routing latency (``rtcs_routing_seconds``) ends there, at the last
local write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["DUE", "HELD", "IDLE", "Coalescer", "Flushable"]

#: A connection's place in the coalescer: nothing pending, waiting for the
#: window (messages only), or flushed at the end of this iteration.
IDLE, HELD, DUE = 0, 1, 2


class Flushable(Protocol):
    """What the coalescer flushes (a ``ConnectionHandle``)."""

    #: IDLE, HELD or DUE; the coalescer sets it back to IDLE after a flush.
    flush_state: int

    def flush(self) -> None:
        """Write every pending frame in one write (or drop them if closed)."""
        ...


class Coalescer:
    """Flushes connections with pending frames: at the end of the iteration, or after the window.

    Obligations: used on the event-loop thread only.
    """

    __slots__ = (
        "_after_due",
        "_after_held",
        "_due",
        "_due_scheduled",
        "_held",
        "_held_timer",
        "_loop",
        "_window",
    )

    def __init__(self, window: float = 0.0, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``window``: seconds message frames may wait (0: the end of the iteration)."""
        self._loop = loop or asyncio.get_running_loop()
        self._window = window
        self._due: list[Flushable] = []
        self._due_scheduled = False
        self._held: list[Flushable] = []
        self._held_timer: asyncio.TimerHandle | None = None
        # Run after the next flush of each kind (after_flush).
        self._after_due: list[Callable[[], None]] = []
        self._after_held: list[Callable[[], None]] = []

    @property
    def window(self) -> float:
        return self._window

    def due(self, conn: Flushable) -> None:
        """Flush ``conn`` at the end of this iteration (it was IDLE or HELD)."""
        conn.flush_state = DUE
        self._due.append(conn)
        if not self._due_scheduled:
            self._due_scheduled = True
            self._loop.call_soon(self._flush_due)

    def hold(self, conn: Flushable) -> None:
        """Flush ``conn`` when the window ends (it was IDLE), unless it becomes due first."""
        conn.flush_state = HELD
        self._held.append(conn)
        if self._held_timer is None:
            self._held_timer = self._loop.call_later(self._window, self._flush_held)

    def after_flush(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the frames pending now have been written.

        That is after this iteration's flush, or after the window's when
        message frames are held (they were pushed before ``callback``).
        """
        if self._held_timer is not None:
            self._after_held.append(callback)
            return
        self._after_due.append(callback)
        if not self._due_scheduled:
            self._due_scheduled = True
            self._loop.call_soon(self._flush_due)

    def _flush_due(self) -> None:
        self._due_scheduled = False
        conns, self._due = self._due, []
        for conn in conns:
            conn.flush_state = IDLE
            conn.flush()
        if self._after_due:
            _run(self._after_due)
            self._after_due = []

    def _flush_held(self) -> None:
        self._held_timer = None
        conns, self._held = self._held, []
        for conn in conns:
            if conn.flush_state == HELD:  # not made due (and flushed) meanwhile
                conn.flush_state = IDLE
                conn.flush()
        if self._after_held:
            _run(self._after_held)
            self._after_held = []


def _run(callbacks: list[Callable[[], None]]) -> None:
    for callback in callbacks:
        callback()
