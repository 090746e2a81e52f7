"""Which messages of a session the application was given: exactly once, in order.

rtcs numbers the messages of a session 1, 2, 3, … (``seq``) and, on a resume
with ``last_seq``, replays exactly those after it. A replay may still overlap
what the client already holds (a resume raced with a message in flight, or
the application resumed from an older ``last_seq``), so the client keeps the
highest ``seq`` it handed on and drops any message at or below it. A jump
forward is accepted: rtcs skips the ``seq`` of messages withheld after a role
downgrade (docs/protocol.md, "Permissions"); it is counted in ``gaps``.

Pure: no I/O.
"""

from __future__ import annotations

__all__ = ["SeqTracker"]


class SeqTracker:
    """The highest ``seq`` handed to the application in the current session.

    ``last`` is what the client presents as ``last_seq`` when it resumes.
    """

    __slots__ = ("duplicates", "gaps", "last")

    def __init__(self, last: int = 0) -> None:
        """Start after ``last`` (0: nothing received yet).

        Raises:
            ValueError: ``last`` is negative.
        """
        if last < 0:
            raise ValueError(f"last must be >= 0, not {last}")
        self.last = last
        #: Messages dropped because their seq was already handed on.
        self.duplicates = 0
        #: Times a seq skipped ahead (withheld messages, see the module docstring).
        self.gaps = 0

    def accept(self, seq: int) -> bool:
        """True if the message numbered ``seq`` is new: hand it on (``last`` moves to it).

        False for a duplicate (``seq <= last``): drop it.
        """
        if seq <= self.last:
            self.duplicates += 1
            return False
        if seq != self.last + 1:
            self.gaps += 1
        self.last = seq
        return True

    def reset(self) -> None:
        """A new session begins (a resume failed): its seq starts again from 1."""
        self.last = 0
