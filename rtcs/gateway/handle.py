"""The gateway side of one connection: a bounded, non-blocking outbox.

Actors never touch the socket. They hold a ``ConnectionHandle`` (it
implements ``rtcs.actors.ports.ClientHandle``, and is the session's
``rtcs.sessions.Sink``) and call ``push(frame)`` (replies) or
``push_message(frame)`` (messages) with bytes that are already encoded.
The handle frames the bytes at once and keeps them in its pending list; the
node's ``Coalescer`` (``rtcs.gateway.coalesce``) writes each connection's
pending frames to its transport in one write at the end of the loop
iteration (messages may wait up to ``limits.batch_window_ms``). Nothing
awaits a send, so there is no ``await ws.send()`` that could block forever
on a client that never reads (docs/architecture.md, "Library behaviour").
The pending frames plus the transport's write buffer *are* the outbox: when
they would grow past ``limits.outbox_bytes`` the connection is closed with
4008 and aborted if the close handshake cannot complete, and its memory is
freed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from websockets.frames import Frame, Opcode
from websockets.protocol import State

from rtcs.actors.messages import ClientText
from rtcs.errors import CloseCode
from rtcs.gateway.coalesce import DUE, IDLE, Coalescer

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from rtcs.metrics import Metrics

# FIN + text opcode, then the 7-bit length: the header of every short frame.
_SMALL_HEADERS = [bytes((0x81, n)) for n in range(126)]
# Pending bytes past which the outbox counts as paused (websockets' default
# write_limit high-water mark): a replay stops producing and flushes.
PENDING_HIGH = 32768


def frame_header(n: int) -> bytes:
    """The header of an unmasked, final text frame of ``n`` payload bytes."""
    if n < 126:
        return _SMALL_HEADERS[n]
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


class ConnectionHandle:
    """One accepted WebSocket connection, as seen by the actors.

    Obligations: only used on the event-loop thread. ``push`` and ``close``
    never block and never raise.
    """

    __slots__ = (
        "_admission",
        "_backlog",
        "_close_timeout",
        "_closing",
        "_coalescer",
        "_fragments",
        "_headroom",
        "_hold",
        "_inbound_high",
        "_limit",
        "_metrics",
        "_out",
        "_out_bytes",
        "_protocol",
        "_tasks",
        "_tell",
        "_transport",
        "_ws",
        "actor",
        "close_code",
        "connection_id",
        "created",
        "flush_state",
        "inflight",
        "peer",
        "reading_paused",
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
        coalescer: Coalescer | None = None,
    ) -> None:
        """``coalescer``: the node's (a new one with no window when None)."""
        self._ws = ws
        self._close_timeout = close_timeout
        self._protocol = ws.protocol
        self._transport = ws.transport
        self._limit = outbox_bytes
        # The transport holds at most its high-water mark while writing is
        # not paused: below the bound by more than that, _queue need not ask it.
        self._headroom = outbox_bytes - ws.transport.get_write_buffer_limits()[1]
        self._metrics = metrics
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        # Framed bytes not yet written (one write per loop iteration).
        self._coalescer = coalescer if coalescer is not None else Coalescer()
        self._hold = self._coalescer.window > 0
        self._out: list[bytes] = []
        self._out_bytes = 0
        self.flush_state = IDLE
        self.connection_id = connection_id
        self.peer = peer
        self.user: str | None = None
        self.actor: object = None  # the connection actor's address, once admitted
        self.close_code: int | None = None
        loop = asyncio.get_running_loop()
        self.created = loop.time()
        # Inbound: messages told to the actor and not yet handled; the socket
        # is not read while ``inbound_high`` are (see frame() and handled()).
        self.inflight = 0
        self.reading_paused = False
        self._tell: Callable[[Any, Any], None] | None = None
        self._inbound_high = 0
        self._fragments: list[bytes] | None = None
        self._backlog: deque[ClientText] | None = None
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
        """Bytes of the outbox: pending frames and the transport's write buffer."""
        return self._transport.get_write_buffer_size() + self._out_bytes

    @property
    def congested(self) -> bool:
        """True while the transport's write buffer may exceed the outbox bound:
        writing is paused, or the bound is below the transport's high-water mark."""
        return self._headroom < 0 or bool(self._ws.paused)

    @property
    def write_paused(self) -> bool:
        """True while the outbox is above its high-water mark (websockets'
        ``write_limit``, 32 KiB, or as many bytes pending) and has not yet
        drained below the low one."""
        return bool(self._ws.paused) or self._out_bytes >= PENDING_HIGH

    async def drained(self) -> None:
        """Return once the outbox has drained below its low-water mark (8 KiB),
        or at once when it is not paused or the connection is closing.

        Pending frames are written first.

        Raises:
            ConnectionError: the connection was lost meanwhile.
        """
        if self._out:
            self.flush()
        if not self._closing and self._ws.paused:
            await self._ws.drain()

    def push(self, frame: bytes) -> bool:
        """Queue one text frame (UTF-8 JSON bytes), written at the end of this iteration.

        Returns False when the frame was dropped: the connection is closing,
        or the outbox would exceed its bound (the connection is then closed
        with 4008).
        """
        if not self._queue(frame):
            return False
        if self.flush_state != DUE:
            self._coalescer.due(self)
        return True

    def push_message(self, frame: bytes) -> bool:
        """Queue one ``message`` frame: like :meth:`push`, but it may wait up to
        ``limits.batch_window_ms`` for more (0: the end of this iteration)."""
        if not self._queue(frame):
            return False
        if self.flush_state == IDLE:
            if self._hold:
                self._coalescer.hold(self)
            else:
                self._coalescer.due(self)
        return True

    def _queue(self, frame: bytes) -> bool:
        if self._closing or self._protocol.state is not State.OPEN:
            self._metrics.outbox_drop("closed")
            return False
        n = len(frame)
        pending = self._out_bytes + n
        if (pending > self._headroom or self._ws.paused) and (
            self._transport.get_write_buffer_size() + pending > self._limit
        ):
            self._metrics.outbox_drop("overflow")
            self.close(CloseCode.TOO_SLOW, "outbound queue overflow")
            return False
        # The "fastlane": frame the bytes here instead of websockets' Frame
        # object per message. Valid because rtcs never fragments, negotiates
        # no extension (compression is off), and websockets writes its own
        # frames (pongs, close) as soon as it makes them; a close is preceded
        # by a flush (close()), and frames pending when websockets closed by
        # itself are dropped (flush()).
        self._out.append(_SMALL_HEADERS[n] + frame if n < 126 else frame_header(n) + frame)
        self._out_bytes += n
        return True

    def flush(self) -> None:
        """Write the pending frames in one write (the coalescer calls this)."""
        out = self._out
        if not out:
            return
        self._out = []
        self._out_bytes = 0
        if self._protocol.state is not State.OPEN:
            # websockets closed the connection meanwhile (a close frame from
            # the client, a keepalive timeout): nothing may follow its close.
            self._metrics.outbox_drop("closed", len(out))
            return
        try:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        except Exception:  # the transport is already broken: treat as closed
            self._metrics.outbox_drop("closed", len(out))
            self.abort()

    # -- inbound ------------------------------------------------------------------------

    def receive(self, tell: Callable[[Any, Any], None], inbound_high: int) -> None:
        """Tell the admitted actor every text message from now on (``frame``).

        Past ``inbound_high`` messages not yet handled, the socket is not read
        (TCP pushes back on the client) until half of them are handled.
        """
        self._tell = tell
        self._inbound_high = inbound_high

    def frame(self, frame: Frame) -> None:
        """One data frame from the client (``FrontDoorConnection.take_frames``).

        Text messages (one frame, or fragments joined) go to the actor as
        ``ClientText``; invalid UTF-8 closes with 1007, a binary frame with
        1003. websockets has checked the framing and the size already.
        """
        if self._closing or self._tell is None:
            return
        opcode = frame.opcode
        if opcode is Opcode.TEXT:
            if not frame.fin:
                self._fragments = [bytes(frame.data)]
                return
            data = bytes(frame.data)  # the same object when it is bytes already
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(bytes(frame.data))
            if not frame.fin:
                return
            data, self._fragments = b"".join(self._fragments), None
        else:
            self.close(CloseCode.UNSUPPORTED_DATA, "binary frames are not supported")
            return
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.close(CloseCode.INVALID_DATA, "invalid UTF-8")
            return
        message = ClientText(text, perf_counter())
        if self.inflight < self._inbound_high and not self._backlog:
            self.inflight += 1
            self._tell(self.actor, message)
            return
        # One read may hold many frames: those past the bound wait here, and
        # the socket is not read until the actor caught up.
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(message)
        if not self.reading_paused:
            self.reading_paused = True
            self._transport.pause_reading()

    def handled(self) -> None:
        """One client message was handled; read the socket again once half the bound is left."""
        self.inflight -= 1
        backlog = self._backlog
        if backlog:
            tell, high = self._tell, self._inbound_high
            assert tell is not None
            while backlog and self.inflight < high:
                self.inflight += 1
                tell(self.actor, backlog.popleft())
        if self.reading_paused and not backlog and self.inflight <= self._inbound_high // 2:
            self._resume_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            with contextlib.suppress(Exception):  # closed meanwhile
                self._transport.resume_reading()

    def close(self, code: int, reason: str = "") -> None:
        """Start closing with ``code``; abort if the client does not answer."""
        if self._closing:
            return
        self.flush()  # what was pushed before the close goes before it
        self._closing = True
        self._resume_reading()  # the client's close frame must be read
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
        self._out = []
        self._out_bytes = 0
        self.reading_paused = False
        with contextlib.suppress(Exception):
            self._transport.abort()
