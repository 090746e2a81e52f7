"""A chat bot for rtcs: it joins a room and answers what is said there.

    export TOKEN=$(python -m rtcs token bot --roles demo --ttl 86400)
    python examples/bot.py --url ws://127.0.0.1:8765/ws --room demo.lobby

Say "hello", "/time" or "/echo some text" in the room (on /demo: #lobby).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from datetime import UTC, datetime
from typing import Any

from rtcs.client import Client


def answer(text: str, sender: str) -> str | None:
    """What the bot says to ``text`` from ``sender``; None: nothing."""
    command, _, rest = text.strip().partition(" ")
    command = command.lower().rstrip("!,.")
    if command in ("hello", "hi", "hey"):
        return f"Hello, {sender}! I am a bot. Try /time or /echo <text>."
    if command == "/time":
        return datetime.now(UTC).strftime("It is %H:%M:%S UTC.")
    if command == "/echo" and rest.strip():
        return rest.strip()
    return None


def text_of(data: Any) -> str | None:
    """The text of a chat message: the demo page sends ``{"text": ...}``."""
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return str(data["text"])
    return data if isinstance(data, str) else None


async def run(url: str, token: str, room: str) -> None:
    """Answer in ``room`` until cancelled; the client reconnects and resumes by itself."""
    async with Client(url, token=token) as client:
        await client.join(room)
        async for msg in client.messages():  # every message once, in order
            if msg.room != room or msg.sender is None or msg.sender == client.user:
                continue  # not this room's chat, or the bot's own message
            text = text_of(msg.data)
            reply = answer(text, msg.sender) if text is not None else None
            if reply is not None:
                await client.broadcast({"text": reply}, room=room)


def main() -> None:
    parser = argparse.ArgumentParser(description="A chat bot for rtcs (token: $TOKEN).")
    parser.add_argument("--url", default="ws://127.0.0.1:8765/ws")
    parser.add_argument("--room", default="demo.lobby")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C stops it
        asyncio.run(run(args.url, os.environ["TOKEN"], args.room))


if __name__ == "__main__":
    main()
