"""A lean WebSocket client for the load generator.

Why not the ``websockets`` client: a benchmark client must be cheaper than the
server it drives, or the numbers measure the generator. This client is an
``asyncio.Protocol`` that does the handshake, masks outgoing text frames with
websockets' C ``apply_mask``, parses unmasked server frames in place, answers
pings, and hands each text payload (``bytes``) to a callback. It never offers
compression, so every target serves plain frames. It does no UTF-8 validation
and no fragmentation on send: it is for benchmarks against 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import struct
from collections.abc import Callable

from websockets.speedups import apply_mask

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = 1 << 20

FrameHandler = Callable[["BenchConnection", bytes], None]


class HandshakeError(ConnectionError):
    """The server refused the upgrade (non-101 status) or sent garbage."""


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """Return one final, masked client frame carrying ``payload``."""
    # A pseudo-random key (no syscall per frame): the key only has to defeat
    # proxy cache poisoning, which does not exist on 127.0.0.1.
    mask = random.getrandbits(32).to_bytes(4, "big")
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + apply_mask(payload, mask)


class BenchConnection(asyncio.Protocol):
    """One client connection; ``on_text`` gets every text message's payload.

    Obligations: create through :func:`connect`; call :meth:`send` only after
    the handshake completed; :meth:`abort` releases the socket immediately
    (no TIME_WAIT on the client side).
    """

    def __init__(self, request: bytes, on_text: FrameHandler) -> None:
        self._request = request
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.upgraded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._open = False
        self.state: object = None  # free slot for the workload's per-connection state

    # asyncio.Protocol ---------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        if not self.upgraded.done():
            self.upgraded.set_exception(exc or ConnectionResetError("closed before upgrade"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        if not self._open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > 16384:
                    self._fail(HandshakeError("oversized handshake response"))
                return
            status = bytes(buf[: buf.find(b"\r\n")])
            del buf[: end + 4]
            if not status.startswith(b"HTTP/1.1 101"):
                self._fail(HandshakeError(status.decode("latin-1")))
                return
            self._open = True
            self.upgraded.set_result(None)
        self._parse()

    # frames -------------------------------------------------------------------
    def _parse(self) -> None:
        buf = self._buf
        pos = 0
        size = len(buf)
        while size - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            n = b1 & 0x7F
            hdr = 2
            if n == 126:
                if size - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                hdr = 4
            elif n == 127:
                if size - pos < 10:
                    break
                n = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hdr = 10
            if b1 & 0x80 or n > MAX_FRAME:
                self._fail(ConnectionError("masked or oversized server frame"))
                return
            if size - pos < hdr + n:
                break
            payload = bytes(buf[pos + hdr : pos + hdr + n])
            pos += hdr + n
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        if pos:
            del buf[:pos]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (OP_TEXT, OP_BINARY):
            if fin:
                self.on_text(self, payload)
            else:
                self._fragments = [payload]
        elif opcode == OP_CONT:
            self._fragments.append(payload)
            if fin:
                whole = b"".join(self._fragments)
                self._fragments = []
                self.on_text(self, whole)
        elif opcode == OP_PING:
            self._write(encode_frame(payload, OP_PONG))
        elif opcode == OP_CLOSE:
            self._write(encode_frame(payload[:2], OP_CLOSE))
            if self.transport is not None:
                self.transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, exc: Exception) -> None:
        if not self.upgraded.done():
            self.upgraded.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    # API ----------------------------------------------------------------------
    def send(self, text: bytes) -> None:
        """Queue one text message (UTF-8 bytes); never blocks."""
        self._write(encode_frame(text))

    def send_many(self, texts: list[bytes]) -> None:
        """Queue several text messages back to back in one ``transport.write``."""
        self._write(b"".join([encode_frame(t) for t in texts]))

    @property
    def is_open(self) -> bool:
        """True between the 101 response and the loss of the socket."""
        return self._open

    def abort(self) -> None:
        """Drop the socket now (RST), without a closing handshake."""
        self._open = False
        if self.transport is not None:
            self.transport.abort()


async def connect(
    host: str,
    port: int,
    path: str,
    on_text: FrameHandler,
    *,
    local_addr: str | None = None,
    timeout: float = 10.0,
) -> BenchConnection:
    """Open a WebSocket to ``ws://host:port{path}`` and wait for the 101.

    ``path`` includes the query string. Text messages that arrive right after
    the upgrade (the welcome) reach ``on_text`` in order.

    Raises:
        HandshakeError: the server answered something other than 101.
        OSError: the TCP connection failed.
        TimeoutError: no upgrade within ``timeout`` seconds.
    """
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Origin: http://{host}:{port}\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        _, proto = await loop.create_connection(
            lambda: BenchConnection(request, on_text),
            host,
            port,
            local_addr=(local_addr, 0) if local_addr else None,
        )
        try:
            await proto.upgraded
        except BaseException:
            proto.abort()
            raise
    return proto
