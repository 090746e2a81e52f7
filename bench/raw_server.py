"""The floor: a minimal raw ``websockets`` server speaking the benchmark subset.

It implements only what the load generator sends (see ``bench/README`` in
``docs/performance.md``): a minimal ``welcome``, ``subscribe``, ``publish``
(fan-out with :func:`websockets.asyncio.server.broadcast`, then ``ack``; with no
subscriber this is the "echo" request/reply mode), ``join`` and ``broadcast`` to
a room (the sender is a member and receives its own message, as in rtcs), and
``ping``. The token in the query string is ignored.

Run: ``python -m bench.raw_server --port PORT`` (127.0.0.1 only). It prints
``LISTENING <port>`` once it accepts connections and exits on SIGTERM or when
its parent process goes away.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
from collections.abc import Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve

WELCOME_SERVER = "raw-websockets"


class Hub:
    """Topic and room membership for the raw server; one per process."""

    def __init__(self) -> None:
        self.topics: dict[str, set[ServerConnection]] = {}
        self.rooms: dict[str, set[ServerConnection]] = {}
        self.next_id = 0

    def fan_out(self, members: set[ServerConnection] | None, frame: dict[str, Any]) -> None:
        """Encode ``frame`` once and write it to every member without waiting."""
        if members:
            broadcast(members, json.dumps(frame, separators=(",", ":")))


async def handle(ws: ServerConnection, hub: Hub) -> None:
    """Serve one connection until it closes, then forget its memberships."""
    hub.next_id += 1
    n = hub.next_id
    topics: set[str] = set()
    rooms: set[str] = set()
    await ws.send(
        json.dumps(
            {
                "type": "welcome",
                "connection_id": f"c-{n}",
                "session_id": f"s-{n}",
                "user": "bench",
                "roles": [],
                "heartbeat": 25,
                "resumed": False,
                "server": WELCOME_SERVER,
            }
        )
    )
    try:
        async for raw in ws:
            try:
                frame = json.loads(raw)
                kind = frame["type"]
            except (ValueError, KeyError, TypeError):
                await ws.send('{"type":"error","code":"bad_request","message":"malformed"}')
                continue
            fid = frame.get("id")
            if kind == "publish":
                topic = frame["topic"]
                hub.fan_out(
                    hub.topics.get(topic),
                    {"type": "message", "topic": topic, "data": frame["data"]},
                )
                await ws.send(json.dumps({"type": "ack", "id": fid}))
            elif kind == "broadcast":
                room = frame["room"]
                hub.fan_out(
                    hub.rooms.get(room), {"type": "message", "room": room, "data": frame["data"]}
                )
                await ws.send(json.dumps({"type": "ack", "id": fid}))
            elif kind == "subscribe":
                topic = frame["topic"]
                topics.add(topic)
                hub.topics.setdefault(topic, set()).add(ws)
                await ws.send(json.dumps({"type": "subscribed", "id": fid, "topic": topic}))
            elif kind == "join":
                room = frame["room"]
                rooms.add(room)
                hub.rooms.setdefault(room, set()).add(ws)
                await ws.send(
                    json.dumps({"type": "joined", "id": fid, "room": room, "members": []})
                )
            elif kind == "ping":
                await ws.send(json.dumps({"type": "pong", "id": fid}))
            else:
                await ws.send(
                    json.dumps(
                        {"type": "error", "id": fid, "code": "bad_request", "message": "unknown"}
                    )
                )
    finally:
        for topic in topics:
            hub.topics.get(topic, set()).discard(ws)
        for room in rooms:
            hub.rooms.get(room, set()).discard(ws)


async def serve_until_stopped(port: int) -> None:
    """Listen on 127.0.0.1:``port`` until SIGTERM/SIGINT or the parent exits."""
    hub = Hub()
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop)
    parent = os.getppid()

    async def handler(ws: ServerConnection) -> None:
        await handle(ws, hub)

    # Compression off: every target is measured on plain frames.
    async with serve(handler, "127.0.0.1", port, compression=None, max_size=2**16) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"LISTENING {bound}", flush=True)
        while not stop.done():
            # Exit with the runner even if it was killed without cleaning up.
            await asyncio.wait([stop], timeout=1.0)
            if os.getppid() != parent:
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``--port`` and serve; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m bench.raw_server")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve_until_stopped(args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
