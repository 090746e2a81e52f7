"""The test-only echo endpoint, for the Autobahn conformance suite.

When ``server.test_echo_path`` is set, a WebSocket upgrade to exactly that
path skips auth, origin and connection limits (not the message-size limit)
and is handed to :func:`serve_echo` instead of a connection actor. It lets
the Autobahn fuzzing client drive rtcs's real handshake and frame path
(websockets with the settings rtcs passes to ``serve``) with the arbitrary
text and binary messages the suite sends, which the rtcs protocol would
refuse. Never enable it in production (docs/conformance.md).
"""

from __future__ import annotations

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed


async def serve_echo(ws: ServerConnection) -> None:
    """Send every message back as it came, text as text and binary as binary.

    Returns when the connection is closed, by either side, cleanly or not;
    websockets has then completed or abandoned the closing handshake itself
    (RFC 6455 section 7). Protocol errors by the peer (bad UTF-8, bad
    framing, oversized messages) are answered by websockets with the close
    code the RFC names; this function only sees whole, valid messages.

    Raises:
        Nothing on a close: :class:`~websockets.exceptions.ConnectionClosed`
        from receiving or sending ends the loop.
    """
    try:
        async for message in ws:
            # str is sent as a text frame, bytes as a binary frame.
            await ws.send(message)
    except ConnectionClosed:
        return
