"""The gateway side of one connection: a bounded, non-blocking outbox.

Actors never touch the socket. They hold a ``ConnectionHandle`` (it
implements ``rtcs.actors.ports.ClientHandle``, and is the session's
``rtcs.sessions.Sink``) and call ``push(frame)`` with bytes
that are already encoded. ``push`` frames the bytes and hands them to the
transport synchronously, as ``websockets.broadcast()`` does, so there is no
``await ws.send()`` that could block forever on a client that never reads
(docs/architecture.md, "Library behaviour"). The transport's write buffer
*is* the outbox: when it would grow past ``limits.outbox_bytes`` the
connection is closed with 4008 and aborted if the close handshake cannot
complete, and its memory is freed.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from websockets.protocol import State

from rtcs.errors import CloseCode

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from rtcs.metrics import Metrics

# FIN + text opcode, then the 7-bit length: the header of every short frame.
_SMALL_HEADERS = [bytes((0x81, n)) for n in range(126)]


class ConnectionHandle:
    """One accepted WebSocket connection, as seen by the actors.

    Obligations: only used on the event-loop thread. ``push`` and ``close``
    never block and never raise.
    """

    __slots__ = (
        "_admission",
        "_close_timeout",
        "_closing",
        "_limit",
        "_metrics",
        "_protocol",
        "_tasks",
        "_transport",
        "_ws",
        "actor",
        "close_code",
        "connection_id",
        "created",
        "inflight",
        "paused",
        "peer",
        "user",
    )

    def __init__(
        self,
        ws: ServerConnection,
        connection_id: str,
        peer: str,
        outbox_bytes: int,
        close_timeout: float,
        metrics: Metrics,
    ) -> None:
        self._ws = ws
        self._close_timeout = close_timeout
        self._protocol = ws.protocol
        self._transport = ws.transport
        self._limit = outbox_bytes
        self._metrics = metrics
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connection_id = connection_id
        self.peer = peer
        self.user: str | None = None
        self.actor: object = None  # the connection actor's address, once admitted
        self.close_code: int | None = None
        loop = asyncio.get_running_loop()
        self.created = loop.time()
        # Inbound backpressure: frames told to the actor and not yet handled,
        # and the future the reader waits on while too many are (see resume()).
        self.inflight = 0
        self.paused: asyncio.Future[None] | None = None
        # Resolved by the connection supervisor (admit / refuse) or by the
        # gateway's open timeout: None when admitted, else the close code.
        self._admission: asyncio.Future[int | None] = loop.create_future()

    @property
    def closing(self) -> bool:
        return self._closing

    # -- admission ----------------------------------------------------------------

    def admit(self, actor: object) -> None:
        """The connection actor at ``actor`` runs: client frames go to it."""
        self.actor = actor
        if not self._admission.done():
            self._admission.set_result(None)

    def refuse(self, code: int) -> None:
        """Do not admit the connection; it is closed with ``code``."""
        if not self._admission.done():
            self._admission.set_result(int(code))

    @property
    def decided(self) -> bool:
        """True once the connection was admitted or refused."""
        return self._admission.done()

    async def admission(self) -> int | None:
        """Wait for the decision: None when admitted, else the refusal's close code."""
        return await self._admission

    def write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    @property
    def write_paused(self) -> bool:
        """True while the outbox is above its high-water mark (websockets'
        ``write_limit``, 32 KiB) and has not yet drained below the low one."""
        return bool(self._ws.paused)

    async def drained(self) -> None:
        """Return once the outbox has drained below its low-water mark (8 KiB),
        or at once when it is not paused or the connection is closing.

        Raises:
            ConnectionError: the connection was lost meanwhile.
        """
        if not self._closing and self._ws.paused:
            await self._ws.drain()

    def push(self, frame: bytes) -> bool:
        """Write one text frame (UTF-8 JSON bytes) without blocking.

        Returns False when the frame was dropped: the connection is closing,
        or the outbox would exceed its bound (the connection is then closed
        with 4008).
        """
        if self._closing or self._protocol.state is not State.OPEN:
            self._metrics.outbox_drop("closed")
            return False
        if self._transport.get_write_buffer_size() + len(frame) > self._limit:
            self._metrics.outbox_drop("overflow")
            self.close(CloseCode.TOO_SLOW, "outbound queue overflow")
            return False
        n = len(frame)
        # The "fastlane": frame the bytes here and write them in one call,
        # instead of websockets' Frame object per message. Valid because rtcs
        # never fragments, negotiates no extension (compression is off), and
        # websockets flushes its own frames (pongs, close) as soon as it makes
        # them, so nothing of its can be pending between two pushes.
        if n < 126:
            header = _SMALL_HEADERS[n]
        elif n < 65536:
            header = b"\x81\x7e" + n.to_bytes(2, "big")
        else:
            header = b"\x81\x7f" + n.to_bytes(8, "big")
        try:
            self._transport.write(header + frame)
        except Exception:  # the transport is already broken: treat as closed
            self._metrics.outbox_drop("closed")
            self.abort()
            return False
        return True

    def handled(self, low_water: int) -> None:
        """One client frame was handled; wake the reader once few are left."""
        self.inflight -= 1
        paused = self.paused
        if paused is not None and self.inflight <= low_water:
            self.paused = None
            if not paused.done():
                paused.set_result(None)

    def _unpause(self) -> None:
        paused, self.paused = self.paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)

    def close(self, code: int, reason: str = "") -> None:
        """Start closing with ``code``; abort if the client does not answer."""
        if self._closing:
            return
        self._closing = True
        self._unpause()
        self.close_code = code
        task = asyncio.get_running_loop().create_task(self._close(code, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _close(self, code: int, reason: str) -> None:
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._ws.close(code, reason)
        except (TimeoutError, Exception):
            self.abort()

    def abort(self) -> None:
        """Drop the TCP connection at once (the client cannot keep up)."""
        self._closing = True
        self._unpause()
        with contextlib.suppress(Exception):
            self._transport.abort()
