"""Limits on detached sessions: how many per user, how many buffered bytes per node.

A detached session keeps its replay buffer (and, with a shared store, a copy
there) for ``session.ttl`` seconds, so a client that opens sessions and
abandons them makes the node hold their buffers. Two limits bound that
(docs/configuration.md, ``[limits]``):

- ``limits.max_detached_sessions``: detached sessions per user on this node;
  past it the user's oldest detached sessions are evicted (reason
  ``user_limit``).
- ``limits.max_detached_buffered_bytes``: replay-buffer bytes (message tails)
  of every detached session of this node; past it the node's oldest detached
  sessions are evicted until the rest fit (reason ``node_bytes``).

An evicted session is expired as if its TTL ran out: it is forgotten here,
its shared copy is deleted (in order, through the write-behind), and a later
resume gets the protocol's unknown-session outcome. Attached sessions are
never evicted and their buffers do not count.

:class:`DetachedLimits` is the pure part: given the detached sessions oldest
first, it decides what to evict, caching each session's buffer size so a
check costs a full recount only for buffers that changed.
:func:`evict_detached` is what the connection supervisor's reaper calls on
every reap (at most ``session.reap_interval`` apart): it plans, counts the
metrics, queues the shared deletes and returns the sessions to forget.
"""

from __future__ import annotations

import operator
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rtcs.actors.context import NodeContext
    from rtcs.sessions import Session

EvictionReason = Literal["user_limit", "node_bytes"]
EVICTION_REASONS: tuple[EvictionReason, ...] = ("user_limit", "node_bytes")

_tail = operator.itemgetter(1)


@dataclass(frozen=True, slots=True)
class Eviction:
    """A detached session to expire now, and why."""

    session: Session
    reason: EvictionReason


@dataclass(frozen=True, slots=True)
class DetachedPlan:
    """What one check decided: the evictions (oldest first) and what stays."""

    evictions: tuple[Eviction, ...]
    detached: int  # detached sessions left
    buffered_bytes: int  # their replay-buffer bytes


class DetachedLimits:
    """Decides which detached sessions go. Pure: no I/O, no clock.

    Raises (constructor):
        ValueError: a limit is not positive.
    """

    def __init__(self, max_per_user: int, max_bytes: int) -> None:
        if max_per_user < 1 or max_bytes < 1:
            raise ValueError(f"limits must be positive, got {max_per_user!r}, {max_bytes!r}")
        self.max_per_user = max_per_user
        self.max_bytes = max_bytes
        # session id -> (its buffer, seq, length, bytes) when last counted; the
        # buffer itself, not its id(), since withholding replaces it.
        self._sizes: dict[str, tuple[deque[tuple[int, bytes]], int, int, int]] = {}

    def buffered_bytes(self, session: Session) -> int:
        """The bytes of the message tails in ``session``'s replay buffer."""
        buffer = session.buffer
        cached = self._sizes.get(session.id)
        if (
            cached is not None
            and cached[0] is buffer
            and cached[1] == session.seq
            and cached[2] == len(buffer)
        ):
            return cached[3]
        size = sum(map(len, map(_tail, buffer)))
        self._sizes[session.id] = (buffer, session.seq, len(buffer), size)
        return size

    def plan(self, detached: Sequence[Session]) -> DetachedPlan:
        """Decide the evictions among ``detached`` (oldest detach first).

        First each user's oldest sessions past ``max_per_user``; then, while
        the rest hold more than ``max_bytes``, the oldest of them.
        """
        per_user = Counter(session.user for session in detached)
        excess = {user: n - self.max_per_user for user, n in per_user.items()}
        evictions: list[Eviction] = []
        kept: list[tuple[Session, int]] = []
        total = 0
        for session in detached:
            if excess[session.user] > 0:
                excess[session.user] -= 1
                evictions.append(Eviction(session, "user_limit"))
                continue
            size = self.buffered_bytes(session)
            kept.append((session, size))
            total += size
        dropped = 0
        while total > self.max_bytes and dropped < len(kept):
            session, size = kept[dropped]
            evictions.append(Eviction(session, "node_bytes"))
            total -= size
            dropped += 1
        # Forget the sizes of sessions no longer detached here.
        live = {session.id for session, _ in kept[dropped:]}
        if len(live) != len(self._sizes):
            self._sizes = {k: v for k, v in self._sizes.items() if k in live}
        return DetachedPlan(tuple(evictions), len(kept) - dropped, total)


_KEY = "rtcs.backends.detached"


def limits_of(ctx: NodeContext) -> DetachedLimits:
    """The node's :class:`DetachedLimits`, created on first use (kept in ``ctx.extra``)."""
    found = ctx.extra.get(_KEY)
    if isinstance(found, DetachedLimits):
        return found
    limits = ctx.settings.limits
    made = DetachedLimits(limits.max_detached_sessions, limits.max_detached_buffered_bytes)
    ctx.extra[_KEY] = made
    return made


def evict_detached(ctx: NodeContext) -> list[Session]:
    """Apply the detached-session limits; returns the sessions to forget now.

    The caller forgets each (as for an expired session: out of the registry
    and the routing indexes). Here: the shared copies are deleted through the
    write-behind (queued after the session's pending writes, so no earlier
    save can bring a record back), the sessions stop noting deliveries, and
    ``rtcs_sessions_evicted_total`` and ``rtcs_sessions_detached_buffered_bytes``
    are updated.
    """
    plan = limits_of(ctx).plan(ctx.sessions.detached())
    metrics = ctx.metrics
    write_behind = ctx.write_behind
    evicted: list[Session] = []
    for eviction in plan.evictions:
        session = eviction.session
        session.mirror = None
        if write_behind is not None:
            write_behind.delete(session.id)
        metrics.session_evicted(eviction.reason)
        ctx.log.info(
            "detached session evicted",
            session_id=session.id,
            user=session.user,
            reason=eviction.reason,
        )
        evicted.append(session)
    metrics.sessions_detached_buffered_bytes.set(plan.buffered_bytes)
    return evicted
