"""A FIFO from the connection to the application: bounded, with an end.

Messages use a bounded mailbox whose ``put`` waits while it is full: the
connection then stops reading its socket, so a slow application slows the
server down (TCP backpressure) instead of growing memory. Events use one that
drops its oldest item instead (nobody may be reading them).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

__all__ = ["Mailbox"]

T = TypeVar("T")


class Mailbox(Generic[T]):
    """Items in order, for one reader; iterate it with ``async for``.

    After :meth:`end`, the reader gets what is left, then the iteration stops
    (or raises the error given to :meth:`end`). Only used on one event loop.
    """

    def __init__(self, maxsize: int, *, drop_oldest: bool = False) -> None:
        """``maxsize`` items at most (at least 1).

        ``drop_oldest``: a full mailbox drops its oldest item to take a new
        one, instead of making :meth:`put` wait.

        Raises:
            ValueError: ``maxsize`` below 1.
        """
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, not {maxsize}")
        self._items: deque[T] = deque()
        self._maxsize = maxsize
        self._drop_oldest = drop_oldest
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._ended = False
        self._error: BaseException | None = None
        #: Items dropped by a full mailbox with ``drop_oldest``.
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def ended(self) -> bool:
        """True once :meth:`end` was called."""
        return self._ended

    def put_nowait(self, item: T) -> None:
        """Add ``item`` now; a full mailbox drops its oldest item (or grows, without
        ``drop_oldest``: for the rare item that must not wait). Ignored after the end."""
        if self._ended:
            return
        if self._drop_oldest and len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._readable.set()
        if len(self._items) >= self._maxsize:
            self._writable.clear()

    async def put(self, item: T) -> None:
        """Add ``item``, waiting while the mailbox is full. Ignored after the end."""
        while not self._drop_oldest and len(self._items) >= self._maxsize and not self._ended:
            self._writable.clear()
            await self._writable.wait()
        self.put_nowait(item)

    async def get(self) -> T:
        """The oldest item, waiting for one.

        Raises:
            StopAsyncIteration: the mailbox ended without an error and is empty.
            BaseException: the error it ended with, once it is empty.
        """
        while not self._items:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        if len(self._items) < self._maxsize:
            self._writable.set()
        return item

    def end(self, error: BaseException | None = None) -> None:
        """No more items: the reader gets the rest, then the end (or ``error``).

        A second call changes nothing.
        """
        if self._ended:
            return
        self._ended = True
        self._error = error
        self._readable.set()
        self._writable.set()

    def __aiter__(self) -> Mailbox[T]:
        return self

    async def __anext__(self) -> T:
        return await self.get()
