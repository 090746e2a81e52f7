"""One raw HTTP/1.1 request on a node's port, for the admin and service endpoints.

Raw on purpose: the tests control every header (or its absence), and read
the answer as a client would, without a client library's own retries.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, NamedTuple

TIMEOUT = 5.0


class Response(NamedTuple):
    """The status, the headers (lower-case names) and the decoded JSON body
    (``None`` when the body is empty)."""

    status: int
    headers: dict[str, str]
    body: Any


async def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = TIMEOUT,
) -> Response:
    """Send one request to 127.0.0.1:``port`` and read one answer.

    A ``Content-Length`` is sent when ``body`` is given; the answer's body is
    read by its ``Content-Length``, or to the end of the stream without one.

    Raises:
        TimeoutError: no complete answer within ``timeout`` seconds.
        json.JSONDecodeError: the answer's body is not JSON.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        await writer.drain()
        raw_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status_line, *fields = raw_head.decode().strip().split("\r\n")
        answer = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        if "content-length" in answer:
            read = reader.readexactly(int(answer["content-length"]))
        else:
            read = reader.read()
        payload = await asyncio.wait_for(read, timeout)
    finally:
        writer.close()
    return Response(int(status_line.split()[1]), answer, json.loads(payload) if payload else None)
