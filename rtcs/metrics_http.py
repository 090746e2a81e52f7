"""A worker's own metrics port: ``GET /metrics`` and nothing else.

With several workers on one port (``SO_REUSEPORT``), ``/metrics`` on that
port answers from whichever worker the kernel picks. With
``metrics.worker_port`` set, worker I also listens on ``worker_port + I``
so Prometheus can scrape each worker (docs/operations.md, "Workers").

A deliberately tiny HTTP/1.1 responder on ``asyncio.start_server`` (the
gateway is the only module that imports websockets): it reads one request
head (at most :data:`MAX_HEAD` bytes within :data:`READ_TIMEOUT` seconds),
answers and closes the connection. ``GET`` or ``HEAD`` on the metrics path:
200 with the Prometheus text; another path: 404; another method: 405; an
unreadable request: 400.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from http import HTTPStatus

__all__ = ["MAX_HEAD", "READ_TIMEOUT", "Render", "start_metrics_listener"]

MAX_HEAD = 8192  # bytes of request line and headers
READ_TIMEOUT = 5.0  # seconds to receive the request head

#: Returns the metrics body and its content type (``rtcs.metrics.Metrics.render``).
Render = Callable[[], tuple[bytes, str]]


async def start_metrics_listener(
    host: str, port: int, render: Render, path: str = "/metrics"
) -> asyncio.Server:
    """Listen on ``host:port`` and answer ``GET path`` with ``render()``.

    Close the returned server (``close()``, then ``await wait_closed()``) to stop.

    Raises:
        OSError: the address cannot be bound.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body, content_type, head_only = await _answer(reader, render, path)
            head = (
                f"HTTP/1.1 {status.value} {status.phrase}\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode("ascii")
            writer.write(head if head_only else head + body)
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
        except (OSError, TimeoutError):
            pass  # the scraper went away or stalled: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), READ_TIMEOUT)

    return await asyncio.start_server(handle, host, port, limit=MAX_HEAD)


async def _answer(
    reader: asyncio.StreamReader, render: Render, path: str
) -> tuple[HTTPStatus, bytes, str, bool]:
    text = "text/plain; charset=utf-8"
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        return HTTPStatus.BAD_REQUEST, b"bad request\n", text, False
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return HTTPStatus.BAD_REQUEST, b"bad request\n", text, False
    method, target = parts[0], parts[1].partition(b"?")[0]
    if target != path.encode("ascii"):
        return HTTPStatus.NOT_FOUND, b"not found\n", text, method == b"HEAD"
    if method not in (b"GET", b"HEAD"):
        return HTTPStatus.METHOD_NOT_ALLOWED, b"method not allowed\n", text, False
    body, content_type = render()
    return HTTPStatus.OK, body, content_type, method == b"HEAD"
